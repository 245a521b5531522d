"""Occasional-noise report: exact counting on crafted arrays, JSON, batch merging, relays skipped, the
measurement on a simulated single layer (zero off grid at T = p, the conversion theory of C2), and occasional
noise proper: a perfectly regular layer (constant input) shows 0 at every k in the float SNN and, exactly, in
the integer reference; an injected spurious or missing spike shows; the closed-form regular count equals a
stepped IF neuron."""
import dataclasses
import json
import zlib

import numpy as np
import pytest
import torch

from na_deploy.simulate.ann import ann_forward
from na_deploy.errors import SimulationError
from na_deploy.simulate.float_snn import simulate_float
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.ir import (ZERO, Conv2d, Dense, FloatNet, Identity, InputNode, IntNeuronNode, NeuronNode, ReadoutNode,
                          Synapse, replace_nodes)
from na_deploy.evaluate.occasional_noise import (add_timing_noise, firing_rates, format_noise_md, format_noise_table,
                                                 measure_float_noise, merge_noise, noise_report, off_grid_rows,
                                                 regular_counts, window_input)
from na_deploy.evaluate.plots import plot_occasional_noise
from na_deploy.testing import TOPOLOGIES, random_inputs, random_intnet


def test_off_grid_counts_exactly():
    levels = {"a": np.array([[0, 1, 2, 2], [1, 1, 0, 2]]), "b": np.array([[3], [0]])}
    counts = {"a": np.array([[0, 2, 4, 3], [2, 3, 0, 4]]), "b": np.array([[6], [1]])}
    rows = off_grid_rows(counts, levels, T=4, p_by_node={"a": 2, "b": 3})  # b: 3 does not divide 4 -> skipped
    assert [r.node for r in rows] == ["a"]
    a = rows[0]
    assert (a.k, a.neurons, a.samples, a.off_grid, a.off_grid_over, a.off_grid_under, a.off_grid_abs, a.spikes) == \
        (2, 4, 2, 2, 1, 1, 2, 18)
    assert a.off_grid_share == pytest.approx(2 / 8) and a.firing_rate == pytest.approx(18 / (8 * 4))
    assert a.off_grid_mean_abs_levels == pytest.approx(2 / (2 * 8))
    assert a.noise is None and a.noise_share is None  # not measured without the inputs
    d = json.loads(json.dumps(a.to_dict()))
    assert d["off_grid_share"] == 0.25 and d["node"] == "a" and d["noise_share"] is None


def test_roles_filter_and_errors():
    levels = {"a": np.zeros((1, 2)), "a.relay1": np.zeros((1, 2))}
    counts = {"a": np.zeros((1, 2)), "a.relay1": np.ones((1, 2))}
    rows = off_grid_rows(counts, levels, 2, {"a": 2, "a.relay1": 2}, roles={"a": "layer", "a.relay1": "relay"})
    assert [r.node for r in rows] == ["a"] and rows[0].off_grid == 0
    with pytest.raises(SimulationError, match="no layer"):
        off_grid_rows(counts, levels, 3, {"a": 2})
    with pytest.raises(SimulationError, match=r"node a: spike counts have shape \(1, 3\)"):
        off_grid_rows({"a": np.zeros((1, 3))}, levels, 2, {"a": 2})


def test_merge_equals_one_measurement_over_all_samples():
    rng = np.random.default_rng(0)
    lv = rng.integers(0, 3, size=(10, 3, 4))
    ct = np.clip(2 * lv + rng.integers(-1, 2, size=lv.shape), 0, 4)
    whole = off_grid_rows({"x": ct}, {"x": lv}, 4, {"x": 2})
    parts = merge_noise(off_grid_rows({"x": ct[:4]}, {"x": lv[:4]}, 4, {"x": 2}),
                        off_grid_rows({"x": ct[4:]}, {"x": lv[4:]}, 4, {"x": 2}))
    assert [r.to_dict() for r in parts] == [r.to_dict() for r in whole]
    assert firing_rates({"x": ct}, 4)["x"] == pytest.approx(ct.sum() / (ct.size * 4))


def _two_layer_net():
    """input -> l1 (constant input current) -> l2 -> relay -> readout, dyadic weights."""
    rng = np.random.default_rng(1)
    l1 = NeuronNode("l1", (3, 4, 4), [Synapse("input", Conv2d(rng.integers(-3, 4, size=(3, 1, 3, 3)) / 2048, 1, 1))],
                    threshold=0.5, p=2, bias=np.array([0.125, 0.25, 0.0]))
    l2 = NeuronNode("l2", (3, 4, 4), [Synapse("l1", Conv2d(rng.integers(-2, 3, size=(3, 3, 3, 3)) / 4, 1, 1))],
                    threshold=0.5, p=2, bias=np.array([0.125, 0.0, 0.25]))
    relay = NeuronNode("l2.relay1", (3, 4, 4), [Synapse("l2", Identity(1.0))], threshold=0.5, p=2,
                       role="relay")
    ro = ReadoutNode("fc", (2,), [Synapse("l2.relay1", Dense(rng.normal(size=(2, 48))))])
    return FloatNet(InputNode((1, 4, 4), [1 / 255]), [l1, l2, relay], ro)


