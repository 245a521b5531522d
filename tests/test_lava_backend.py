"""The Lava backend (hw_targets/loihi2/lava/) against the integer reference.

C3/C6: Lava's per-node spike counts and readout potentials equal `reference/slow.py` exactly, on every sample,
for >= 200 random IntNets (NA_DEPLOY_LAVA_NETS overrides the count). Plus: op layouts (conv / pool / dense
from maps / identity, exponents), Lava's Dense keeps our weights, a perturbed Lava weight is detected and
located, a model exception surfaces with its message and nothing hangs, unfit nets are refused.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
import zlib

import numpy as np
import pytest

from na_deploy.errors import FitError, SimulationError
from na_deploy.hw_targets.loihi2.reference.slow import int_op, slow_reference_simulate
from na_deploy.integer import shift
from na_deploy.ir import (INPUT_NAME, AvgPool2d, Conv2d, Dense, Identity, InputNode, IntNet, IntNeuronNode,
                          IntReadoutNode, Synapse)
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.testing import TOPOLOGIES, random_inputs, random_intnet
from na_deploy.verify.bit_exact import first_difference, reference_step_records, verify

lb = pytest.importorskip("na_deploy.hw_targets.loihi2.lava.backend")
from lava.magma.core.run_conditions import RunSteps  # noqa: E402  (after lava_backend: fork start method)
from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402

from na_deploy.hw_targets.loihi2.lava.processes import models as lava_models  # noqa: E402
from na_deploy.hw_targets.loihi2.lava.processes.process import Accumulator, GradedSource  # noqa: E402

pytestmark = pytest.mark.lava

NETS = int(os.environ.get("NA_DEPLOY_LAVA_NETS", "200"))
CFG = Loihi2SimCfg(select_tag="fixed_pt")
BACKEND = TARGET.backend()


def _children() -> set[int]:
    return {p.pid for p in mp.active_children()}


def _run_procs(proc, steps: int) -> None:
    try:
        proc.run(condition=RunSteps(num_steps=steps), run_cfg=CFG)
    except RuntimeError:
        lb.abandon_runtime(proc)
        raise


# ------------------------------------------------------------------------------- property test (C3, C6)
@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_lava_equals_slow_reference_on_random_intnets_C3_C6(topology):
    """NETS/5 random nets per topology (ties v == th, negative biases, thresholds 1..4097, dense exponents
    -3..2 on half of them), 2 samples each in one runtime, T = 2..4: identical counts and readouts."""
    n = math.ceil(NETS / len(TOPOLOGIES))
    seed = 1000 * TOPOLOGIES.index(topology)
    spikes = 0
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        exps = (-3, -1, 0, 2) if i % 2 else (0,)
        net = random_intnet(rng, topology, size=3, dense_exponents=exps)
        x = random_inputs(rng, net, 2)
        T = int(rng.integers(2, 5))
        hw = BACKEND.run(net, x, T)
        ref = slow_reference_simulate(net, x, T)
        assert first_difference(ref, hw) is None, (topology, seed + i, T, first_difference(ref, hw))
        assert np.array_equal(ref.readout, hw.readout)
        assert all(hw.spike_counts[k].dtype == np.int64 and hw.spike_counts[k].shape == v.shape
                   for k, v in ref.spike_counts.items())
        spikes += sum(int(v.sum()) for v in ref.spike_counts.values())
    assert spikes > 0  # the nets are not all silent


def test_samples_in_one_runtime_equal_separate_runs_C3():
    """Re-arming at each window start: 5 samples in one runtime (in 1 run call or 5) = 5 one-sample runs."""
    rng = np.random.default_rng(7)
    net = random_intnet(rng, "residual_identity", size=3)
    x = random_inputs(rng, net, 5)
    together = BACKEND.run(net, x, 3)
    chunked = BACKEND.run(net, x, 3, samples_per_run=1)
    alone = [BACKEND.run(net, x[i:i + 1], 3) for i in (0, 4)]
    assert first_difference(together, chunked) is None
    for i, tr in zip((0, 4), alone):
        for k in tr.spike_counts:
            assert np.array_equal(tr.spike_counts[k][0], together.spike_counts[k][i])
        assert np.array_equal(tr.readout[0], together.readout[i])
    assert first_difference(slow_reference_simulate(net, x, 3), together) is None


# ------------------------------------------------------------------------------------ op layouts (C3)
def _lava_op(syn: Synapse, src_shape, x: np.ndarray) -> np.ndarray:
    """One op in Lava: GradedSource -> connection -> Accumulator (T = 1): the potential is the op's output."""
    out_shape = syn.op.out_shape(src_shape)
    B = len(x)
    src = GradedSource(data=lb.to_lava_layout(x, src_shape), timesteps=1, slot=2, num_message_bits=8)
    acc = Accumulator(shape=lb.lava_shape(out_shape), bias=0, depth=1, timesteps=1, slot=2, n_samples=B)
    lb.connect_synapse(syn, src, src_shape, acc.a_in, "dst", out_shape)
    _run_procs(acc, 2 * B)
    try:
        pipe = acc.result_out.external_pipe_csp_recv_port
        got = np.stack([pipe.recv() for _ in range(B)]).astype(np.int64)
        assert not pipe.probe()  # exactly one result per sample
    finally:
        acc.stop()
    return lb.from_lava_layout(got, out_shape)


