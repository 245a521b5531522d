"""torch QAT model -> FloatNet (C2, C3, C4, C7): BN folding, pooling folds, every shipped model reproduced by the
FloatNet evaluated as a quantized ANN, refusals by name, checkpoint conversion."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from na_deploy.simulate.ann import ann_forward, argmax_lowest
from na_deploy.training.checkpoint import Checkpoint, cpu_state_dict, save_checkpoint
from na_deploy.convert import convert_checkpoint, fold_batchnorm, to_floatnet
from na_deploy.errors import ConversionError
from na_deploy.io import load_net, save_net
from na_deploy.ir import AvgPool2d, Conv2d, Dense
from na_deploy.models import MODEL_NAMES, build_model
from na_deploy.verify.provenance import made_from
from na_deploy.training.quantizer import QuantReLU
from na_deploy.training.surgery import quantize_model


# ------------------------------------------------------------------------------------------ helpers
def randomize(model: nn.Module, seed: int, s_range=(0.05, 0.6)) -> nn.Module:
    """Random BN statistics / affine and random step sizes (so folding and thresholds are exercised)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=g) * 0.6 - 0.3)
        elif isinstance(m, QuantReLU):
            m.step_size.data.fill_(float(torch.empty(()).uniform_(*s_range, generator=g)))
    return model.eval()


def images(shape, n=4, seed=0):
    return torch.randint(0, 256, (n,) + tuple(shape), generator=torch.Generator().manual_seed(seed))


def torch_logits(model, x, scale, dtype=torch.float64):
    m = copy.deepcopy(model).to(dtype).eval()
    s = torch.as_tensor(np.asarray(scale), dtype=dtype).view(1, -1, 1, 1)
    with torch.no_grad():
        return m(x.to(dtype) * s)


def torch_levels(model, x, scale):
    """Integer level of every QuantReLU (module path -> (B, ...)), from the float64 torch model."""
    m = copy.deepcopy(model).double().eval()
    out, hooks = {}, []
    for name, mod in m.named_modules():
        if isinstance(mod, QuantReLU):
            s = float(mod.step_size.detach().abs())
            hooks.append(mod.register_forward_hook(lambda _m, _i, o, n=name, s=s: out.__setitem__(n, o / s)))
    with torch.no_grad():
        m(x.double() * torch.as_tensor(np.asarray(scale)).view(1, -1, 1, 1))
    return out


KWARGS = {"resnet18": {"base_width": 8}, "resnet34": {"base_width": 4}, "resnet50": {"base_width": 4},
          "resnet20": {"base_width": 8}, "tiny_resnet": {"widths": (8, 16)}, "digits_cnn": {}}


def shipped(name, p=2, seed=0, c=3, size=8, noise_adaptor=True):
    torch.manual_seed(seed)
    m = build_model(name, in_channels=c, num_classes=10, input_size=size, **KWARGS[name])
    return randomize(quantize_model(m, p, noise_adaptor), seed)


# ------------------------------------------------------------------------------------------ BN folding
def test_fold_batchnorm_is_exact_for_conv_and_linear():
    torch.manual_seed(1)
    conv, bn = nn.Conv2d(3, 5, 3, padding=1, bias=True).double(), nn.BatchNorm2d(5).double()
    lin, bn1 = nn.Linear(6, 4).double(), nn.BatchNorm1d(4).double()
    for b in (bn, bn1):
        randomize(nn.Sequential(b), 3)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    w, b = fold_batchnorm(conv.weight.detach().numpy(), conv.bias.detach().numpy(), bn.eval())
    ref = bn(conv(x))
    got = F.conv2d(x, torch.as_tensor(w), torch.as_tensor(b), padding=1)
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)
    y = torch.randn(3, 6, dtype=torch.float64)
    w, b = fold_batchnorm(lin.weight.detach().numpy(), None, bn1.eval())
    ref = bn1(F.linear(y, lin.weight))
    assert torch.allclose(y @ torch.as_tensor(w).T + torch.as_tensor(b), ref, rtol=1e-12, atol=1e-12)


def test_batchnorm_without_running_stats_is_refused():
    bn = nn.BatchNorm2d(2, track_running_stats=False)
    with pytest.raises(ConversionError, match="running stat"):
        fold_batchnorm(np.ones((2, 1, 1, 1)), None, bn)


