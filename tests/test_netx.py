"""Backend "netx" and `export --format netx` (hw_targets/loihi2/netx/format.py, backend.py, export.py).

Proof by the real reader (C3, C6): our netx file, loaded by lava-dl's own `netx.hdf5.Network` and run in Lava
(Loihi2SimCfg, fixed_pt, Lava's stock LIFReset built by netx), gives per-layer spike counts and readout potentials
equal to the reference simulator of the same IntNet, on every sample: the digits net in mode "zero" and random
zero-mode chains (dense and conv). The pre-charge netx cannot carry is folded into the bias for the export's T
(`netx_runnable`), and the reference simulates that net. What netx cannot express or run exactly is refused with
one line naming the node.
The exported file is byte-deterministic; the bundle's run_netx.py (Lava + lava-dl only) classifies like the
reference.
"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from na_deploy.cli.main import cli
from na_deploy.convert import to_floatnet
from na_deploy.errors import ExportNotSupported, FitError
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.hw_targets.loihi2.netx.format import netx_layers, netx_runnable, netx_rules, write_netx
from na_deploy.hw_targets.loihi2.reference.fast import reference_simulate
from na_deploy.io import load_net, save_net
from na_deploy.ir import ZERO, Dense, IntNet, Synapse, replace_nodes
from na_deploy.testing import random_inputs, random_intnet
from helpers import ridge_digits_cnn  # tests/helpers.py
from na_deploy.verify.bit_exact import first_difference

nxb = pytest.importorskip("na_deploy.hw_targets.loihi2.netx.backend")

pytestmark = pytest.mark.lava

T = 8
BACKEND = TARGET.backend("netx")


@pytest.fixture(scope="module")
def digits():
    """The digits CNN in mode "zero" through the Loihi 2 fixed point (pools folded), and test images."""
    model, d = ridge_digits_cnn(0, grid=20)
    fnet = to_floatnet(model, d.input_shape, d.normalization.channel_scale, name="digits_cnn", neuron="zero")
    return TARGET.to_fixed_point(fnet, max_timesteps=T), d


def _zero(net: IntNet) -> IntNet:
    return replace_nodes(net, [replace(n, neuron=ZERO) for n in net.nodes])


def _assert_equal(net: IntNet, x: np.ndarray, T: int, hw) -> None:
    ref = reference_simulate(net, x, T)
    assert first_difference(ref, hw) is None, first_difference(ref, hw)
    assert set(hw.spike_counts) == {n.name for n in net.nodes}
    assert np.array_equal(ref.readout, hw.readout)


def test_netx_runs_the_digits_net_equal_to_the_reference_every_layer_C6(digits):
    inet, d = digits
    assert any(n.precharge for n in inet.nodes)
    ran = netx_runnable(inet, T)
    assert all(n.precharge == 0 for n in ran.nodes) and "pre-charge" in ran.meta["netx"]["changed"]
    assert ran.meta["netx"]["precharge_was"] == {n.name: n.precharge for n in inet.nodes}
    for a, b in zip(inet.nodes, ran.nodes):  # b' = b + round_half_up(pc / T), bias_exp 0
        assert np.array_equal(b.bias, a.bias + int(np.floor(a.precharge / T + 0.5))) and b.bias_exp == 0
    x = d.x_test[:24]
    hw = BACKEND.run(ran, x, T)
    _assert_equal(ran, x, T, hw)
    assert hw.extra["lif_models"] == ["LIFReset"]  # netx built Lava's stock LIF with its own per-sample reset
    assert hw.spike_counts["features.2"].sum() > 0 and len(set(hw.predictions.tolist())) > 3


@pytest.mark.parametrize("topology", ["dense_chain", "conv_chain"])
def test_netx_equals_the_reference_on_random_zero_mode_chains_C3_C6(topology):
    """Random chains (ties v == th, negative biases, silent and saturated neurons), 3 samples in one runtime,
    T = 2..4; nets netx cannot run exactly (reader-changed dense weights, 13-bit bias) are refused, and most run."""
    rng = np.random.default_rng(7 if topology == "dense_chain" else 8)
    ran = refused = 0
    while ran < 4:
        T_ = int(rng.integers(2, 5))
        net = netx_runnable(_zero(random_intnet(rng, topology, size=3)), T_)
        try:
            nxb.check_netx(net, T_, TARGET.limits)
        except FitError:
            refused += 1
            assert refused < 20, "the netx rules refuse almost every random chain"
            continue
        if TARGET.check_fit(net, T_):
            continue
        x = random_inputs(rng, net, 3)
        _assert_equal(net, x, T_, BACKEND.run(net, x, T_))
        ran += 1


def test_record_steps_gives_the_reference_per_step(digits):
    inet, d = digits
    ran, x = netx_runnable(inet, T), d.x_test[:2]
    hw = BACKEND.run(ran, x, T, record_steps=True)
    _assert_equal(ran, x, T, hw)
    assert np.array_equal(hw.step_readout[-1], hw.readout[-1])
    assert all(np.array_equal(v.sum(axis=0), hw.spike_counts[k][-1]) for k, v in hw.step_spikes.items())


# ------------------------------------------------------------------------------------------- refusals
def test_residual_relay_pool_and_mode_are_refused_naming_the_node():
    rng = np.random.default_rng(0)
    res = _zero(random_intnet(rng, "residual_identity", size=3))
    with pytest.raises(ExportNotSupported, match=r"node block\.out: it adds 2 inputs .*no residual add"):
        netx_layers(res)
    pool = _zero(random_intnet(rng, "conv_pool_dense", size=4))
    with pytest.raises(ExportNotSupported, match=r"node pool: op avgpool2d from conv0"):
        netx_layers(pool)
    sub = random_intnet(rng, "conv_chain", size=3)
    with pytest.raises(ExportNotSupported, match=r"node conv0: neuron model 'subtract'.*--neuron zero"):
        netx_layers(sub)


def test_netx_rules_name_register_and_node(digits):
    inet, _ = digits
    ran = netx_runnable(inet, T)
    assert netx_rules(ran, T) == []
    with_pc = netx_rules(inet, T)
    assert {v.node for v in with_pc} == {n.name for n in inet.nodes if n.precharge}
    long = netx_rules(ran, 64)  # the readout LIF could pass vth << 6 within 64 steps
    assert long and long[0].node == "fc" and "never fires" in long[0].quantity
    big = replace_nodes(ran, [replace(ran.nodes[0], bias_mant=ran.nodes[0].bias_mant + 5000, bias_exp=0),
                              *ran.nodes[1:]])
    assert any(v.node == ran.nodes[0].name and "bias_mant" in v.quantity for v in netx_rules(big, T))
    with pytest.raises(FitError, match="pre-charge"):
        BACKEND.run(inet, np.zeros((1, *inet.input.shape), dtype=np.int64), T)


def test_dense_weights_the_reader_would_change_are_refused(digits):
    inet, _ = digits
    ran = netx_runnable(inet, T)
    r = ran.readout
    w = -np.abs(r.inputs[0].op.weight) - 2  # all inhibitory: netx scales to -256, Lava clips to -255
    w[0, 0] = -256
    kept, ok = nxb.reader_dense_weights(w)
    assert not ok and not np.array_equal(kept, w)
    assert nxb.reader_dense_weights(r.inputs[0].op.weight)[1]
    bad = replace_nodes(ran, ran.nodes, readout=replace(r, inputs=[Synapse(r.inputs[0].source, Dense(w))]))
    with pytest.raises(FitError, match=r"node fc: netx's optimize_weight_bits"):
        nxb.check_netx(bad, T, TARGET.limits)


# ---------------------------------------------------------------------------------------- file and CLI
def test_netx_file_is_byte_deterministic_and_netx_builds_it(digits, tmp_path):
    ran = netx_runnable(digits[0], T)
    a, b = write_netx(ran, tmp_path / "a.h5", T), write_netx(ran, tmp_path / "b.h5", T)
    assert a.read_bytes() == b.read_bytes()
    with h5py.File(a, "r") as f:
        kinds = [f["layer"][str(i)]["type"][0].decode() for i in range(len(f["layer"]))]
        assert kinds == ["input", "conv", "conv", "conv", "flatten", "dense"]
        assert int(f["layer/5/neuron/vThMant"][()]) == (1 << 17) - 1
    graph = BACKEND.build(ran, T, netx_file=str(a))
    want = [(n.shape[2], n.shape[1], n.shape[0]) if len(n.shape) == 3 else n.shape for n in ran.all_nodes()]
    assert [tuple(b.out.shape) for b in graph.network.layers] == want and len(want) == 4


def test_cli_export_netx_then_verify_backend_netx(digits, tmp_path):
    inet, d = digits
    save_net(inet, tmp_path / "z.nad.h5")
    np.savez(tmp_path / "d.npz", x_train=d.x_train, y_train=d.y_train, x_test=d.x_test, y_test=d.y_test)
    out = tmp_path / "nx"
    r = CliRunner().invoke(cli, ["export", str(tmp_path / "z.nad.h5"), "--format", "netx", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "pre-charge folded into the bias" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "manifest.json", "net.nad.h5", "net.netx.h5",
                                                     "run_netx.py"]
    assert all(n.precharge == 0 for n in load_net(out / "net.nad.h5").nodes)
    r = CliRunner().invoke(cli, ["verify", str(out / "net.nad.h5"), "--backend", "netx", "--samples", "6",
                                 "--data", str(tmp_path / "d.npz"), "--skip-fidelity", "--quiet"])
    assert r.exit_code == 0 and "BIT-EXACT" in r.output, r.output
    r = CliRunner().invoke(cli, ["verify", str(tmp_path / "z.nad.h5"), "--backend", "netx", "--samples", "2",
                                 "--data", str(tmp_path / "d.npz"), "--skip-fidelity", "--quiet"])
    assert r.exit_code == 2 and "pre-charge" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    ref = reference_simulate(load_net(out / "net.nad.h5"), d.x_test[:3], T)
    run = subprocess.run([sys.executable, str(out / "run_netx.py"), "--inputs", str(tmp_path / "d.npz"),
                          "--samples", "3"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"predictions: {ref.predictions.tolist()}" in run.stdout


def test_cli_export_netx_refuses_a_residual_net_in_one_line(tmp_path):
    net = _zero(random_intnet(np.random.default_rng(0), "residual_identity", size=3))
    save_net(net, tmp_path / "r.nad.h5")
    r = CliRunner().invoke(cli, ["export", str(tmp_path / "r.nad.h5"), "--format", "netx", "--out",
                                 str(tmp_path / "out")])
    assert r.exit_code == 2 and "node block.out" in r.output and "no residual add" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