OP_CASES = {
    "conv_stride_pad_asym": ((2, 5, 4), lambda r: Conv2d(r.integers(-128, 128, (3, 2, 3, 2)), (2, 1), (1, 0))),
    "conv_groups": ((4, 4, 5), lambda r: Conv2d(r.integers(-128, 128, (6, 2, 3, 3)), 1, 1, groups=2)),
    "conv_1x1_stride2": ((3, 5, 5), lambda r: Conv2d(r.integers(-128, 128, (2, 3, 1, 1)), 2, 0)),
    "avgpool_2x2_gain": ((3, 4, 6), lambda r: AvgPool2d(2, 2, 7)),
    "avgpool_3x2_stride1": ((2, 5, 4), lambda r: AvgPool2d((3, 2), (1, 1), -3)),
    "dense_from_map": ((2, 3, 4), lambda r: Dense(r.integers(-128, 128, (5, 24)) * 2)),
    "identity_map": ((2, 3, 4), lambda r: Identity(-77)),
    "identity_flat": ((6,), lambda r: Identity(127)),
}


@pytest.mark.parametrize("graded", [True, False], ids=["graded", "binary"])
@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_op_layout_matches_reference_op_C3(case, graded):
    """torch->Lava conv layout (w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1), input W x H x C), strides and
    paddings given as (x, y), pooling as a grouped conv, the (C,H,W)->(W,H,C) flatten permutation of Dense,
    identity as a Sparse diagonal: Lava's output equals the reference op exactly, for graded pixels and for
    binary spikes."""
    src_shape, make = OP_CASES[case]
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    op = make(rng)
    x = rng.integers(0, 256 if graded else 2, size=(3, *src_shape))
    syn = Synapse(INPUT_NAME if graded else "a", op)
    got = _lava_op(syn, src_shape, x)
    want = np.stack([int_op(op, xi) for xi in x])
    assert np.array_equal(got, want)


@pytest.mark.parametrize("e", [-3, -2, 2])
def test_dense_exponent_is_the_ir_shift_C5(e):
    """Lava's Dense weight_exp: y << e, and for e < 0 numpy's arithmetic shift = floor(y / 2**-e) = the IR's
    `y >> -e`, also for negative sums that are not multiples of 2**-e."""
    rng = np.random.default_rng(e + 10)
    op = Dense(rng.integers(-128, 128, (7, 9)) * 2)
    x = rng.integers(0, 256, size=(4, 9))
    got = _lava_op(Synapse(INPUT_NAME, op, e), (9,), x)
    want = np.stack([shift(int_op(op, xi), e) for xi in x])
    assert np.array_equal(got, want)
    if e < 0:
        raw = np.stack([int_op(op, xi) for xi in x])
        assert ((raw < 0) & (raw % (1 << -e) != 0)).any()  # the floor case really occurs (negative, inexact)


