"""Backend "lava-lif" (hw_targets/loihi2/lava/lif_backend.py): mode "zero" IntNets on Lava's stock LIF.

Exactness (C3, C6): per-node spike counts and readout potentials equal `reference/slow.py` on every node and
sample, for random zero-mode IntNets (NA_DEPLOY_LAVA_LIF_NETS, default 100, ~1.5 min; the full 200, ~3 min,
run in benchmarks/timing/bench_lava_lif.py; nets failing the fit check are skipped) and for hand-made nets at the
registers' edges (a_in, bias_mant/bias_exp with bias_exp 7, negative pre-charge, v bound at saturation).
The stock model PyLifModelBitAcc is the one that ran.
The re-arming (v = 64 pc at each window start) is needed: without it a multi-sample run differs.
The fit check refuses each stock-LIF register by name; the backend refuses subtract-mode nodes by name.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
from dataclasses import replace

import numpy as np
import pytest

from na_deploy.errors import ExportNotSupported, FitError
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.hw_targets.loihi2.reference.slow import slow_reference_simulate
from na_deploy.ir import ZERO, Dense, InputNode, IntNet, IntNeuronNode, IntReadoutNode, Synapse, replace_nodes
from na_deploy.testing import TOPOLOGIES, random_inputs, random_intnet
from na_deploy.verify.bit_exact import first_difference, reference_step_records, verify

llb = pytest.importorskip("na_deploy.hw_targets.loihi2.lava.lif_backend")

pytestmark = pytest.mark.lava

# 200 nets: ~3 min; see benchmarks/timing/bench_lava_lif.py
NETS = int(os.environ.get("NA_DEPLOY_LAVA_LIF_NETS", "100"))
BACKEND = TARGET.backend("lava-lif")
STOCK_MODEL = ["PyLifModelBitAcc"]


def _zero(net: IntNet) -> IntNet:
    return replace_nodes(net, [replace(n, neuron=ZERO) for n in net.nodes])


def _children() -> set[int]:
    return {p.pid for p in mp.active_children()}


def _assert_equal(net, x, T, hw):
    ref = slow_reference_simulate(net, x, T)
    assert first_difference(ref, hw) is None, first_difference(ref, hw)
    assert np.array_equal(ref.readout, hw.readout)
    assert all(hw.spike_counts[k].dtype == np.int64 and hw.spike_counts[k].shape == v.shape
               for k, v in ref.spike_counts.items())
    return ref


# ------------------------------------------------------------------------------- property test (C3, C6)
@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_stock_lif_equals_slow_reference_on_random_zero_mode_nets_C3_C6(topology):
    """NETS/5 random nets per topology in mode "zero" (ties v == th, negative biases, thresholds 1..4097,
    dense exponents -3..2 on half), 2 samples each in one runtime, T = 2..4: identical counts and readouts."""
    n = math.ceil(NETS / len(TOPOLOGIES))
    seed = 1000 * TOPOLOGIES.index(topology)
    spikes = ran = 0
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        exps = (-3, -1, 0, 2) if i % 2 else (0,)
        net = _zero(random_intnet(rng, topology, size=3, dense_exponents=exps))
        x = random_inputs(rng, net, 2)
        T = int(rng.integers(2, 5))
        if TARGET.check_fit(net, T):
            continue
        hw = BACKEND.run(net, x, T)
        assert hw.extra["lif_models"] == STOCK_MODEL and hw.extra["backend"] == llb.BACKEND_LABEL
        ref = _assert_equal(net, x, T, hw)
        spikes += sum(int(v.sum()) for v in ref.spike_counts.values())
        ran += 1
    assert ran >= 0.8 * n, f"only {ran} of {n} random nets fit"  # the property is tested on most of them
    assert spikes > 0  # the nets are not all silent


# ------------------------------------------------------------------------------ registers at their edge
def _edge_net(sign: int, threshold: int, bias_mant: int, bias_exp: int, precharge: int) -> IntNet:
    """input (2,) -> fc (1,) -> readout (2,): a_in = sign * 128 * pixel0 (<= 32640, int16), one bias."""
    fc = IntNeuronNode(name="fc", shape=(1,), inputs=[Synapse("input", Dense(np.array([[sign * 128, 0]])))],
                       threshold=threshold, bias_mant=np.array([bias_mant]), bias_exp=bias_exp,
                       precharge=precharge, neuron=ZERO)
    r = IntReadoutNode(name="readout", shape=(2,), inputs=[Synapse("fc", Dense(np.array([[2], [-2]])))],
                       bias_mant=np.array([3, -1]))
    return IntNet(InputNode(shape=(2,)), [fc], r)


EDGES = {  # registers at their edges: bias_mant +-4095/-4096 (bias_exp 6), vth 2^17 - 1, v near 131071
    "positive": (_edge_net(+1, 90000, 4095, 0, -5), 4),  # bias 4095 -> bias_mant 4095, bias_exp 6
    "negative": (_edge_net(-1, 131071, -4096, 0, 5), 3),  # bias -4096 -> -4096 << 6; v falls below 0
    "tie": (_edge_net(+1, 65280, 0, 0, 0), 3),  # v == th exactly at step 2: no spike (strict), then > th
}


@pytest.mark.parametrize("case", sorted(EDGES))
def test_registers_at_their_edges_are_exact(case):
    net, T = EDGES[case]
    assert TARGET.check_fit(net, T) == []
    x = np.array([[255, 7], [0, 0], [255, 255], [128, 1]])
    graph = BACKEND.build(net, T, x)
    fc = net.node("fc")
    mant, exp = (np.asarray(getattr(graph.lifs["fc"], k).init, dtype=np.int64) for k in ("bias_mant", "bias_exp"))
    assert np.array_equal(mant << exp, 64 * fc.bias) and mant.max() <= 4095 and mant.min() >= -4096
    assert int(exp.max()) == 6 and int(exp.min()) >= 0  # netx's fixed bias_exp (limits.lif_bias_exp_max)
    assert int(np.asarray(graph.lifs["fc"].vth.init)) == fc.threshold
    assert graph.precharge["fc"] == 64 * fc.precharge
    hw = BACKEND.run(net, x, T)
    ref = _assert_equal(net, x, T, hw)
    assert hw.extra["lif_models"] == STOCK_MODEL
    if case == "tie":  # 2 * 32640 == th: no spike at step 2; 3 * 32640 > th: one spike at step 3
        assert ref.spike_counts["fc"][:, 0].tolist() == [1, 0, 1, 0]


def test_without_re_arming_a_multi_sample_run_differs(monkeypatch):
    """The re-arm (v = 64 pc at each window start) is what makes the stock LIF exact: skip it and later
    samples start from the previous sample's v (the test can fail)."""
    net, T = EDGES["positive"]
    x = np.array([[255, 0]] * 3)
    _assert_equal(net, x, T, BACKEND.run(net, x, T))
    monkeypatch.setattr(llb.LIFGraph, "rearm_segments", lambda self: [])
    hw = BACKEND.run(net, x, T)
    assert first_difference(slow_reference_simulate(net, x, T), hw) is not None


