"""Graded nodes (issue 19 item 2; docs/contract.md C2 "Graded nodes", C3, C5): a linear op between two activations
that cannot be composed into one exact synapse is carried by a non-spiking node that forwards its integer input
sum as a graded spike, delay-balanced like a relay. Pool then padded conv (the torchvision ResNet stem), a
MobileNetV2-style linear bottleneck into a residual add, the float64 self-check, the fixed point (exact pool
nodes, 24-bit graded payload), both references and Lava bit-exact (C6), and the refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from na_deploy.convert import to_floatnet
from na_deploy.convert.api import check_against_torch
from na_deploy.errors import ConversionError, FitError, IRError
from na_deploy.hw_targets import get_target
from na_deploy.hw_targets.loihi2.fit import check_fit
from na_deploy.hw_targets.loihi2.fixed_point import to_fixed_point_with_report
from na_deploy.hw_targets.loihi2.reference import fused
from na_deploy.hw_targets.loihi2.reference.slow import slow_reference_simulate
from na_deploy.ir import GRADED, IntNet, replace_nodes
from helpers import random_qat  # tests/helpers.py

TARGET = get_target("loihi2")
T = 8




class PoolStem(nn.Module):
    """torchvision's ResNet stem and first block: conv -> BN -> ReLU -> MaxPool(3, 2, 1) -> [conv(padding 1) ->
    BN -> ReLU -> conv(padding 1) -> BN] + the pool output -> ReLU -> fc: the pool reads as a graded node."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv3, self.bn3 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        y = self.pool(F.relu(self.bn1(self.conv1(x))))
        h = F.relu(self.bn2(self.conv2(y)))
        y = F.relu(self.bn3(self.conv3(h)) + y)
        return self.fc(torch.flatten(y, 1))