# ------------------------------------------------------------------------------ weights (C5, C6)
def _dense_net(w: np.ndarray) -> IntNet:
    n_in = w.shape[1]
    a = IntNeuronNode("a", (n_in,), [Synapse(INPUT_NAME, Identity(1))], threshold=1, precharge=0)
    r = IntReadoutNode("r", (w.shape[0],), [Synapse("a", Dense(w))])
    return IntNet(InputNode((n_in,)), [a], r)


def test_lava_dense_keeps_our_weights_C5():
    """The weights Lava's fixed_pt Dense stores after its first-step clip/truncate (read back from the
    running model) equal ours: mixed-sign even values over the whole [-256, 254], all-positive and
    all-negative matrices; odd mixed-sign weights would be changed, so the builder refuses them."""
    mixed = np.arange(-256, 256, 2).reshape(8, 32)
    pos = np.arange(0, 255, 2)[:96].reshape(3, 32)
    neg = -np.arange(0, 254, 2)[:96].reshape(3, 32)
    for w in (mixed, pos, neg):
        net = _dense_net(w)
        x = np.full((1, 32), 1)
        graph = lb.build_lava_graph(net, 2, x)
        dense = graph.synapses["r"][0]
        _run_procs(graph.readout, graph.num_steps)
        try:
            used = lb.var_as_int(dense.weights)
            trace = graph.collect()
        finally:
            graph.readout.stop()
        assert np.array_equal(used, w)
        assert np.array_equal(trace.readout, slow_reference_simulate(net, x, 2).readout)
    # what Lava would do to weights we never emit
    assert np.array_equal(lb.lava_kept_weights(np.array([[3, -1, -3, 300, -300, 254]])),
                          [[2, -2, -4, 254, -256, 254]])
    with pytest.raises(FitError, match=r"node r: dense weight from a .* Lava's Dense/Sparse would change"):
        lb.build_lava_graph(_dense_net(np.array([[3, -2]])), 2)


def test_conv_exponent_and_bad_inputs_are_refused():
    net = random_intnet(np.random.default_rng(3), "conv_chain", size=3)
    net.nodes[0].inputs[0].exponent = 1
    with pytest.raises(FitError, match="conv2d exponent from input is 1; allowed: 0"):
        lb.build_lava_graph(net, 2)
    net = random_intnet(np.random.default_rng(3), "conv_chain", size=3)
    with pytest.raises(SimulationError, match=r"inputs: pixel values span \[\d+, 256\]; allowed \[0, 255\]"):
        BACKEND.run(net, np.full((1, *net.input.shape), 256), 2)
    with pytest.raises(SimulationError, match=r"inputs: shape \(1, 9\) does not match"):
        BACKEND.run(net, np.zeros((1, 9)), 2)
    with pytest.raises(SimulationError, match="timesteps: T = 0 outside integers >= 1"):
        BACKEND.run(net, np.zeros((1, *net.input.shape)), 0)


def test_unfit_net_is_refused_before_lava_starts():
    net = random_intnet(np.random.default_rng(4), "dense_chain", size=3)
    net.nodes[0].threshold = 1 << 24  # beyond the 24-bit membrane
    before = _children()
    with pytest.raises(FitError, match="does not fit loihi2: .*threshold.*refusing to run it on Lava"):
        BACKEND.run(net, random_inputs(np.random.default_rng(0), net, 1), 2)
    assert _children() == before