# ----------------------------------------------------------------------------- every shipped model (C2)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shipped_model_floatnet_ann_equals_torch(name):
    """C2/C4: the FloatNet as a quantized ANN on raw pixels reproduces the QAT model's eval logits and levels."""
    size = 8
    scale = np.array([1 / (255 * 0.3), 1 / (255 * 0.25), 1 / (255 * 0.2)])
    model = shipped(name, p=3 if name == "resnet20" else 2, seed=len(name), size=size)
    net = to_floatnet(model, (3, size, size), scale, name=name)
    assert net.is_balanced() and net.meta["model"] == name and net.meta["noise_adaptor"] is True
    x = images((3, size, size), n=6, seed=1)
    ref = torch_logits(model, x, scale)
    got, levels = ann_forward(net, x, device="cpu")
    assert torch.allclose(got, ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()))
    assert torch.equal(argmax_lowest(got), argmax_lowest(ref))
    ref_levels = torch_levels(model, x, scale)
    assert set(ref_levels) <= set(levels)  # + relays
    for k, v in ref_levels.items():
        assert torch.equal(levels[k].double(), v), k
    # levels actually vary (the check would be empty on a dead or saturated net)
    assert any(0 < float(lv.double().mean()) < net.node(k).p for k, lv in levels.items())


@pytest.mark.parametrize("name,c,size", [("digits_cnn", 1, 8), ("tiny_resnet", 1, 12)])
def test_float32_torch_model_matches_floatnet(name, c, size):
    """A float32 torch model (as trained) against the FloatNet in float32: allclose and identical predictions."""
    model = shipped(name, p=2, seed=5, c=c, size=size)
    scale = [1 / (255 * 0.35)]
    net = to_floatnet(model, (c, size, size), scale)
    x = images((c, size, size), n=16, seed=2)
    ref = torch_logits(model, x, scale, torch.float32)
    got, _ = ann_forward(net, x, device="cpu", dtype=torch.float32)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    assert torch.equal(argmax_lowest(got), argmax_lowest(ref))


def test_residual_structure_names_and_relays():
    model = shipped("tiny_resnet", p=2, seed=0, c=1, size=12)
    net = to_floatnet(model, (1, 12, 12), [0.01])
    names = [n.name for n in net.nodes]
    assert names[:2] == ["stem.2", "block1.relu1"] and net.readout.name == "fc"
    add = net.node("block1.relu2")  # relu2(bn2(conv2(.)) + identity shortcut)
    kinds = sorted(type(s.op).__name__ for s in add.inputs)
    assert kinds == ["Conv2d", "Identity"] and add.inputs[1].op.weight == 1.0
    assert "stem.2.relay1" in names and net.node("stem.2.relay1").role == "relay"  # C3 delay balance
    assert isinstance(net.readout.inputs[0].op, Dense)  # global avgpool folded into the readout
    q = model.get_submodule("block1.relu2")
    assert net.node("block1.relu2").threshold == pytest.approx(2 * float(q.step_size.detach()), rel=1e-15)
    assert net.node("block1.relu2").precharge == net.node("block1.relu2").threshold / 2


def test_strided_conv_shortcut_is_conv_synapse():
    model = shipped("resnet20", p=2, seed=0, size=8)
    net = to_floatnet(model, (3, 8, 8), [0.01] * 3)
    node = net.node("stages.1.0.relu2")
    ops = {s.source: s.op for s in node.inputs}
    assert all(isinstance(o, Conv2d) for o in ops.values()) and len(ops) == 2
    assert {o.weight.shape[-1] for o in ops.values()} == {1, 3}


def test_normalisation_folds_into_first_layer_weights():
    """C4: the FloatNet consumes raw uint8; W[:, c] is multiplied by channel_scale[c]."""
    model = shipped("digits_cnn", p=2, seed=0, c=3, size=8)
    scale = np.array([0.5, 2.0, 4.0])
    net = to_floatnet(model, (3, 8, 8), scale)
    conv, bn = model.features[0], model.features[1]
    w, _ = fold_batchnorm(conv.weight.detach().numpy(), None, bn)
    got = net.nodes[0].inputs[0].op.weight
    assert np.allclose(got, w * scale[None, :, None, None], rtol=1e-14, atol=0)
    assert np.array_equal(net.input.channel_scale, scale)