def test_record_steps_and_verify_work_unchanged():
    rng = np.random.default_rng(21)
    net = _zero(random_intnet(rng, "residual_identity", size=3))
    assert TARGET.check_fit(net, 3) == []
    x = random_inputs(rng, net, 2)
    rep = verify(net, x, 3, TARGET, BACKEND)
    assert rep.equal and rep.readout_equal and rep.mismatching_samples == 0
    hw = BACKEND.run(net, x[1:], 3, record_steps=True)
    spikes, readout = reference_step_records(net, x[1:], 3, TARGET)
    assert all(np.array_equal(hw.step_spikes[k], spikes[k]) for k in spikes)
    assert np.array_equal(hw.step_readout, readout)


def test_perturbed_synapse_is_detected_and_located():
    """A Lava Dense weight into the readout changed after build: verify reports the mismatch (C6)."""
    net, T = EDGES["positive"]
    x = np.array([[255, 0], [200, 3]])

    def perturb(graph):
        graph.synapses["readout"][0].weights.init[0, 0] += 2

    rep = verify(net, x, T, TARGET, BACKEND, on_build=perturb)
    assert not rep.equal and not rep.readout_equal and all(layer["equal"] for layer in rep.layers)
    m = rep.first_mismatch
    assert (m["sample"], m["node"], tuple(m["neuron"])) == (0, "readout", (0,))
    assert m["lava"] - m["reference"] == 2  # fc spiked once (window step 3): located there, not at the end
    assert m["step"] == 3 and m["lava_step_in_slot"] == net.depths()["readout"] + 3


