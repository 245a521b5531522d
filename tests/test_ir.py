"""IR: validation, HDF5 round trip over every node and op type, determinism, corrupt files, delay balancing."""
import hashlib

import h5py
import numpy as np
import pytest

from na_deploy.convert.delays import balance_delays
from na_deploy.errors import IRError
from na_deploy.ir import (AvgPool2d, Conv2d, Dense, FloatNet, Identity, InputNode, IntNet, IntNeuronNode,
                          IntReadoutNode, NeuronNode, ReadoutNode, Synapse)
from na_deploy.io import load_net, save_net
from na_deploy.testing import TOPOLOGIES, random_intnet


def _floatnet(rng=np.random.default_rng(0)):
    inp = InputNode((1, 8, 8), [1 / 255])
    c1 = NeuronNode("c1", (4, 8, 8), [Synapse("input", Conv2d(rng.normal(size=(4, 1, 3, 3)), 1, 1))],
                    threshold=1.5, p=2, bias=rng.normal(size=4))
    c2 = NeuronNode("c2", (4, 8, 8), [Synapse("c1", Conv2d(rng.normal(size=(4, 2, 3, 3)), 1, 1, groups=2))],
                    threshold=0.7, p=3)
    c3 = NeuronNode("c3", (4, 8, 8), [Synapse("c2", Conv2d(rng.normal(size=(4, 4, 3, 3)), 1, 1)),
                                      Synapse("c1", Identity(1.0))], threshold=1.0, p=2)
    p = NeuronNode("p", (4, 4, 4), [Synapse("c3", AvgPool2d(2, 2, 0.25))], threshold=1.0, p=2)
    r = ReadoutNode("fc", (10,), [Synapse("p", Dense(rng.normal(size=(10, 64))))], bias=rng.normal(size=10))
    return FloatNet(inp, [c1, c2, c3, p], r, meta={"model": "test", "p": 2})


def _assert_same(a, b):
    assert type(a) is type(b) and a.meta == b.meta
    assert a.input.shape == b.input.shape and np.array_equal(a.input.channel_scale, b.input.channel_scale)
    for x, y in zip(a.all_nodes(), b.all_nodes(), strict=True):
        assert type(x) is type(y) and x.name == y.name and x.shape == y.shape
        for f in x.__dataclass_fields__:
            if f == "inputs":
                continue
            vx, vy = getattr(x, f), getattr(y, f)
            assert np.array_equal(vx, vy), f
        for sx, sy in zip(x.inputs, y.inputs, strict=True):
            assert (sx.source, sx.exponent, type(sx.op)) == (sy.source, sy.exponent, type(sy.op))
            for f in sx.op.__dataclass_fields__:
                assert np.array_equal(getattr(sx.op, f), getattr(sy.op, f)), f
                assert np.asarray(getattr(sx.op, f)).dtype.kind == np.asarray(getattr(sy.op, f)).dtype.kind


def test_round_trip_every_node_and_op_type(tmp_path):
    nets = [balance_delays(_floatnet())]
    nets += [random_intnet(np.random.default_rng(i), t) for i, t in enumerate(TOPOLOGIES)]
    kinds = {type(s.op).__name__ for n in nets for node in n.all_nodes() for s in node.inputs}
    nodes = {type(node).__name__ for n in nets for node in n.all_nodes()}
    assert kinds == {"Conv2d", "Dense", "AvgPool2d", "Identity"}
    assert nodes == {"NeuronNode", "ReadoutNode", "IntNeuronNode", "IntReadoutNode"}
    for i, net in enumerate(nets):
        save_net(net, tmp_path / f"{i}.nad.h5")
        _assert_same(net, load_net(tmp_path / f"{i}.nad.h5"))


def test_same_net_same_bytes(tmp_path):
    net = _floatnet()
    save_net(net, tmp_path / "a.nad.h5")
    save_net(net, tmp_path / "b.nad.h5")
    h = [hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() for f in ("a.nad.h5", "b.nad.h5")]
    assert h[0] == h[1]


