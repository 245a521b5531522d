"""Issue 19: conversion coverage for networks from outside the registry (docs/contract.md C2 rules in
na_deploy/convert/compose.py): Dropout, ReLU6, the max-pool stem (padded average pool), uneven / upsampling
adaptive pools, channel concatenation, linear ops composed without an activation between (or carried by a
graded node where no composition is exact), and the refusals (count_include_pad=False). Each model:
quantize_model -> to_floatnet (float64 self-check) -> fixed point that fits Loihi 2 -> the reference simulator
runs (Lava on 1 sample for the padded pool and the concatenation)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from na_deploy.convert import to_floatnet
from na_deploy.errors import ConversionError, ModelError
from na_deploy.training.surgery import calibrate_step_sizes, quantize_model
from helpers import deploy_random, random_qat  # tests/helpers.py



class Stem(nn.Module):
    """conv -> BN -> ReLU6 -> MaxPool(3, 2, 1) -> activation -> Dropout -> Linear: the padded-pool stem."""

    def __init__(self, act_after_pool=True):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6()
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.act2 = nn.ReLU() if act_after_pool else nn.Identity()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.drop, self.fc = nn.Dropout(0.5), nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        x = self.act2(self.pool(self.act(self.bn(self.conv(x)))))
        x = F.relu(self.conv2(x))
        return self.fc(self.drop(torch.flatten(x, 1)))


class Concat(nn.Module):
    """Two branches (1x1 and 3x3 convs) concatenated, BN on the concatenation, ReLU, conv, padded pool, fc."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.b1, self.b3 = nn.Conv2d(4, 3, 1), nn.Conv2d(4, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(12)
        self.next = nn.Conv2d(12, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 4)

    def forward(self, x):
        a = F.relu(self.stem(x))
        y = torch.cat([a, F.relu(self.b1(a)), F.relu(self.b3(a))], 1)  # an activation and two new maps
        y = F.relu(self.bn(y))
        y = F.relu(self.next(torch.cat([y], 1)))
        y = F.avg_pool2d(y, 3, 2, 1)
        return self.fc(torch.flatten(F.relu(y), 1))


