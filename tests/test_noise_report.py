"""Occasional-noise report: exact counting on crafted arrays, JSON, batch merging, relays skipped, and the
measurement on a simulated single layer (zero noise at T = p, the conversion theory of C2)."""
import json

import numpy as np
import pytest
import torch

from na_deploy.ann_eval import ann_forward
from na_deploy.errors import SimulationError
from na_deploy.float_sim import simulate_float
from na_deploy.ir import Conv2d, Dense, FloatNet, Identity, InputNode, NeuronNode, ReadoutNode, Synapse
from na_deploy.noise_report import (firing_rates, format_noise_table, measure_float_noise, merge_noise,
                                    noise_report, occasional_noise)


def test_occasional_noise_counts_exactly():
    levels = {"a": np.array([[0, 1, 2, 2], [1, 1, 0, 2]]), "b": np.array([[3], [0]])}
    counts = {"a": np.array([[0, 2, 4, 3], [2, 3, 0, 4]]), "b": np.array([[6], [1]])}
    rows = occasional_noise(counts, levels, T=4, p_by_node={"a": 2, "b": 3})  # b: 3 does not divide 4 -> skipped
    assert [r.node for r in rows] == ["a"]
    a = rows[0]
    assert (a.k, a.neurons, a.samples, a.differ, a.over, a.under, a.abs_error, a.spikes) == (2, 4, 2, 2, 1, 1, 2, 18)
    assert a.share == pytest.approx(2 / 8) and a.firing_rate == pytest.approx(18 / (8 * 4))
    assert a.mean_abs_error_levels == pytest.approx(2 / (2 * 8))
    d = json.loads(json.dumps(a.to_dict()))
    assert d["share"] == 0.25 and d["node"] == "a"


def test_roles_filter_and_errors():
    levels = {"a": np.zeros((1, 2)), "a.relay1": np.zeros((1, 2))}
    counts = {"a": np.zeros((1, 2)), "a.relay1": np.ones((1, 2))}
    rows = occasional_noise(counts, levels, 2, {"a": 2, "a.relay1": 2}, roles={"a": "layer", "a.relay1": "relay"})
    assert [r.node for r in rows] == ["a"] and rows[0].differ == 0
    with pytest.raises(SimulationError, match="no layer"):
        occasional_noise(counts, levels, 3, {"a": 2})
    with pytest.raises(SimulationError, match=r"node a: spike counts have shape \(1, 3\)"):
        occasional_noise({"a": np.zeros((1, 3))}, levels, 2, {"a": 2})


def test_merge_equals_one_measurement_over_all_samples():
    rng = np.random.default_rng(0)
    lv = rng.integers(0, 3, size=(10, 3, 4))
    ct = np.clip(2 * lv + rng.integers(-1, 2, size=lv.shape), 0, 4)
    whole = occasional_noise({"x": ct}, {"x": lv}, 4, {"x": 2})
    parts = merge_noise(occasional_noise({"x": ct[:4]}, {"x": lv[:4]}, 4, {"x": 2}),
                        occasional_noise({"x": ct[4:]}, {"x": lv[4:]}, 4, {"x": 2}))
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
    assert rep.rows[1][0].differ == 0 and rep.rows[1][0].samples == 32
    assert all(row.T == 2 * k for k in (1, 2, 4) for row in rep.rows[k])
    assert rep.rows[1][0].firing_rate == pytest.approx(r.firing_rates(2)["l1"])
    json.dumps(rep.to_dict())
    table = format_noise_table(rep)
    assert "l1" in table and "l2.relay1" not in table and "noise@k=4" in table and "all layers" in table
    with pytest.raises(SimulationError, match="no spike counts for layer l1 at T=16"):
        noise_report(net, r.counts, levels, ks=[8])
    streamed = measure_float_noise(net, x, ks=[1, 2, 4], batch_size=5, device="cpu", progress=False)
    for k in (1, 2, 4):  # float32 in the streamed run: same counts on this dyadic net
        assert [row.to_dict() for row in streamed.rows[k]] == [row.to_dict() for row in rep.rows[k]]