# --------------------------------------------------------------------------------------- pooling folds
class PoolNet(nn.Module):
    """q1 -> avgpool2 -> conv(stride, pad) -> BN -> q2 -> avgpool2 -> q3 (AvgPool2d op) -> pools -> fc."""

    def __init__(self, stride=1, tail="flatten"):
        super().__init__()
        self.conv0, self.bn0, self.q0 = nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), QuantReLU(3)
        self.pool1 = nn.AvgPool2d(2)
        self.conv1, self.bn1, self.q1 = nn.Conv2d(4, 6, 3, stride, 1, bias=True), nn.BatchNorm2d(6), QuantReLU(3)
        self.q2 = QuantReLU(2)
        self.tail = tail
        self.fc = nn.Linear(6 if tail != "flatten" else 6 * (4 // stride) ** 2, 5)  # 16x16 input

    def forward(self, x):
        x = self.q0(self.bn0(self.conv0(x)))
        x = self.q1(self.bn1(self.conv1(self.pool1(x))))
        x = self.q2(F.avg_pool2d(x, 2))
        if self.tail == "mean":
            return self.fc(x.mean((2, 3)))
        if self.tail == "adaptive":
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return self.fc(x.view(x.size(0), -1))


@pytest.mark.parametrize("stride,tail", [(1, "flatten"), (2, "mean"), (1, "adaptive")])
def test_avgpool_folds_are_exact(stride, tail):
    model = randomize(PoolNet(stride, tail), 7)
    net = to_floatnet(model, (2, 16, 16), [0.02, 0.03])
    c1 = net.node("q1").inputs[0].op
    assert isinstance(c1, Conv2d) and c1.weight.shape[-2:] == (6, 6)  # 3x3 kernel * pool 2
    assert c1.stride == (2 * stride, 2 * stride) and c1.padding == (2, 2)
    p2 = net.node("q2").inputs[0].op
    assert isinstance(p2, AvgPool2d) and p2.kernel == (2, 2) and p2.weight == 0.25
    assert isinstance(net.readout.inputs[0].op, Dense)
    x = images((2, 16, 16), n=5, seed=3)
    ref = torch_logits(model, x, [0.02, 0.03])
    got, _ = ann_forward(net, x, device="cpu")
    assert torch.allclose(got, ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max()))


def test_global_pool_dense_weights_are_repeated_mean():
    model = randomize(PoolNet(2, "mean"), 1)
    net = to_floatnet(model, (2, 16, 16), [1.0, 1.0])
    w = net.readout.inputs[0].op.weight  # q2 is (6, 2, 2): W / 4 repeated over the 2x2 positions
    fc = model.fc.weight.detach().double().numpy()
    assert np.allclose(w.reshape(5, 6, 4), fc[:, :, None] / 4, rtol=1e-15, atol=0)


def test_pool_not_dividing_the_map_goes_through_a_graded_node_C2():
    """15x15 pooled to 7x7 (14 != 15): no exact fold into conv1, so the pool's map is a graded node (self-check)."""
    model = randomize(PoolNet(1, "mean"), 0)
    net = to_floatnet(model, (2, 15, 15), [1.0, 1.0])
    g = net.node("conv1.graded")
    assert g.neuron.graded and g.shape == (4, 7, 7) and net.node("q1").inputs[0].source == "conv1.graded"


# ------------------------------------------------------------------------------------------- refusals
class Small(nn.Module):
    def __init__(self, mid=None, act=None):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.act = act if act is not None else QuantReLU(2)
        self.mid = mid if mid is not None else nn.Identity()
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        x = self.mid(self.act(self.bn(self.conv(x))))
        return self.fc(torch.flatten(F.avg_pool2d(x, 2) if x.shape[-1] == 8 else x, 1))


def test_not_a_qat_model_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 2))
    with pytest.raises(ConversionError, match="not a QAT model"):
        to_floatnet(model, (1, 8, 8), [1.0])


def test_maxpool_is_refused_by_name():
    model = Small(mid=nn.MaxPool2d(2))
    with pytest.raises(ConversionError, match=r"module 'mid'.*MaxPool.*convert to AvgPool first"):
        to_floatnet(model, (1, 8, 8), [1.0])


def test_leftover_relu_is_refused_by_name():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), QuantReLU(2), nn.Conv2d(2, 2, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(32, 2))
    with pytest.raises(ConversionError, match=r"module '3'.*nn\.ReLU.*not a QuantReLU"):
        to_floatnet(model, (1, 8, 8), [1.0])