def test_corrupt_truncated_and_wrong_version(tmp_path):
    net = _floatnet()
    save_net(net, tmp_path / "n.nad.h5")
    data = (tmp_path / "n.nad.h5").read_bytes()
    (tmp_path / "t.nad.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(IRError, match="t.nad.h5"):
        load_net(tmp_path / "t.nad.h5")
    with h5py.File(tmp_path / "n.nad.h5", "r+") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(IRError, match="format_version 99"):
        load_net(tmp_path / "n.nad.h5")
    save_net(net, tmp_path / "m.nad.h5")
    with h5py.File(tmp_path / "m.nad.h5", "r+") as f:
        del f["nodes/0001/inputs/0000/weight"]
    with pytest.raises(IRError, match="missing dataset 'weight'"):
        load_net(tmp_path / "m.nad.h5")
    with pytest.raises(IRError, match="no such file"):
        load_net(tmp_path / "absent.nad.h5")


def test_validation_names_the_node():
    rng = np.random.default_rng(0)
    inp = InputNode((4,))
    with pytest.raises(IRError, match="node a: input from input .* shape"):
        FloatNet(inp, [NeuronNode("a", (3,), [Synapse("input", Dense(rng.normal(size=(2, 4))))])],
                 ReadoutNode("r", (2,), [Synapse("a", Dense(rng.normal(size=(2, 3))))]))
    with pytest.raises(IRError, match="source 'zz' is not an earlier node"):
        FloatNet(inp, [NeuronNode("a", (3,), [Synapse("zz", Dense(rng.normal(size=(3, 4))))])],
                 ReadoutNode("r", (2,), [Synapse("a", Dense(rng.normal(size=(2, 3))))]))
    with pytest.raises(IRError, match="threshold must be finite and > 0"):
        NeuronNode("a", (3,), [Synapse("input", Dense(np.ones((3, 4))))], threshold=0.0)
    with pytest.raises(IRError, match="integer weights"):
        IntNet(inp, [IntNeuronNode("a", (3,), [Synapse("input", Dense(np.ones((3, 4))))], threshold=2)],
               IntReadoutNode("r", (2,), [Synapse("a", Dense(np.ones((2, 3), dtype=int)))]))


def test_balance_delays_inserts_exact_relays_C3():
    net = _floatnet()
    assert not net.is_balanced()
    b = balance_delays(net)
    d = b.depths()
    relay = b.node("c1.relay1")
    assert relay.role == "relay" and relay.threshold == b.node("c1").threshold
    assert relay.precharge == relay.threshold / 2
    assert d["c1.relay1"] == d["c2"] == 2 and d["c3"] == 3
    assert [s.source for s in b.node("c3").inputs] == ["c2", "c1.relay1"]


def test_window_starts_are_the_depths_plus_T_per_accumulate_source_C3():
    """The IR's one window rule (`na_deploy.ir.timing`): per-step models start at their depth, a consumer of an
    "accumulate" node T steps later; the slot is the readout's start + rho + T; uneven arrivals are refused."""
    from na_deploy.ir import neuron_model
    from na_deploy.ir.timing import steps_per_inference, window_starts

    net = random_intnet(np.random.default_rng(3), "residual_identity", size=3)
    assert window_starts(net, 5) == net.depths()
    assert steps_per_inference(net, 5) == net.depths()[net.readout.name] + 5
    assert steps_per_inference(net, 5, 2) == net.depths()[net.readout.name] + 2 + 5
    net.node("block.conv1").neuron = neuron_model("accumulate")
    with pytest.raises(IRError, match=r"node block.out: inputs arrive at different steps"):
        window_starts(net, 3)
    net.node("stem.relay1").neuron = neuron_model("accumulate")
    starts = window_starts(net, 3)
    assert starts["block.out"] == net.depths()["block.out"] + 3 and starts["stem"] == net.depths()["stem"]
