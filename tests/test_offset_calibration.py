"""Two-stage offset calibration (COS-style, na_deploy.ir.offset_calibration): stored in the IR, carried through fixed
point and HDF5, the same in the fast and the slow reference (C6) and in the float SNN, the fit bound covering
pc +- th, T < rho refused everywhere with one line, and the CLI (`convert --offset-steps`, `simulate`)."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from na_deploy.cli.main import cli
from na_deploy.training.checkpoint import Checkpoint, cpu_state_dict, save_checkpoint
from na_deploy.convert.neuron_modes import convert_inference_mode, mode_of
from na_deploy.errors import ConversionError, IRError, SimulationError
from na_deploy.simulate.float_snn import simulate_float
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.hw_targets.loihi2.fit import check_fit, membrane_interval, node_bound
from na_deploy.hw_targets.loihi2.reference.fast import reference_simulate, reference_simulate_multi
from na_deploy.hw_targets.loihi2.reference.slow import slow_reference_simulate
from na_deploy.io import load_net, save_net
from na_deploy.ir import IntNet
from na_deploy.ir.neuron import SUBTRACT
from na_deploy.ir.offset_calibration import offset_start, steps_per_inference, with_offset_steps
from na_deploy.testing import random_inputs
from helpers import ridge_digits_cnn  # tests/helpers.py

from test_neuron_modes_datta_qffs import float_twin, pow2_net

MSG = r"offset calibration \(3 steps\) is longer than the run \(2 steps\)"


def test_offset_start_is_one_threshold_per_offset_spike():
    v = np.array([-9, -5, -1, 0, 3, 4, 7, 9])
    assert offset_start(v, 2, 4).tolist() == [-2, -2, -2, 2, 2, 6, 6, 6]
    assert offset_start(torch.tensor(v, dtype=torch.float64), 2.0, 4.0).tolist() == [-2, -2, -2, 2, 2, 6, 6, 6]


@pytest.mark.parametrize("topology,seed,rho", [("conv_pool_dense", 7, 2), ("residual_identity", 9, 3),
                                               ("dense_chain", 9, 3), ("residual_conv", 4, 2), ("conv_chain", 0, 1)])
def test_fast_slow_and_float_snn_agree_C6(topology, seed, rho):
    """Stage 1 (rho steps from pc) sets each neuron's start pc + o*th; stage 2's counts and readout are the
    result; events = stage 1's spikes + stage 2's. The same in the slow (pipelined, literal) and the fast
    reference on both engines, and in the float SNN of the exact float twin."""
    base = pow2_net(seed, topology)  # seeds where the calibration changes counts
    net = with_offset_steps(base, rho)
    x = random_inputs(np.random.default_rng(4), net, 6)
    Ts = [rho, rho + 2, 7]
    fast = reference_simulate_multi(net, x, Ts, device="cpu")
    first = reference_simulate(base, x, rho, device="cpu")  # stage 1 is a plain rho-step run
    fr = simulate_float(float_twin(net), x, Ts, device="cpu", dtype=torch.float64, count_timesteps=Ts,
                        progress=False)
    moved = 0
    for t in Ts:
        slow = slow_reference_simulate(net, x, t)
        torch_eng = reference_simulate(net, x, t, device="cpu", engine="torch")
        plain = reference_simulate(base, x, t, device="cpu")
        for k in slow.spike_counts:
            for tr in (fast[t], torch_eng):
                assert np.array_equal(tr.spike_counts[k], slow.spike_counts[k]), (t, k)
                assert np.array_equal(tr.event_counts[k], slow.event_counts[k]), (t, k)
            assert np.array_equal(slow.event_counts[k], slow.spike_counts[k] + first.spike_counts[k])
            assert np.array_equal(fr.counts[t][k], slow.spike_counts[k])
            assert fr.events[t][k] == slow.event_counts[k].sum()
            moved += int((slow.spike_counts[k] != plain.spike_counts[k]).sum())
        assert np.array_equal(fast[t].readout, slow.readout) and np.array_equal(fr.potentials[t], slow.readout)
    assert moved > 0 or topology == "conv_chain"  # the calibration changed some counts
    assert steps_per_inference(net, 7) == steps_per_inference(base, 7) + rho  # stage 1 inside each window


def test_T_below_rho_is_refused_with_one_line():
    net = with_offset_steps(pow2_net(1, "dense_chain"), 3)
    x = random_inputs(np.random.default_rng(0), net, 2)
    for run in (lambda: reference_simulate(net, x, 2), lambda: reference_simulate_multi(net, x, [2, 4]),
                lambda: slow_reference_simulate(net, x, 2),
                lambda: simulate_float(float_twin(net), x, [2, 4], progress=False)):
        with pytest.raises(SimulationError, match=MSG):
            run()


def test_stored_in_the_ir_carried_through_hdf5_and_fixed_point(tmp_path):
    base = pow2_net(2, "conv_pool_dense")
    net = convert_inference_mode(base, "subtract", offset_steps=4)
    assert net.meta["offset_steps"] == 4 and "offset_steps" not in base.meta
    save_net(net, tmp_path / "n.nad.h5")
    assert load_net(tmp_path / "n.nad.h5").meta["offset_steps"] == 4
    assert "offset_steps" not in with_offset_steps(net, 0).meta
    assert mode_of(net.meta) == {"offset_steps": 4}
    fnet = float_twin(net)
    inet = TARGET.to_fixed_point(fnet, max_timesteps=16)
    assert isinstance(inet, IntNet) and inet.meta["offset_steps"] == 4 and check_fit(inet) == []
    for bad in (-1, True, 1.5):
        with pytest.raises((IRError, ConversionError), match="offset_steps"):
            with_offset_steps(base, bad)
    with pytest.raises(IRError, match="offset calibration needs neuron mode subtract"):
        IntNet(base.input, [*convert_inference_mode(base, "negative").nodes], base.readout, {"offset_steps": 2})
    with pytest.raises(ConversionError, match="offset calibration needs neuron mode subtract"):
        with_offset_steps(convert_inference_mode(base, "accumulate"), 2)


def test_the_fit_bound_covers_starts_from_pc_minus_th_to_pc_plus_th():
    net = with_offset_steps(pow2_net(3, "dense_chain"), 2)
    n = net.nodes[-1]
    plain, wide = node_bound(n, 8), node_bound(n, 8, offset=True)
    assert wide.membrane[0] < plain.membrane[0] and wide.membrane[1] > plain.membrane[1]
    rng = np.random.default_rng(0)
    for _ in range(300):
        th, T = int(rng.integers(1, 40)), int(rng.integers(1, 12))
        pc = th // 2
        i_lo, i_hi = sorted(rng.integers(-3 * th, 3 * th, size=2).tolist())
        lo = membrane_interval(np.array([float(i_lo)]), np.array([float(i_hi)]), th, pc - th, T)[0]
        hi = membrane_interval(np.array([float(i_lo)]), np.array([float(i_hi)]), th, pc + th, T)[1]
        for o in (-1, 0, 1):
            v, seen = np.array([pc + o * th]), [pc + o * th]
            for i in rng.integers(i_lo, i_hi + 1, size=T):
                v = v + i
                seen.append(int(v[0]))
                v, _ = SUBTRACT.fire_and_reset(v, th)
                seen.append(int(v[0]))
            assert lo <= min(seen) and max(seen) <= hi


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model, d = ridge_digits_cnn(0, grid=20)
    ck = Checkpoint(kind="qat", model_name="digits_cnn", model_kwargs={"in_channels": 1, "num_classes": 10,
                    "input_size": 8, "widths": (8, 16)}, input_shape=(1, 8, 8), num_classes=10,
                    channel_scale=tuple(d.normalization.channel_scale), state_dict=cpu_state_dict(model),
                    data_fingerprint="x", seed=0, p=2, noise_adaptor=True)
    return save_checkpoint(ck, tmp_path_factory.mktemp("ck") / "q.pt")


def test_cli_convert_offset_steps_and_simulate_refusal(checkpoint, tmp_path):
    out = tmp_path / "n.nad.h5"
    r = CliRunner().invoke(cli, ["convert", str(checkpoint), "--offset-steps", "3", "--quiet", "--out", str(out),
                                 "--max-timesteps", "16"])
    assert r.exit_code == 0, r.output
    assert "offset calibration 3 steps" in r.output
    assert load_net(out).meta["offset_steps"] == 3 and load_net(tmp_path / "n.float.nad.h5").meta["offset_steps"] == 3
    r = CliRunner().invoke(cli, ["simulate", str(out), "--timesteps", "2,4", "--samples", "5", "--quiet"])
    assert r.exit_code == 2 and [ln for ln in r.output.splitlines() if ln.strip()] == [
        "error: offset calibration (3 steps) is longer than the run (2 steps)"], r.output
    r = CliRunner().invoke(cli, ["verify", str(out), "--timesteps", "2", "--samples", "2", "--quiet"])
    assert r.exit_code == 2 and [ln for ln in r.output.splitlines() if ln.strip()] == [
        "error: offset calibration (3 steps) is longer than the run (2 steps)"], r.output
    for args, what in ((["--neuron", "negative", "--offset-steps", "2"], "needs --neuron subtract"),
                       (["--offset-steps", "-1"], "--offset-steps -1: allowed: an integer >= 0")):
        bad = tmp_path / "bad" / "m.nad.h5"
        r = CliRunner().invoke(cli, ["convert", str(checkpoint), *args, "--quiet", "--out", str(bad)])
        assert r.exit_code == 2 and what in r.output and len(r.output.strip().splitlines()) == 1, r.output
        assert not bad.parent.exists() or not list(bad.parent.iterdir())


@pytest.mark.parametrize("mode", ["negative", "accumulate"])
def test_cli_convert_new_neuron_modes(checkpoint, tmp_path, mode):
    out = tmp_path / "n.nad.h5"
    r = CliRunner().invoke(cli, ["convert", str(checkpoint), "--neuron", mode, "--quiet", "--out", str(out),
                                 "--max-timesteps", "16"])
    assert r.exit_code == 0, r.output
    inet = load_net(out)
    assert {n.neuron.name for n in inet.nodes} == {mode} and inet.meta["neuron_mode"] == {"mode": mode}
    assert check_fit(inet) == []


def test_one_offset_steps_check_one_error_type():
    """The IR writes the offset_steps rule once (`na_deploy.ir.timing.check_offset_steps`): the IR's validation
    and the conversion API raise the same OffsetStepsError, an IRError that is also a ConversionError."""
    from na_deploy.errors import OffsetStepsError
    from na_deploy.ir.timing import check_offset_steps

    base = pow2_net(2, "dense_chain")
    neg = convert_inference_mode(base, "negative")
    raised = []
    for make in (lambda: IntNet(base.input, list(neg.nodes), base.readout, {"offset_steps": 2}),
                 lambda: with_offset_steps(neg, 2), lambda: with_offset_steps(base, -1),
                 lambda: IntNet(base.input, list(base.nodes), base.readout, {"offset_steps": 1.5})):
        with pytest.raises(OffsetStepsError) as err:
            make()
        raised.append(err.value)
    assert all(isinstance(e, IRError) and isinstance(e, ConversionError) for e in raised)
    assert check_offset_steps(3, nodes=base.nodes) == 3 and check_offset_steps(0, nodes=neg.nodes) == 0