class Bad(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.c1, self.q1 = nn.Conv2d(1, 2, 3, padding=1), QuantReLU(2)
        self.c2, self.bn, self.q2 = nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2), QuantReLU(2)
        self.c3, self.q3 = nn.Conv2d(2, 2, 3, padding=1), QuantReLU(2)
        self.up = nn.Upsample(scale_factor=1)
        self.fc = nn.Linear(2 * 8 * 8, 3)

    def forward(self, x):
        a = self.q1(self.c1(x))
        if self.kind == "bn_on_sum":
            y = self.q3(self.bn(self.c3(self.q2(self.c2(a))) + a))
        elif self.kind == "sum_into_conv":
            y = self.q3(self.c3(self.c2(self.q2(self.c2(a))) + a))
        elif self.kind == "upsample":
            y = self.q2(self.up(self.c2(a)))
        elif self.kind == "mul":
            y = self.q2(self.c2(a) * 2)
        elif self.kind == "sigmoid":
            y = torch.sigmoid(self.c2(a))
        elif self.kind == "conv_conv":
            y = self.q2(self.c2(self.c2(a)))
        elif self.kind == "no_linear":
            return torch.flatten(self.q2(self.c2(a)), 1)
        return self.fc(torch.flatten(y, 1))


@pytest.mark.parametrize("kind,pattern", [
    ("upsample", r"module 'up'.*nn\.Upsample.*not supported"),
    ("mul", r"fx node 'mul'.*mul.*not supported"),
    ("sigmoid", r"fx node 'sigmoid'.*not a QuantReLU"),
    ("no_linear", r"does not come from a Linear"),
])
def test_unsupported_graphs_are_refused_by_name(kind, pattern):
    with pytest.raises(ConversionError, match=pattern):
        to_floatnet(Bad(kind).eval(), (1, 8, 8), [1.0], self_check=False)


@pytest.mark.parametrize("kind,graded", [("bn_on_sum", "bn.graded"), ("sum_into_conv", "c3.graded"),
                                         ("conv_conv", "c2.graded")])
def test_linear_ops_between_activations_go_through_graded_nodes_C2(kind, graded):
    """BN or a conv on a residual sum, two padded convs without an activation: no exact single synapse, so the
    map becomes a graded node (docs/contract.md C2 "Graded nodes"); the float64 self-check passes."""
    net = to_floatnet(randomize(Bad(kind), 3), (1, 8, 8), [1.0])
    assert [n.name for n in net.nodes if n.neuron.graded and n.role == "layer"] == [graded]