# ------------------------------------------------------------------------- mismatch located (C6)
def test_perturbed_readout_weight_is_detected_and_located_C6():
    """One Lava Dense weight into the readout changed by +2 after build: verify reports the readout neuron
    of the first sample whose source neuron spiked, and the first step its spike arrives."""
    rng = np.random.default_rng(11)
    net = random_intnet(rng, "dense_chain", size=4)
    x = random_inputs(rng, net, 4)
    T = 4
    ref = slow_reference_simulate(net, x, T)
    src = net.readout.inputs[0].source
    counts = ref.spike_counts[src]
    s, j = (int(a) for a in np.argwhere(counts > 0)[0])  # first sample (then first neuron) that spikes
    w = net.readout.inputs[0].op.weight
    k = int(np.argmin(w[:, j]))  # a weight far from the top of the range: +2 stays representable

    def perturb(graph):
        graph.synapses[net.readout.name][0].weights.init[k, j] += 2

    rep = verify(net, x, T, TARGET, BACKEND, on_build=perturb)
    assert not rep.equal and not rep.readout_equal
    assert all(layer["equal"] for layer in rep.layers)
    m = rep.first_mismatch
    assert (m["sample"], m["node"], tuple(m["neuron"])) == (s, net.readout.name, (k,))
    assert m["lava"] - m["reference"] == 2 * int(counts[s, j])
    spikes, _ = reference_step_records(net, x[s:s + 1], T, TARGET)
    first_spike = int(np.argmax(spikes[src][:, j] > 0)) + 1
    assert m["step"] == first_spike
    assert m["lava_step_in_slot"] == net.depths()[net.readout.name] + first_spike
    assert m["earliest"]["node"] == net.readout.name


def test_perturbed_hidden_conv_weight_is_located_at_its_node_C6():
    rng = np.random.default_rng(12)
    net = random_intnet(rng, "conv_chain", size=4)
    while len(net.nodes) < 2:
        net = random_intnet(rng, "conv_chain", size=4)
    x = random_inputs(rng, net, 3)
    node = net.nodes[1].name

    def perturb(graph):
        w = graph.synapses[node][0].weight.init
        w[...] = np.where(w > 0, -w, 100)  # a big change: certain to alter spikes

    rep = verify(net, x, 3, TARGET, BACKEND, on_build=perturb)
    assert not rep.equal
    assert rep.first_mismatch["earliest"]["node"] == node
    assert rep.first_mismatch["step"] is not None
    assert all(layer["equal"] for layer in rep.layers if layer["node"] == net.nodes[0].name)


def test_verify_equal_report():
    rng = np.random.default_rng(13)
    net = random_intnet(rng, "residual_conv", size=3)
    rep = verify(net, random_inputs(rng, net, 3), 3, TARGET, BACKEND)
    assert rep.equal and rep.readout_equal and rep.mismatching_samples == 0
    assert [layer["node"] for layer in rep.layers] == [n.name for n in net.nodes]
    assert rep.seconds["lava_per_sample"] > 0 and rep.to_dict()["equal"] is True


# ------------------------------------------------------------------------ errors never hang (C6)
def test_model_exception_in_source_surfaces_with_its_message():
    """A graded payload that does not fit 8 message bits makes our source model raise inside Lava: the run
    returns (no hang), SimulationError carries the model's message, no Lava process is left behind."""
    rng = np.random.default_rng(5)
    net = random_intnet(rng, "conv_pool_dense", size=4)

    def poison(graph):
        graph.source.data.init[0, 0] = 300

    before = _children()
    t0 = time.perf_counter()
    with pytest.raises(SimulationError, match=r"ValueError: input: sample 0 has payloads in \[\d+, 300\]"):
        BACKEND.run(net, random_inputs(rng, net, 2), 2, on_build=poison)
    assert time.perf_counter() - t0 < 60
    time.sleep(0.2)
    assert _children() <= before