def test_noise_report_from_float_sim():
    """C2: the first layer has no occasional noise at T = p; the report covers layers only, is JSON-clean
    and formats as a table."""
    net = _two_layer_net()
    x = torch.randint(0, 256, (32, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    _, levels = ann_forward(net, x, device="cpu")
    r = simulate_float(net, x, [2, 4, 8], device="cpu", dtype=torch.float64, count_timesteps=[2, 4, 8],
                       progress=False)
    rep = noise_report(net, r.counts, levels, ks=[1, 2, 4])
    assert [row.node for row in rep.rows[1]] == ["l1", "l2"]
    assert rep.rows[1][0].off_grid == 0 and rep.rows[1][0].samples == 32 and rep.rows[1][0].noise is None
    assert all(row.T == 2 * k for k in (1, 2, 4) for row in rep.rows[k])
    assert rep.rows[1][0].firing_rate == pytest.approx(r.firing_rates(2)["l1"])
    json.dumps(rep.to_dict())
    table = format_noise_table(rep)
    assert "l1" in table and "l2.relay1" not in table and "noise@k=4" in table and "offgrid@k=4" in table
    assert "all layers" in table and "n/a" in table
    with pytest.raises(SimulationError, match="no spike counts for layer l1 at T=16"):
        noise_report(net, r.counts, levels, ks=[8])
    streamed = measure_float_noise(net, x, ks=[1, 2, 4], batch_size=5, device="cpu", progress=False)
    with_noise = noise_report(net, r.counts, levels, ks=[1, 2, 4], inputs=x)
    for k in (1, 2, 4):  # float32 in the streamed run: same counts on this dyadic net
        assert [row.to_dict() for row in streamed.rows[k]] == [row.to_dict() for row in with_noise.rows[k]]
        assert [dataclasses.replace(row, noise=None, noise_spurious=None, noise_missing=None, noise_abs=None)
                for row in with_noise.rows[k]] == rep.rows[k]  # the off-grid fields do not depend on the inputs


def _float_run(net, x, ks=(1, 2, 4)):
    Ts = sorted({k * n.p for k in ks for n in net.nodes})
    _, levels = ann_forward(net, x, device="cpu")
    r = simulate_float(net, x, Ts, device="cpu", dtype=torch.float64, count_timesteps=Ts, progress=False)
    return r.counts, levels


def test_regular_first_layer_has_no_occasional_noise_float_sim():
    """The first layer's input is constant, its spikes perfectly regular: occasional noise 0 at k = 1, 2, 4, while
    its off-grid share (count != k x level) is not 0 at k >= 2 -- the finer rate resolution, not noise."""
    net = _two_layer_net()
    x = torch.randint(0, 256, (64, 1, 4, 4), generator=torch.Generator().manual_seed(3))
    counts, levels = _float_run(net, x)
    rep = noise_report(net, counts, levels, ks=[1, 2, 4], inputs=x)
    for k in (1, 2, 4):
        l1 = rep.rows[k][0]
        assert l1.node == "l1" and l1.T == 2 * k and l1.samples == 64
        assert (l1.noise, l1.noise_spurious, l1.noise_missing, l1.noise_abs, l1.noise_share) == (0, 0, 0, 0, 0.0)
    assert rep.rows[4][0].off_grid > 0  # the old figure would have called this regular layer noisy
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["by_k"]["2"][0]["noise_share"] == 0.0 and set(d["definitions"]) == {"noise", "off_grid"}
    md = "\n".join(format_noise_md(d))
    assert "- k=4: l1 0.00% (off grid" in md and "count != k x quantized-ANN level" in md


def test_injected_spurious_or_missing_spike_shows_as_noise():
    """One spike too many (or too few) in the regular layer is counted exactly once, with its sign."""
    net = _two_layer_net()
    x = torch.randint(0, 256, (16, 1, 4, 4), generator=torch.Generator().manual_seed(4))
    counts, levels = _float_run(net, x)
    T = 8  # k = 4
    for delta, field in ((1, "noise_spurious"), (-1, "noise_missing")):
        c = {t: dict(per) for t, per in counts.items()}
        l1 = c[T]["l1"].copy()
        idx = np.argwhere(l1 < T if delta > 0 else l1 > 0)[0]
        l1[tuple(idx)] += delta
        c[T]["l1"] = l1
        row = noise_report(net, c, levels, ks=[4], inputs=x).rows[4][0]
        assert (row.node, row.noise, getattr(row, field), row.noise_abs) == ("l1", 1, 1, 1)
        assert row.noise_share == pytest.approx(1 / (16 * 48))


def test_regular_count_is_a_stepped_if_neuron():
    """Closed form r = clip(floor((v0 + U)/th), 0, T) == a subtract-reset IF neuron fed U/T every step (float and
    integer nodes, currents below 0, inside [0, th] and above th), and a stepped model for other modes."""
    rng = np.random.default_rng(5)
    syn = [Synapse("input", Dense(np.ones((6, 1))))]
    fnode = NeuronNode("f", (6,), syn, threshold=0.75, p=2)
    inode = IntNeuronNode("i", (6,), syn, threshold=7, precharge=3, p=2)
    Uf, Ui = rng.integers(-128, 640, size=(200, 6)) / 64, rng.integers(-20, 80, size=(200, 6))
    for node, U in ((fnode, Uf), (inode, Ui)):
        for T in (1, 2, 5, 8):  # stepped in units of 1/T (exact: dyadic / integer values): v' = T*v, I' = U
            v, want = np.full(U.shape, T * node.precharge, dtype=U.dtype), np.zeros(U.shape, dtype=np.int64)
            for _ in range(T):
                v += U
                z = v >= T * node.threshold
                v -= z * T * node.threshold
                want += z
            assert np.array_equal(regular_counts(node, U.astype(np.float64), T), want)
    znode = dataclasses.replace(fnode, neuron=ZERO)  # v > th, reset to 0: 0.3 per step with th 0.75 fires at step 3
    assert regular_counts(znode, np.full((1, 6), 0.3 * 6), 6).tolist() == [[2] * 6]


def _intnet_counts(net, x, ks=(1, 2, 4)):
    Ts = sorted({k * n.p for k in ks for n in net.nodes})
    traces = TARGET.reference_simulate_multi(net, x, Ts, device="cpu", progress=False)
    return {T: tr.spike_counts for T, tr in traces.items()}


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_integer_reference_first_layers_exactly_regular(topology):
    """Integer SNN (the loihi2 bit-exact reference) on random IntNets of every topology: every layer fed only by
    the image shows exactly 0 at k = 1, 2, 4 (integer U, floor division), in mode subtract and in mode zero."""
    rng = np.random.default_rng(zlib.crc32(topology.encode()))  # not hash(): str hashes change per process
    base = random_intnet(rng, topology)
    zero = replace_nodes(base, [dataclasses.replace(n, neuron=ZERO) for n in base.nodes])  # stepped regular neuron
    for net in (base, zero):  # the net in mode subtract, then the same net in mode zero
        x = random_inputs(rng, net, 24)
        counts = _intnet_counts(net, x)
        levels = {n.name: np.zeros((24,) + n.shape, dtype=np.int64) for n in net.nodes}
        rep = noise_report(net, counts, levels, ks=[1, 2, 4], simulator="integer", inputs=x)
        first = {n.name for n in net.nodes if n.role == "layer" and all(s.source == "input" for s in n.inputs)}
        assert first
        for k in (1, 2, 4):
            rows = {r.node: r for r in rep.rows[k]}
            assert all(rows[n].noise == 0 and rows[n].samples == 24 for n in first), (k, rep.to_dict())
            assert all(r.noise is not None for r in rows.values())


def test_integer_window_input_and_a_noisy_deeper_layer():
    """U of a deeper integer layer comes from its sources' counts (relays included): a relay, which copies its
    source spike for spike, is exactly regular for that U; the layers after the stem are not (uneven arrival:
    spurious and missing spikes both occur)."""
    rng = np.random.default_rng(1)
    net = random_intnet(rng, "residual_identity")
    x = random_inputs(rng, net, 32)
    counts = _intnet_counts(net, x, ks=(4,))
    T = 4 * net.node("block.out").p
    relay = net.node("stem.relay1")
    U = window_input(net, relay, counts[T], x, T)
    assert U.shape == (32,) + relay.shape and np.array_equal(U, np.rint(U))
    assert np.array_equal(regular_counts(relay, U, T), counts[T]["stem.relay1"])
    with pytest.raises(SimulationError, match="needs the spike counts of its source stem.relay1"):
        window_input(net, net.node("block.out"), {"block.conv1": counts[T]["block.conv1"]}, x, T)
    levels = {n.name: np.zeros((32,) + n.shape, dtype=np.int64) for n in net.nodes}
    rep = noise_report(net, counts, levels, ks=[4], simulator="integer")
    rows = {r.node: r for r in add_timing_noise(rep, net, counts, x).rows[4]}
    assert rows["stem"].noise == 0
    for name in ("block.conv1", "block.out"):
        r = rows[name]
        assert r.noise > 0 and r.noise_spurious > 0 and r.noise_missing > 0
        assert r.noise == r.noise_spurious + r.noise_missing and r.noise_abs >= r.noise
    with pytest.raises(SimulationError, match="counts of 32 samples at T=.*inputs has 31"):
        add_timing_noise(rep, net, counts, x[:31])


def test_plot_occasional_noise_both_panels(tmp_path):
    net = _two_layer_net()
    x = torch.randint(0, 256, (8, 1, 4, 4), generator=torch.Generator().manual_seed(6))
    counts, levels = _float_run(net, x)
    for inputs in (x, None):
        d = noise_report(net, counts, levels, ks=[1, 2, 4], inputs=inputs).to_dict()
        plot_occasional_noise(d, tmp_path / "n.png")
        assert (tmp_path / "n.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