class RawShortcut(nn.Module):
    """A conv shortcut from the raw input: its map becomes a graded node (the pixels themselves cannot be relayed)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.q = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 1), QuantReLU(2)
        self.q0, self.fc = QuantReLU(2), nn.Linear(128, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.q(self.q0(self.c1(x)) + self.c2(x)), 1))


def test_shortcut_from_raw_input_is_refused():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.q0, self.q = nn.Conv2d(1, 1, 3, padding=1), QuantReLU(2), QuantReLU(2)
            self.fc = nn.Linear(64, 2)

        def forward(self, x):
            return self.fc(torch.flatten(self.q(self.q0(self.c1(x)) + x), 1))

    with pytest.raises(ConversionError, match="shortcut from the raw input"):
        to_floatnet(M(), (1, 8, 8), [1.0])


def test_conv_shortcut_from_raw_input_goes_through_a_graded_node_C2():
    net = to_floatnet(RawShortcut(), (1, 8, 8), [1.0])
    assert net.node("add.graded").inputs[0].source == "input" and net.node("add.graded").neuron.graded


def test_bad_channel_scale_is_refused():
    with pytest.raises(ConversionError, match="channel_scale"):
        to_floatnet(Small(), (1, 8, 8), [1.0, 2.0])


# --------------------------------------------------------------------------------- files and checkpoints
def test_converted_net_round_trips_through_hdf5(tmp_path):
    model = shipped("tiny_resnet", p=2, seed=3, c=1, size=12)
    net = to_floatnet(model, (1, 12, 12), [0.01])
    save_net(net, tmp_path / "n.nad.h5")
    back = load_net(tmp_path / "n.nad.h5")
    x = images((1, 12, 12), n=3)
    assert torch.equal(ann_forward(back, x, "cpu")[0], ann_forward(net, x, "cpu")[0])
    assert back.meta["p"] == 2 and back.meta["p_by_node"]["stem.2"] == 2


def _checkpoint(model, kind, **kw):
    return Checkpoint(kind=kind, model_name="digits_cnn", model_kwargs={"in_channels": 1, "num_classes": 10,
                      "input_size": 8}, input_shape=(1, 8, 8), num_classes=10, channel_scale=(0.0123,),
                      state_dict=cpu_state_dict(model), data_fingerprint="x", seed=0, **kw)


def test_convert_checkpoint_uses_model_and_normalisation(tmp_path):
    torch.manual_seed(0)
    model = randomize(quantize_model(build_model("digits_cnn", 1, 10, 8), 2, False), 2)
    path = save_checkpoint(_checkpoint(model, "qat", p=2, noise_adaptor=False), tmp_path / "q.pt")
    net = convert_checkpoint(path)
    assert net.meta["model"] == "digits_cnn" and net.meta["p"] == 2 and net.meta["noise_adaptor"] is False
    assert net.meta["made_from"] == made_from("checkpoint", path)  # C8: base name + SHA-256, no path, no time
    assert not {"source", "convert_s"} & set(net.meta)
    x = images((1, 8, 8), n=4)
    assert torch.allclose(ann_forward(net, x, "cpu")[0], torch_logits(model, x, [0.0123]), rtol=1e-9, atol=1e-12)


def test_fp_checkpoint_is_not_a_qat_model(tmp_path):
    model = build_model("digits_cnn", 1, 10, 8)
    path = save_checkpoint(_checkpoint(model, "fp"), tmp_path / "fp.pt")
    with pytest.raises(ConversionError, match=r"fp\.pt.*not a QAT model"):
        convert_checkpoint(path)


class Functional(nn.Module):
    """Functional ReLUs (surgery turns them into quant_relu_<k>), torch.add and in-place += residuals."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.c3 = nn.Conv2d(4, 4, 3, padding=1)
        self.drop, self.flat, self.fc = nn.Dropout(0.5), nn.Flatten(), nn.Linear(4, 3)

    def forward(self, x):
        a = F.relu(self.b1(self.c1(x)))
        a2 = F.relu(self.b2(self.c2(a)))
        b = torch.relu(torch.add(self.c3(a2), a))
        y = self.c3(b)
        y += a2
        y = y.relu()
        return self.fc(self.drop(self.flat(F.adaptive_avg_pool2d(y, (1, 1)))))


def test_functional_model_after_surgery_converts():
    torch.manual_seed(3)
    model = randomize(quantize_model(Functional(), 2, True), 4)
    net = to_floatnet(model, (2, 6, 6), [0.01, 0.02])
    assert [n.name for n in net.nodes if n.role == "layer"] == [f"quant_relu_{k}" for k in range(4)]
    assert len(net.node("quant_relu_3").inputs) == 2
    x = images((2, 6, 6), n=5, seed=9)
    ref = torch_logits(model, x, [0.01, 0.02])
    assert torch.allclose(ann_forward(net, x, "cpu")[0], ref, rtol=1e-10, atol=1e-12)


class SameSource(nn.Module):
    """Two paths from one activation: relu(bn(conv3x3(a)) + a) and relu(fc2(h) + h) merge into one synapse."""

    def __init__(self):
        super().__init__()
        self.c1, self.q1 = nn.Conv2d(1, 3, 3, padding=1), QuantReLU(2)
        self.c2, self.b2, self.q2 = nn.Conv2d(3, 3, 3, padding=1, groups=3), nn.BatchNorm2d(3), QuantReLU(2)
        self.fc1, self.q3, self.fc2, self.q4 = nn.Linear(48, 6), QuantReLU(3), nn.Linear(6, 6), QuantReLU(3)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        a = self.q1(self.c1(x))
        a = self.q2(self.b2(self.c2(a)) + a)
        h = self.q3(self.fc1(F.avg_pool2d(a, 2).flatten(1)))
        return self.fc(self.q4(self.fc2(h) + h))


def test_two_paths_from_one_source_merge_exactly():
    model = randomize(SameSource(), 2)
    net = to_floatnet(model, (1, 8, 8), [0.01])
    merged = net.node("q2").inputs
    assert len(merged) == 1 and isinstance(merged[0].op, Conv2d) and merged[0].op.weight.shape == (3, 3, 3, 3)
    assert len(net.node("q4").inputs) == 1 and isinstance(net.node("q4").inputs[0].op, Dense)
    x = images((1, 8, 8), n=6, seed=4)
    ref = torch_logits(model, x, [0.01])
    assert torch.allclose(ann_forward(net, x, "cpu")[0], ref, rtol=1e-10, atol=1e-12)