def test_model_exception_mid_graph_surfaces(monkeypatch):
    """A neuron model failing mid-graph still sends (zeros) before raising, so the runtime reports the error
    instead of hanging on the blocked downstream processes."""
    def boom(self, a_in):
        raise ArithmeticError(f"injected fault in {self.proc_params.get('name')}")

    monkeypatch.setattr(lava_models.PySubtractiveIFModelFixed, "update", boom)
    net = random_intnet(np.random.default_rng(6), "residual_identity", size=3)
    t0 = time.perf_counter()
    with pytest.raises(SimulationError, match="ArithmeticError: injected fault in "):
        BACKEND.run(net, random_inputs(np.random.default_rng(0), net, 1), 2)
    assert time.perf_counter() - t0 < 60


def test_lava_process_dying_before_it_sends_is_reported_at_once(monkeypatch):
    """A Lava built-in failing before it sends leaves its downstream blocked (Lava hangs); its OS process ends,
    and the supervision (supervision.py, polling the workers) reports the model's own error within seconds,
    not after the hang timeout, and terminates the Lava processes."""
    from lava.proc.dense import models as dense_models

    def boom(self):
        raise OSError("dense fault before send")

    monkeypatch.setattr(dense_models.PyDenseModelBitAcc, "run_spk", boom)
    net = random_intnet(np.random.default_rng(8), "dense_chain", size=3)
    before = _children()
    t0 = time.perf_counter()
    with pytest.raises(SimulationError, match="Lava process model failed: OSError: dense fault before send"):
        BACKEND.run(net, random_inputs(np.random.default_rng(0), net, 1), 2, timeout_s=120)
    assert time.perf_counter() - t0 < 30
    time.sleep(0.5)
    assert _children() <= before


def test_hung_lava_process_times_out(monkeypatch):
    """A Lava process that blocks (alive, never answering) ends the run after the timeout with a BackendFailure
    (CLI exit 3) and the Lava processes terminated."""
    from lava.proc.dense import models as dense_models

    from na_deploy.errors import BackendFailure

    def blocks(self):
        time.sleep(3600)

    monkeypatch.setattr(dense_models.PyDenseModelBitAcc, "run_spk", blocks)
    net = random_intnet(np.random.default_rng(8), "dense_chain", size=3)
    before = _children()
    t0 = time.perf_counter()
    with pytest.raises(BackendFailure, match="did not finish within 5 s"):
        BACKEND.run(net, random_inputs(np.random.default_rng(0), net, 1), 2, timeout_s=5)
    assert time.perf_counter() - t0 < 40
    time.sleep(0.5)
    assert _children() <= before


def test_runs_leak_no_threads():
    """Lava never joins the listener threads of external pipes; run_graph does. Leaked threads made a run hang
    after ~90 runs in one process (seen in the property test), so the count must not grow run over run."""
    import threading

    rng = np.random.default_rng(11)
    net = random_intnet(rng, "dense_chain", size=3)
    x = random_inputs(rng, net, 1)
    def settled_count():  # threads still ending (supervision, teardown) get 10 s; a leaked listener never ends
        deadline = time.monotonic() + 10
        while threading.active_count() > before and time.monotonic() < deadline:
            time.sleep(0.1)
        return threading.active_count()

    BACKEND.run(net, x, 2)
    before = threading.active_count()
    for _ in range(3):
        BACKEND.run(net, x, 2)
    assert settled_count() <= before


def test_many_run_calls_with_a_one_sample_pipe_never_block_C6():
    """A pipe that holds one sample and 30 run calls: every drain must take exactly that call's results.
    (A drain that took only what `probe()` showed right after `run` left late arrivals in the pipe, and the
    next call blocked on the full pipe under load: a hang.)"""
    rng = np.random.default_rng(77)
    net = random_intnet(rng, "conv_chain", size=3)
    x = random_inputs(rng, net, 30)
    hw = BACKEND.run(net, x, 3, samples_per_run=1, timeout_s=60)
    assert first_difference(slow_reference_simulate(net, x, 3), hw) is None