def test_input_fed_node_below_the_lif_floor_is_exact():
    """fit.membrane_steps: a zero-mode node fed only by the input has one constant current per window, so its
    v bound covers one step. Here neuron 0 gets -30600 per step: over T = 16 its v (64 x ours) falls far below
    the LIF's saturation -(2^23 - 1) (the T-step bound -489600 > 131071 would refuse the net), the LIF saturates
    while the reference keeps falling, and neither fires: counts and readout stay equal."""
    from na_deploy.hw_targets.loihi2.fit import node_bound, zero_membrane_interval

    w = np.zeros((2, 60), dtype=np.int64)
    w[0, :], w[1, :10] = -2, 2
    fc = IntNeuronNode(name="fc", shape=(2,), inputs=[Synapse("input", Dense(w))], threshold=5000,
                       bias_mant=np.array([0, 1]), precharge=0, neuron=ZERO)
    r = IntReadoutNode(name="readout", shape=(2,), inputs=[Synapse("fc", Dense(np.array([[2, -2], [-2, 2]])))])
    net, T = IntNet(InputNode(shape=(60,)), [fc], r), 16
    lo, _ = zero_membrane_interval(np.array([-30600.0]), np.array([5100.0]), 5000, 0, T)
    assert 64 * lo < -((1 << 23) - 1)  # what the bound over T steps would have demanded
    assert node_bound(fc, T).membrane[0] == -30600 and TARGET.check_fit(net, T) == []
    x = np.stack([np.full(60, 255), np.arange(60) * 4, np.zeros(60, dtype=np.int64)])
    ref = _assert_equal(net, x, T, BACKEND.run(net, x, T))
    assert ref.spike_counts["fc"][0].tolist() == [0, 16] and ref.spike_counts["fc"][2].tolist() == [0, 0]


# ------------------------------------------------------------------------------------- refusals by name
def _fc_net(weight: int, threshold: int, bias_mant: int, bias_exp: int, neuron=ZERO) -> IntNet:
    fc = IntNeuronNode(name="fc", shape=(1,), inputs=[Synapse("input", Dense(np.array([[weight, weight]])))],
                       threshold=threshold, bias_mant=np.array([bias_mant]), bias_exp=bias_exp, neuron=neuron)
    r = IntReadoutNode(name="readout", shape=(1,), inputs=[Synapse("fc", Dense(np.array([[2]])))])
    return IntNet(InputNode(shape=(2,)), [fc], r)


REGISTERS = {  # net breaking exactly one stock-LIF register in mode "zero", the register's name
    "vth": (_fc_net(2, 1 << 17, 0, 0), "vth (stock LIF register)"),
    "bias": (_fc_net(2, 100, 4095, 2), "bias_mant/bias_exp (stock LIF registers)"),  # 64 * 16380 needs 8190 << 7
    "a_in": (_fc_net(68, 1000, 0, 0), "a_in (stock LIF register"),  # 2 * 68 * 255 = 34680 > 32767
    "v": (_fc_net(60, 130000, 0, 0), "v (stock LIF register"),  # 130000 + 2 * 60 * 255 > 131071
}


