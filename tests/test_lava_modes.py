"""Lava process models of the neuron modes `negative` and `accumulate` and of two-stage offset calibration
(offset_steps rho), against a per-step numpy model of the specification (docs/contract.md C2-C3: the modes,
offset calibration, the windows) written here (`spec_simulate`), independent of the references: every node's
counts, event counts, readout and every recorded step equal, on small random nets of every topology (every
connection type: Dense, Conv, pooling Conv, Sparse identity) and on several samples in one runtime; and on a
digits net per mode against the reference (`reference_simulate`) as well. Refusals (rho > T, rho with another
model, unbalanced accumulate paths, the stock-LIF backends) and the export manifest.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from na_deploy.errors import FitError, SimulationError
from na_deploy.hw_targets.loihi2.reference.slow import int_op
from na_deploy.integer import shift
from na_deploy.integer import wrap_signed as wrap
from na_deploy.ir import INPUT_NAME, IntNet, NeuronModel, neuron_model
from na_deploy.testing import TOPOLOGIES, random_inputs, random_intnet

lb = pytest.importorskip("na_deploy.hw_targets.loihi2.lava.backend")
from na_deploy.hw_targets.loihi2 import TARGET  # noqa: E402
from na_deploy.hw_targets.loihi2.lava.graph import build_lava_graph, window_starts  # noqa: E402
from na_deploy.hw_targets.loihi2.lava.runtime import run_graph  # noqa: E402

pytestmark = pytest.mark.lava


def _model(name: str) -> NeuronModel:
    return neuron_model(name)


def with_mode(net: IntNet, mode: str) -> IntNet:
    """The same integer net with every neuron node in `mode` (the conversion is the same as "subtract")."""
    for n in net.nodes:
        n.neuron = _model(mode)
    return net


# ------------------------------------------------------------------------ the spec as a per-step model
def _node_run(n, cur: np.ndarray, T: int, rho: int, mode: str, bits: int = 24):
    """One node over its input current sequence cur (S, *shape) (bias not included). Returns (output
    sequence of payloads, net count, events, counted-window records)."""
    th, pc = int(n.threshold), int(n.precharge)
    bias = n.bias.reshape((-1,) + (1,) * (len(n.shape) - 1))
    v = np.full(n.shape, pc, dtype=np.int64)
    c = np.zeros(n.shape, dtype=np.int64)
    ev = np.zeros(n.shape, dtype=np.int64)
    out = []
    if mode == "accumulate":
        for t in range(T):
            v = wrap(v + cur[t] + bias, bits)
        for t in range(T):
            z = (v >= th).astype(np.int64)
            v = v - z * th
            c += z
            out.append(z)
        return np.stack(out), c, c.copy(), np.stack(out)
    for t in range(rho + T):
        if rho and t == rho:  # stage 2: re-arm at pc + o*th, o = clip(floor(v_rho / th), -1, 1)
            v = pc + np.clip(v // th, -1, 1) * th
            c[...] = 0
        v = wrap(v + cur[t] + bias, bits)
        z = (v >= th).astype(np.int64)
        if mode == "negative":
            z = z - ((v < 0) & (c > 0)).astype(np.int64)
        v = v - z * th
        c += z
        ev += np.abs(z)
        out.append(z)
    seq = np.stack(out)
    return seq, c, ev, seq[rho:]


def spec_simulate(net: IntNet, x: np.ndarray, T: int, mode: str, rho: int = 0):
    """(counts, events, readout, step records of the last sample) per the spec, one sample at a time,
    layer by layer over whole windows (each node's input = its sources' payload sequences)."""
    names = [n.name for n in net.nodes]
    counts = {k: [] for k in names}
    events = {k: [] for k in names}
    readout, steps = [], {}
    L = rho + T
    for xb in x.astype(np.int64):
        seq = {INPUT_NAME: np.stack([xb] * L)}
        for n in net.all_nodes():
            S = len(next(iter(seq[s.source] for s in n.inputs)))
            cur = sum(np.stack([shift(int_op(s.op, seq[s.source][t]), s.exponent) for t in range(S)])
                      for s in n.inputs)
            if n is net.readout:
                v = np.zeros(n.shape, dtype=np.int64)
                for t in range(S - T, S):
                    v = wrap(v + cur[t] + n.bias, 24)
                readout.append(v)
                continue
            seq[n.name], c, ev, rec = _node_run(n, cur, T, rho, mode)
            counts[n.name].append(c)
            events[n.name].append(ev)
            steps[n.name] = rec
    return ({k: np.stack(v) for k, v in counts.items()}, {k: np.stack(v) for k, v in events.items()},
            np.stack(readout), steps)


def _lava(net: IntNet, x: np.ndarray, T: int, rho=0, record_steps: bool = True, per: int = 0):
    graph = build_lava_graph(net, T, x, record_steps=record_steps, result_buffer=per or len(x), offset_steps=rho)
    return run_graph(graph, samples_per_run=per or len(x)), graph


def _events(trace):
    return getattr(trace, "event_counts", None) or trace.extra.get("event_counts")


def _assert_equal(net, x, T, mode, rho=0, per=0):
    counts, events, readout, steps = spec_simulate(net, x, T, mode, rho)
    tr, graph = _lava(net, x, T, rho, per=per)
    for k in counts:
        assert np.array_equal(tr.spike_counts[k], counts[k]), (mode, k)
        assert np.array_equal(tr.step_spikes[k], steps[k]), (mode, k, "steps")
    assert np.array_equal(tr.readout, readout), mode
    ev = _events(tr)
    if mode == "negative" or rho:
        assert all(np.array_equal(ev[k], events[k]) for k in counts), (mode, "events")
    else:
        assert ev is None
    return counts, events, graph


def _net(seed: int, topology: str, mode: str) -> tuple[IntNet, np.ndarray]:
    rng = np.random.default_rng(seed)
    net = with_mode(random_intnet(rng, topology, size=3, dense_exponents=(-1, 0, 1)), mode)
    return net, random_inputs(rng, net, 3)


def _interesting_net(seed: int, topology: str, mode: str, T: int, rho: int = 0) -> tuple[IntNet, np.ndarray]:
    """The first net from `seed` on whose spec run some node sends more messages than its net count (negative
    spikes, or stage-1 spikes) and spikes at all: the cases the test is about (spec model only: cheap)."""
    for s in range(seed, seed + 200):
        net, x = _net(s, topology, mode)
        counts, events, _, _ = spec_simulate(net, x, T, mode, rho)
        if all(int(c.sum()) > 0 for c in counts.values()) and any((events[k] > counts[k]).any() for k in counts):
            return net, x
    raise AssertionError(f"no {topology} net with extra events from seed {seed}")


# ------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("topology", ["conv_pool_dense", "residual_identity"])  # Dense, Conv, pool Conv, Sparse
def test_negative_mode_equals_spec_and_sends_signed_spikes(topology):
    """Mode negative on every connection type: -1 messages reach Dense, Conv, pooling Conv and Sparse as -w
    (graded, 2 message bits); counts, event counts, readouts and every step equal the spec model; some
    negative spikes occur (events > net count somewhere)."""
    net, x = _interesting_net(100 * TOPOLOGIES.index(topology), topology, "negative", 4)  # has -1 spikes
    counts, events, graph = _assert_equal(net, x, 4, "negative")
    bits = {(type(p).__name__, int(np.asarray(p.num_message_bits.init).reshape(-1)[0]))
            for ps in graph.synapses.values() for p in ps}
    assert all(b > 0 for _, b in bits), bits  # graded everywhere: from the input (8) and signed spikes (2)
    assert any(b == 2 for _, b in bits), bits
    assert sum(int((events[k] - counts[k]).sum()) for k in counts) > 0, "no negative spike in this net"
    assert all(int(c.min()) >= 0 for c in counts.values())  # c in [0, T]: the ReLU


@pytest.mark.parametrize("topology", ["conv_pool_dense", "residual_conv"])
def test_accumulate_mode_equals_spec_with_windows_shifted_by_T(topology):
    """Mode accumulate: consumers' windows start T later per accumulate layer; counts are leading trains
    (1..1 0..0) equal to the spec model on every step; 3 samples in one runtime, 2 run calls."""
    net, x = _net(200 + TOPOLOGIES.index(topology), topology, "accumulate")
    T = 3
    counts, _, graph = _assert_equal(net, x, T, "accumulate", per=2)
    depth = net.depths()
    assert all(graph.starts[n.name] == (depth[n.name] - 1) * (T + 1) + 1 for n in net.nodes)
    assert graph.slot == graph.starts[net.readout.name] + T


@pytest.mark.parametrize("topology,rho,T", [("conv_pool_dense", 1, 4), ("residual_identity", 3, 3)])
def test_offset_calibration_equals_spec(topology, rho, T):
    """Two-stage offset calibration (subtract nets): stage 1 of rho steps, per-neuron re-arm at pc + o*th,
    stage 2 of T steps counted; events include stage 1; rho = T allowed."""
    net, x = _interesting_net(300 + 100 * TOPOLOGIES.index(topology), topology, "subtract", T, rho)
    counts, events, graph = _assert_equal(net, x, T, "subtract", rho=rho)
    assert graph.slot == net.depths()[net.readout.name] + rho + T
    assert sum(int((events[k] - counts[k]).sum()) for k in counts) > 0  # stage 1 spikes are counted as events


def test_offset_calibration_changes_the_counts_against_no_calibration():
    """The offsets act: on a residual net some count differs between rho = 3 and rho = 0 (spec model; Lava ==
    spec for rho > 0 is the test above)."""
    for seed in range(30):
        net, x = _net(seed, "residual_identity", "subtract")
        c0 = spec_simulate(net, x, 6, "subtract", 0)[0]
        c3 = spec_simulate(net, x, 6, "subtract", 3)[0]
        if any(not np.array_equal(c0[k], c3[k]) for k in c0):
            break
    else:
        raise AssertionError("offset calibration changed no count on 30 nets")


def test_refusals_name_the_node_or_option():
    """rho > T, rho with a non-subtract model, and accumulate nodes on only some paths are refused in one line."""
    net, x = _net(5, "dense_chain", "negative")
    with pytest.raises(FitError, match=r"node fc0: offset_steps 1 .*'negative'"):
        build_lava_graph(net, 3, x, offset_steps=1)
    with pytest.raises(SimulationError, match=r"offset calibration \(4 steps\) is longer than the run \(3 steps\)"):
        build_lava_graph(with_mode(net, "subtract"), 3, x, offset_steps=4)
    rng = np.random.default_rng(6)
    res = random_intnet(rng, "residual_identity", size=3)
    res.node("block.conv1").neuron = _model("accumulate")
    with pytest.raises(FitError, match=r"node block.out: inputs arrive at different steps"):
        window_starts(res, 3)
    res.node("stem.relay1").neuron = _model("accumulate")
    assert window_starts(res, 3)["block.out"] == 1 + 1 + 3 + 1  # stem 1, its consumers 2, +T after them


def test_window_starts_of_plain_nets_are_the_depths():
    net, _ = _net(7, "residual_conv", "subtract")
    assert window_starts(net, 5) == net.depths()
    assert neuron_model("subtract").name == "subtract"


# ------------------------------------------------------------------------- whole nets vs the reference
@pytest.fixture(scope="module")
def digits_intnet():
    """A small digits_cnn (ridge readout, no SGD) converted as subtract and put through the Loihi 2 fixed point."""
    from na_deploy.convert import to_floatnet
    from helpers import ridge_digits_cnn  # tests/helpers.py

    model, d = ridge_digits_cnn(widths=(4, 8), grid=10)
    fnet = to_floatnet(model, d.input_shape, d.normalization.channel_scale, name="digits_cnn")
    return TARGET.to_fixed_point(fnet, max_timesteps=16), d.x_test[:3]


@pytest.mark.parametrize("mode,rho", [("negative", 0), ("accumulate", 0), ("subtract", 3)])
def test_digits_net_lava_equals_reference_and_spec_every_node_and_step(digits_intnet, mode, rho):
    """The digits net in each mode (the conversion of both new modes is subtract's: same integer net, only the
    neuron differs; offset calibration: meta offset_steps): Lava == `reference_simulate` (every node, the
    readout, event counts) on 3 samples, and Lava's per-step records of the last sample == the spec model's."""
    from na_deploy.hw_targets.loihi2.reference.fast import reference_simulate

    base, x = digits_intnet
    net = IntNet(input=base.input, nodes=[dataclasses.replace(n, neuron=_model(mode)) for n in base.nodes],
                 readout=base.readout, meta={**base.meta, "offset_steps": rho})
    T = 5
    ref = reference_simulate(net, x, T)
    tr, graph = _lava(net, x, T, rho=None)
    counts, events, readout, steps = spec_simulate(net, x, T, mode, rho)
    for k in ref.spike_counts:
        assert np.array_equal(tr.spike_counts[k], ref.spike_counts[k]), k
        assert np.array_equal(tr.events()[k], ref.events()[k]), k
        assert np.array_equal(tr.step_spikes[k], steps[k]), k
        assert np.array_equal(counts[k], ref.spike_counts[k]), k
    assert np.array_equal(tr.readout, ref.readout) and np.array_equal(readout, ref.readout)
    assert graph.offset_steps == rho and sum(int(c.sum()) for c in ref.spike_counts.values()) > 0


def test_stock_lif_and_netx_backends_refuse_the_new_modes(digits_intnet):
    """lava-lif and netx run Lava's stock LIF only: a negative / accumulate / offset-calibrated net is refused
    in one line naming the node and its neuron model."""
    base, x = digits_intnet
    for mode in ("negative", "accumulate"):
        net = IntNet(input=base.input, nodes=[dataclasses.replace(n, neuron=_model(mode)) for n in base.nodes],
                     readout=base.readout, meta=dict(base.meta))
        first = net.nodes[0].name
        for name in ("lava-lif", "netx"):
            with pytest.raises(Exception, match=rf"node {first}.*{mode}|{mode}.*node {first}") as e:
                TARGET.backend(name).run(net, x[:1], 2, check_fit=False)
            assert "\n" not in str(e.value)


def test_export_bundle_records_modes_window_starts_and_offset_steps(digits_intnet, tmp_path):
    """`export --format lava` of an accumulate net and of an offset-calibrated net: the manifest names each node's
    neuron model and window start (T later per accumulate layer) and the net's offset_steps."""
    import json

    base, _ = digits_intnet
    T = 4
    acc = IntNet(input=base.input, nodes=[dataclasses.replace(n, neuron=_model("accumulate")) for n in base.nodes],
                 readout=base.readout, meta=dict(base.meta))
    man = json.loads((TARGET.backend().export(acc, tmp_path / "acc", timesteps=T) / "manifest.json").read_text())
    depth = acc.depths()
    assert [(m["neuron"], m["window_start"]) for m in man["nodes"]] == [
        (n.neuron.name if n is not acc.readout else None, (depth[n.name] - 1) * (T + 1) + 1) for n in acc.all_nodes()]
    off = IntNet(input=base.input, nodes=list(base.nodes), readout=base.readout, meta={**base.meta, "offset_steps": 2})
    man = json.loads((TARGET.backend().export(off, tmp_path / "off", timesteps=T) / "manifest.json").read_text())
    assert man["offset_steps"] == 2 and man["slot_steps"] == depth[off.readout.name] + 2 + T