class GoogLeNetLike(nn.Module):
    """A concatenation feeding a padded conv directly (pointwise embedding commutes with padding), then a global
    pool of the concatenation and a Linear on it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.b1, self.b2 = nn.Conv2d(4, 3, 1), nn.Conv2d(4, 2, 3, padding=1)
        self.next = nn.Conv2d(5, 4, 3, padding=1)
        self.fc = nn.Linear(9, 3)

    def forward(self, x):
        a = F.relu(self.stem(x))
        y = torch.cat([F.relu(self.b1(a)), F.relu(self.b2(a))], 1)
        z = F.relu(self.next(y))
        g = torch.cat([F.adaptive_avg_pool2d(y, 1), F.adaptive_avg_pool2d(z, 1)], 1)
        return self.fc(self.drop(torch.flatten(g, 1))) if hasattr(self, "drop") else self.fc(torch.flatten(g, 1))


class Adaptive(nn.Module):
    """AdaptiveAvgPool2d with uneven windows (5x5 -> 3x3) and upsampling (after a 1x1 map -> 7x7, as VGG on
    small images), each then Flatten + Linear."""

    def __init__(self, out_size):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(out_size)
        self.fc = nn.Linear(4 * out_size * out_size, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(F.relu(self.conv(x))), 1))


class PoolThenConv(nn.Module):
    """relu -> pool -> conv with no activation between (the ResNet stem, squeezenet)."""

    def __init__(self, pool, conv_padding):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = pool
        self.conv2 = nn.Conv2d(4, 4, 3, padding=conv_padding)
        self.fc = nn.Linear(4 * 2 * 2 if conv_padding == 0 else 4 * 4 * 4, 3)

    def forward(self, x):
        y = self.conv2(self.pool(F.relu(self.conv(x))))
        return self.fc(torch.flatten(F.relu(y), 1))


class CeilPool(nn.Module):
    """MaxPool2d(3, 2, ceil_mode=True) on an 8x8 map: 4x4 out, the last window partial (GoogLeNet's pools), then
    an activation (`act`) or a padded conv reading the pool directly."""

    def __init__(self, act: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.act = nn.ReLU() if act else nn.Identity()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        y = self.conv2(self.act(self.pool(F.relu(self.conv(x)))))
        return self.fc(torch.flatten(F.relu(y), 1))


def test_max_pool_stem_relu6_and_dropout_convert():
    net, _ = deploy_random(Stem(), (3, 8, 8))
    assert any(n.name for n in net.nodes)


@pytest.mark.lava
def test_padded_pool_is_bit_exact_on_lava():
    deploy_random(Stem(), (3, 8, 8), lava=True)


def test_concatenation_converts():
    deploy_random(Concat(), (3, 8, 8))


@pytest.mark.lava
def test_concatenation_is_bit_exact_on_lava():
    deploy_random(Concat(), (3, 8, 8), lava=True)


def test_concatenation_into_padded_conv_and_global_pool():
    deploy_random(GoogLeNetLike(), (3, 6, 6))


@pytest.mark.parametrize("size,out", [(5, 3), (1, 7), (6, 4)])
def test_adaptive_pool_any_size_converts(size, out):
    net, _ = deploy_random(Adaptive(out), (3, size, size))
    assert net.readout.inputs[0].op.weight.shape == (3, 4 * size * size)


def test_pool_then_conv_without_padding_composes():
    deploy_random(PoolThenConv(nn.MaxPool2d(3, 2, 1), 0), (3, 8, 8))


def test_pool_then_padded_conv_goes_through_a_graded_node():
    """The conv reads the zero padding of the pool's output: no single exact synapse, so the pool's map becomes a
    graded node (contract C2 "Graded nodes"; tests/test_graded_node.py has the rest)."""
    net, fixed = deploy_random(PoolThenConv(nn.MaxPool2d(3, 2, 1), 1), (3, 8, 8))
    assert [(n.name, n.neuron.name) for n in net.nodes if n.neuron.graded] == [("conv2.graded", "graded")]
    assert net.node("quant_relu_1").inputs[0].source == "conv2.graded"


@pytest.mark.parametrize("act", [True, False])
def test_ceil_mode_max_pool_with_partial_windows_converts(act):
    """quantize_model turns a ceil-mode max-pool into AvgPool2d(ceil_mode=True, divisor_override=kh*kw): every
    window, the partial ones too, divided by kh*kw, i.e. one conv with extra zero padding (contract C2)."""
    q = random_qat(CeilPool(act), (3, 8, 8))
    assert q.pool.divisor_override == 9 and q.pool.ceil_mode
    deploy_random(CeilPool(act), (3, 8, 8))


def test_functional_ceil_mode_max_pool_converts():
    class Functional(CeilPool):
        def forward(self, x):
            y = F.max_pool2d(F.relu(self.conv(x)), 3, 2, ceil_mode=True)
            return self.fc(torch.flatten(F.relu(self.conv2(F.relu(y))), 1))

    deploy_random(Functional(True), (3, 8, 8))


@pytest.mark.lava
def test_ceil_mode_pool_is_bit_exact_on_lava():
    deploy_random(CeilPool(True), (3, 8, 8), lava=True)


def test_ceil_mode_average_pool_dividing_partial_windows_by_their_size_is_refused():
    model = CeilPool(True)
    q = random_qat(model, (3, 8, 8))
    q.pool = nn.AvgPool2d(3, 2, ceil_mode=True)
    with pytest.raises(ConversionError, match="ceil_mode=True adds partial windows"):
        to_floatnet(q, (3, 8, 8), 1.0 / 255)


def test_count_include_pad_false_is_refused():
    q = random_qat(PoolThenConv(nn.AvgPool2d(3, 2, 1, count_include_pad=False), 0), (3, 8, 8))
    with pytest.raises(ConversionError, match="count_include_pad=False"):
        to_floatnet(q, (3, 8, 8), 1.0 / 255)


def test_relu6_becomes_quant_relu_with_p_s_below_6():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with torch.no_grad():
        model[0].weight.mul_(50)  # activations far above 6: the clip at 6 would bind
    q = random_qat(model, (3, 8, 8))
    qr = q[1]
    assert qr.upper == 6.0 and qr.p * float(qr.step_size.detach()) <= 6.0 + 1e-9


@pytest.mark.parametrize("act", [nn.GELU(), nn.SiLU(), nn.Hardswish(), nn.Hardtanh(-1, 1)])
def test_activations_without_exact_form_are_refused_at_quantize_time(act):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), act, nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with pytest.raises(ModelError, match=r"^1: activation .* not supported"):
        quantize_model(model, 2)


def test_attention_is_refused_at_quantize_time():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 1, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x)[0]

    with pytest.raises(ModelError, match=r"attn: MultiheadAttention is not supported"):
        quantize_model(Attn(), 2)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2", "vgg11_bn", "squeezenet1_1", "googlenet"])
def test_torchvision_classifiers_convert_fit_and_simulate(name):
    """torchvision's builders at 32x32, 10 classes, random weights: quantize (max-pool -> average pool, ReLU6 ->
    QuantReLU) -> FloatNet with the float64 self-check -> Loihi 2 fixed point that fits -> the reference runs.
    The ResNet stem and MobileNetV2's linear bottlenecks go through graded nodes (contract C2), SqueezeNet's
    pooled output becomes the readout, GoogLeNet's ceil-mode max-pools divide partial windows by kh*kw."""
    from na_deploy.hw_targets import get_target
    from na_deploy.training.model_spec import build_external

    torch.manual_seed(0)
    q = quantize_model(build_external(f"torchvision:{name}", 3, 10, 32).eval(), 2, True).eval()
    calibrate_step_sizes(q, torch.rand(4, 3, 32, 32))
    net = to_floatnet(q, (3, 32, 32), 1.0 / 255)
    target = get_target("loihi2")
    fixed = target.to_fixed_point(net, 8)
    assert not target.check_fit(fixed, 8)
    graded = [n.name for n in net.nodes if n.neuron.graded]
    # ResNet-50's stem pool feeds 1x1 convs only (pointwise: composed exactly), so no graded node there
    # GoogLeNet: an inception's branch-4 pool on the previous ceil-mode pool
    assert bool(graded) == (name in ("resnet18", "mobilenet_v2", "googlenet")), graded
    x = torch.randint(0, 256, (1, 3, 32, 32), generator=torch.Generator().manual_seed(1)).numpy()
    assert target.reference_simulate(fixed, x, 8).readout.shape == (1, 10)
