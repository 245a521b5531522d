"""Loihi 2 resource / energy report: exact counts on hand-checkable nets."""
import numpy as np

from na_deploy.hw_targets.loihi2.reference.slow import slow_reference_simulate
from na_deploy.hw_targets.loihi2.resources import EnergyModel, fan_out_map, format_resource_report, resource_report
from na_deploy.ir import AvgPool2d, Conv2d, Dense, Identity, InputNode, IntNet, IntNeuronNode, IntReadoutNode, Synapse


def test_fan_out_maps():
    fo = fan_out_map(Conv2d(np.ones((2, 1, 3, 3), dtype=int), 1, 1), (1, 4, 4))
    assert fo[0, 0, 0] == 2 * 4 and fo[0, 1, 1] == 2 * 9 and fo[0, 0, 1] == 2 * 6
    w = np.array([[1, 0, 2], [0, 0, 3]])
    assert list(fan_out_map(Dense(w), (3,))) == [1, 0, 2]
    assert fan_out_map(AvgPool2d(2, 2, 1), (1, 4, 4)).sum() == 16
    assert fan_out_map(Identity(0), (5,)).sum() == 0


def test_counts_synops_and_energy():
    inp = InputNode((3,))
    a = IntNeuronNode("a", (2,), [Synapse("input", Dense(np.array([[2, 2, 0], [0, 2, 2]])))], threshold=2, precharge=1)
    r = IntReadoutNode("r", (2,), [Synapse("a", Dense(np.array([[2, 0], [2, 2]])))])
    net = IntNet(inp, [a], r)
    x = np.array([[1, 0, 1]])
    tr = slow_reference_simulate(net, x, 4)
    assert tr.spike_counts["a"].tolist() == [[4, 4]]
    e = EnergyModel(synop_pj=10.0, neuron_update_pj=1.0, spike_pj=0.5)
    rep = resource_report(net, tr, energy=e, inputs=x)
    rows = {r_["node"]: r_ for r_ in rep["nodes"]}
    assert rows["a"]["synapses"] == 4 and rows["r"]["synapses"] == 3
    assert rep["total"] == {"neurons": 4, "synapses": 7, "cores": 2, "chips": 1}
    # a's neuron 0 reaches 2 readout neurons, neuron 1 reaches 1: 4*2 + 4*1 = 12 synops from spikes
    assert rows["a"]["synops_per_inference"] == 12
    # input pixels 0 and 2 are non-zero, each fans out to 1 neuron, sent every one of T=4 steps
    assert rep["input_synops_per_inference"] == 8
    p = rep["per_inference"]
    assert p["synops"] == 20 and p["spikes"] == 8 and p["neuron_updates"] == 16
    assert np.isclose(p["energy_uJ"], (20 * 10 + 16 * 1 + 8 * 0.5) * 1e-6)
    assert "total" in format_resource_report(rep)