class Bottleneck(nn.Module):
    """MobileNetV2's inverted residual: expand 1x1 + BN + ReLU6, depthwise 3x3 + BN + ReLU6, project 1x1 + BN
    (linear: no activation), + the input when the shapes agree."""

    def __init__(self, cin: int, cout: int, expand: int = 2):
        super().__init__()
        h = cin * expand
        self.res = cin == cout
        self.block = nn.Sequential(nn.Conv2d(cin, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                                   nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                                   nn.Conv2d(h, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.block(x) if self.res else self.block(x)


class MiniMobileNet(nn.Module):
    """stem -> bottleneck (no residual) -> two bottlenecks with residual adds (linear sums feeding the next
    block) -> 1x1 conv + BN + ReLU6 -> global pool -> fc."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU6())
        self.b1, self.b2, self.b3 = Bottleneck(4, 3), Bottleneck(3, 3), Bottleneck(3, 3)
        self.head = nn.Sequential(nn.Conv2d(3, 6, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU6())
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        y = self.head(self.b3(self.b2(self.b1(self.stem(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def _convert(model, shape):
    q = random_qat(model, shape)
    net = to_floatnet(q, shape, 1.0 / 255)
    fixed, report = to_fixed_point_with_report(net, max_timesteps=T)
    return q, net, fixed, report


def _x(shape, n=3, seed=1):
    return torch.randint(0, 256, (n,) + tuple(shape), generator=torch.Generator().manual_seed(seed)).numpy()


def _assert_same(a, b):
    assert set(a.spike_counts) == set(b.spike_counts)
    for k in a.spike_counts:
        assert np.array_equal(a.spike_counts[k], b.spike_counts[k]), k
    assert np.array_equal(a.readout, b.readout)


@pytest.fixture(scope="module")
def stem():
    return _convert(PoolStem(), (3, 8, 8))


@pytest.fixture(scope="module")
def mobile():
    return _convert(MiniMobileNet(), (3, 6, 6))


def test_pool_then_padded_conv_goes_through_a_graded_node_C2(stem):
    q, net, fixed, report = stem
    graded = [n for n in net.nodes if n.neuron.graded]
    assert [n.name for n in graded if n.role == "layer"] == ["conv2.graded"]
    g = net.node("conv2.graded")
    assert g.threshold == 1.0 and g.precharge == 0.0 and g.inputs[0].op.kind == "conv2d"
    # the pool feeds the residual add too: one graded relay carries it to the block's output (C3)
    assert [n.name for n in graded if n.role == "relay"] == ["conv2.graded.relay1"]
    assert net.is_balanced() and not check_fit(fixed, limits=TARGET.limits, timesteps=T)


def test_pool_graded_node_is_exact_in_fixed_point_C5(stem):
    _, _, fixed, report = stem
    rows = {r.node: r for r in report.nodes}
    assert rows["conv2.graded"].kind == "graded" and rows["conv2.graded"].max_rel_error == 0.0
    assert rows["conv2.graded"].threshold_int is None
    g = fixed.node("conv2.graded")
    assert np.abs(g.inputs[0].op.weight).max() == 1  # a 3x3 pool of spikes: payload <= 9
    relay = fixed.node("conv2.graded.relay1")
    assert relay.scale == g.scale and int(relay.inputs[0].op.weight) == 1  # the relay forwards the payload as is


def test_linear_bottleneck_into_residual_add_converts_C2(mobile):
    _, net, fixed, report = mobile
    graded = [n.name for n in net.nodes if n.neuron.graded and n.role == "layer"]
    # b1's linear output composes exactly into b2's pointwise expand (no node); the residual sums that feed
    # b3 and the head are graded nodes, the second summing the first (identity) and b3's projection (conv)
    assert graded == ["b3.block.0.graded", "head.0.graded"]
    assert {s.op.kind for s in net.node("head.0.graded").inputs} == {"conv2d", "identity"}
    assert any(n.neuron.graded and n.role == "relay" for n in net.nodes)  # the residual sum waits 2 hops
    assert not check_fit(fixed, limits=TARGET.limits, timesteps=T)


@pytest.mark.parametrize("which", ["stem", "mobile"])
def test_float64_self_check_passes_with_graded_nodes_C2(which, stem, mobile):
    q, net, _, _ = stem if which == "stem" else mobile
    assert check_against_torch(net, q, n_images=4, seed=3) <= 1e-6 * 1e3


@pytest.mark.parametrize("which", ["stem", "mobile"])
def test_slow_fast_and_fused_references_agree_C6(which, stem, mobile):
    _, net, fixed, _ = stem if which == "stem" else mobile
    x = _x(net.input.shape)
    slow = slow_reference_simulate(fixed, x, T)
    fast = TARGET.reference_simulate(fixed, x, T)
    with fused.disabled():
        passes = TARGET.reference_simulate(fixed, x, T)
    torch_engine = TARGET.reference_simulate(fixed, x, T, device="cpu", engine="torch")  # the CUDA engine's code
    _assert_same(slow, fast)
    _assert_same(slow, passes)
    _assert_same(slow, torch_engine)
    g = [n.name for n in fixed.nodes if n.neuron.graded][0]
    assert np.abs(slow.spike_counts[g]).sum() > 0  # the graded node forwarded sums


def test_graded_payload_is_checked_against_24_bits_C5(stem):
    _, _, fixed, _ = stem
    import copy

    g = copy.deepcopy(fixed.node("conv2.graded"))
    g.inputs[0].op.weight = g.inputs[0].op.weight * 10 ** 6  # 36 x 10^6 > 2^23 - 1
    big = replace_nodes(fixed, [g if n.name == g.name else n for n in fixed.nodes])
    v = [str(x) for x in check_fit(big, limits=TARGET.limits, timesteps=T) if x.node == "conv2.graded"]
    assert any("graded payload bound" in x and "24 bits signed" in x for x in v), v


def test_the_graded_model_forwards_its_sum():
    v = np.array([-5, 0, 7, 300])
    nv, z = GRADED.fire_and_reset(v.copy(), 1)
    assert z.tolist() == [-5, 0, 7, 300] and nv.tolist() == [0, 0, 0, 0]
    vt = torch.tensor([1.5, -2.0])
    zt, pay = GRADED.emit_inplace(vt, 1.0)
    assert pay.tolist() == [1.5, -2.0] and vt.tolist() == [0.0, 0.0]
    assert GRADED.default_precharge(1.0) == 0.0 and GRADED.spike_dtype == np.int64


@pytest.mark.parametrize("mode", ["zero", "negative", "accumulate"])
def test_other_neuron_modes_with_graded_nodes_are_refused(mode):
    q = random_qat(PoolStem(), (3, 8, 8))
    with pytest.raises(ConversionError, match=rf"^neuron mode {mode}: node conv2.graded is a graded node"):
        to_floatnet(q, (3, 8, 8), 1.0 / 255, neuron=mode)


def test_offset_calibration_with_graded_nodes_is_refused(stem):
    from na_deploy.convert.neuron_modes import convert_inference_mode

    with pytest.raises(ConversionError, match="^offset_steps 2: node conv2.graded is a graded node"):
        convert_inference_mode(stem[2], "subtract", 2)


def test_nir_export_of_graded_nodes_is_refused(stem):
    from na_deploy.io.nir_io import to_nir

    with pytest.raises(IRError, match="^NIR export: node conv2.graded is a graded node"):
        to_nir(stem[1])


def test_fixed_point_refuses_graded_nodes_in_another_mode(stem):
    net = stem[1]
    other = replace_nodes(net, [n if n.neuron.graded else _with(n, "negative") for n in net.nodes])
    with pytest.raises(FitError, match="a graded node in a net of neuron model negative"):
        to_fixed_point_with_report(other, max_timesteps=T)


def _with(node, model):
    import copy

    from na_deploy.ir import neuron_model

    node = copy.copy(node)
    node.neuron = neuron_model(model)
    return node


def test_fidelity_layer_differences_skip_graded_nodes(stem):
    from na_deploy.verify.fidelity import layer_differences

    fixed = stem[2]
    counts = {n.name: np.zeros((1, *n.shape), dtype=np.int64) for n in fixed.nodes}
    rows = layer_differences(fixed, counts, counts)
    names = {r["node"] for r in rows}
    assert "conv2.graded" not in names and "conv2.graded.relay1" not in names and names


def test_float_snn_runs_with_graded_nodes(stem):
    from na_deploy.simulate.float_snn import simulate_float

    net = stem[1]
    res = simulate_float(net, _x(net.input.shape), [T], progress=False, count_timesteps=[T])
    assert "conv2.graded" not in {k for k, v in res.spikes[T].items() if v}
    assert res.predictions[T].shape == (3,)


def test_graded_nets_round_trip_the_hdf5_file(stem, tmp_path):
    from na_deploy.io import load_net, save_net

    save_net(stem[2], tmp_path / "g.nad.h5")
    back = load_net(tmp_path / "g.nad.h5")
    assert isinstance(back, IntNet) and back.node("conv2.graded").neuron is GRADED


@pytest.mark.lava
@pytest.mark.parametrize("which", ["stem", "mobile"])
def test_reference_equals_lava_with_graded_nodes_C6(which, stem, mobile):
    from na_deploy.verify.bit_exact import verify

    _, net, fixed, _ = stem if which == "stem" else mobile
    x = _x(net.input.shape, n=2).astype("uint8")
    report = verify(fixed, x, T, TARGET, TARGET.backend("lava", fixed))
    assert report.equal


def _floored_relay(fixed):
    """The stem net with its graded relay's gain 5 * 2**-2 (a negative exponent floors y >> 2, C5)."""
    import copy

    from na_deploy.ir import Identity, Synapse

    r = copy.deepcopy(fixed.node("conv2.graded.relay1"))
    r.inputs = [Synapse(r.inputs[0].source, Identity(5), -2)]
    return replace_nodes(fixed, [r if n.name == r.name else n for n in fixed.nodes])


def test_negative_exponent_from_a_graded_source_floors_in_both_references_C5(stem):
    net = _floored_relay(stem[2])
    assert not check_fit(net, limits=TARGET.limits, timesteps=T)
    x = _x(net.input.shape)
    slow, fast = slow_reference_simulate(net, x, T), TARGET.reference_simulate(net, x, T)
    _assert_same(slow, fast)
    g = slow.spike_counts["conv2.graded"]
    assert (slow.spike_counts["conv2.graded.relay1"] <= (5 * g) // 4).all()  # per-step floors sum below


@pytest.mark.lava
def test_negative_exponent_from_a_graded_source_is_bit_exact_on_lava_C6(stem):
    from na_deploy.verify.bit_exact import verify

    net = _floored_relay(stem[2])
    assert verify(net, _x(net.input.shape, n=2).astype("uint8"), T, TARGET, TARGET.backend("lava", net)).equal


def test_resources_count_one_graded_message_per_neuron_and_step(stem):
    from na_deploy.hw_targets.loihi2.resources import resource_report

    fixed = stem[2]
    x = _x(fixed.input.shape, n=2)
    rows = {r["node"]: r for r in resource_report(fixed, TARGET.reference_simulate(fixed, x, T), inputs=x)["nodes"]}
    assert rows["conv2.graded"]["spikes_per_inference"] == rows["conv2.graded"]["neurons"] * T


def test_balance_ratio_shares_the_24_bit_budget_with_the_consumers_C5():
    from na_deploy.hw_targets.loihi2.graded_scale import balance_ratio
    from na_deploy.hw_targets.loihi2.limits import LOIHI2

    assert balance_ratio(9, [127 * 9], 8, LOIHI2) == 1.0  # a pool node's payload: nothing to share
    r = balance_ratio(1000, [127 * 100, 5], 8, LOIHI2)  # 8 * 12700 * 1000 = 12.1 x the state range
    assert r == pytest.approx((8 * 12700 * 1000 / (2 ** 23 - 1)) ** 0.5)


def test_accuracy_vs_t_measures_noise_of_spiking_layers_only(stem):
    """A graded node (p = 1, no ANN level, no spikes) is no layer of the occasional-noise report: with p = 2
    elsewhere, T = 1 has no layer to measure and the report must not ask for one (the transfer run stopped
    with 'occasional noise at T=1: no layer ...' before)."""
    from na_deploy.evaluate.accuracy import accuracy_vs_timesteps
    from na_deploy.evaluate.occasional_noise import noise_layers

    _, net, fixed, _ = stem
    graded = {n.name for n in net.nodes if n.neuron.graded}
    assert graded and graded.isdisjoint(n.name for n in noise_layers(net))
    x = _x((3, 8, 8), n=4)
    res = accuracy_vs_timesteps(net, fixed, TARGET, x, np.arange(4) % 5, [1, 2, 4, 8], progress=False)
    assert set(res.integer_accuracy) == {1, 2, 4, 8}
    for report in res.noise.values():
        measured = {row.node for rows in report.rows.values() for row in rows}
        assert measured and measured.isdisjoint(graded)