@pytest.mark.parametrize("register", sorted(REGISTERS))
def test_fit_check_refuses_each_stock_lif_register_by_name(register):
    net, quantity = REGISTERS[register]
    v = TARGET.check_fit(net, 4)
    assert {x.node for x in v} == {"fc"} and any(x.quantity.startswith(quantity) for x in v), v
    assert len(v) == (2 if register == "vth" else 1)  # vth > 2^17 - 1 also lifts the v bound past saturation
    subtract = replace_nodes(net, [replace(n, neuron="subtract") for n in net.nodes])
    assert not any("stock LIF" in x.quantity for x in TARGET.check_fit(subtract, 4))  # zero mode only
    before = _children()
    with pytest.raises(FitError, match=r"node fc: .*register"):
        BACKEND.run(net, np.zeros((1, 2), dtype=np.int64), 4)
    assert _children() == before


def test_lif_bias_encoding():
    from na_deploy.hw_targets.loihi2.limits import lif_bias

    from dataclasses import replace as dc_replace

    from na_deploy.hw_targets.loihi2.limits import LOIHI2

    b = np.array([0, 1, -1, 4095, -4096, 4096, 8190, -8192, 4097, 8192, -8194])
    mant, exp, ok = lif_bias(b)  # default: bias_exp 6 only (netx's fixed choice)
    assert ok.tolist() == [True] * 5 + [False] * 6 and set(exp[ok].tolist()) == {6}
    assert np.array_equal((mant << exp)[ok], 64 * b[ok])
    mant, exp, ok = lif_bias(b, dc_replace(LOIHI2, lif_bias_exp_max=7))  # the LIF register itself allows 7
    assert ok.tolist() == [True] * 8 + [False] * 3
    assert np.array_equal((mant << exp)[ok], 64 * b[ok])
    assert mant.min() >= -4096 and mant.max() <= 4095 and exp.min() >= 0 and exp.max() <= 7


def test_subtract_mode_nets_are_refused_by_this_backend_by_name():
    net = random_intnet(np.random.default_rng(4), "dense_chain", size=3)
    before = _children()
    with pytest.raises(FitError, match="node fc0: neuron model 'subtract' cannot run on backend lava-lif"):
        BACKEND.run(net, random_inputs(np.random.default_rng(0), net, 1), 2)
    with pytest.raises(FitError, match="node fc0: neuron model 'subtract'"):
        BACKEND.build(net, 2)
    assert _children() == before


def test_own_process_backend_still_refuses_zero_and_export_is_not_supported(tmp_path):
    net = _zero(random_intnet(np.random.default_rng(4), "dense_chain", size=3))
    with pytest.raises(FitError, match="neuron model 'zero' has no Lava process model"):
        TARGET.backend("lava").run(net, random_inputs(np.random.default_rng(0), net, 1), 2)
    with pytest.raises(ExportNotSupported, match="backend lava-lif has no bundle of its own: .*--format netx"):
        BACKEND.export(net, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()
    from na_deploy.hw_targets.loihi2.target import BACKENDS

    assert {"lava-lif", "netx"} <= set(BACKENDS) and BACKEND.name == "lava-lif"
    assert isinstance(BACKEND, llb.LavaLIFBackend)


def test_zero_membrane_interval_holds_and_is_reached():
    """fit.zero_membrane_interval against brute force: random current sequences within [lo, hi] keep v (before
    and after the reset) inside it; its upper end is max(pc, th) + hi (v == th does not fire, then + hi)."""
    from na_deploy.hw_targets.loihi2.fit import zero_membrane_interval

    rng = np.random.default_rng(0)
    for _ in range(300):
        th, pc, T = int(rng.integers(1, 50)), int(rng.integers(-20, 60)), int(rng.integers(1, 12))
        lo = int(rng.integers(-30, 10))
        hi = lo + int(rng.integers(0, 40))
        b_lo, b_hi = zero_membrane_interval(np.array([lo]), np.array([hi]), th, pc, T)
        for _ in range(20):
            v, seen = pc, [pc]
            for i in rng.integers(lo, hi + 1, size=T):
                v += int(i)
                seen.append(v)
                v = 0 if v > th else v
                seen.append(v)
            assert b_lo <= min(seen) and max(seen) <= b_hi, (th, pc, T, lo, hi, seen, b_lo, b_hi)
        if hi > 0 and th >= pc and T >= 2 and lo <= 0 <= th:  # climb to exactly th (no spike), then add hi
            assert b_hi == th + hi
