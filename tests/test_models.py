"""Model registry, shapes, conversion-friendly structure, and surgery (ReLU -> QuantReLU, MaxPool -> AvgPool)."""
import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from na_deploy.training.checkpoint import build_registry_model
from na_deploy.errors import ModelError
from na_deploy.models import MODEL_NAMES, ModelRegistryError, build_model
from na_deploy.training.quantizer import QuantReLU
from na_deploy.training.surgery import (calibrate_step_sizes, mse_optimal_step, quant_layers, quantization_mse,
                                        quantize_model)

# name -> (in_channels, input_size, expected number of ReLUs: stem + per-block ReLUs)
SHIPPED = {
    "digits_cnn": (1, 8, 3),
    "tiny_resnet": (1, 28, 1 + 2 + 1 + 2),
    "resnet18": (3, 32, 1 + 2 * 8),
    "resnet20": (3, 32, 1 + 2 * 9),
    "resnet34": (3, 32, 1 + 2 * 16),
    "resnet50": (3, 32, 1 + 3 * 16),
}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {n: build_model(n, in_channels=c, num_classes=7, input_size=s) for n, (c, s, _) in SHIPPED.items()}


def count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


def test_registry_lists_every_shipped_model():
    assert set(MODEL_NAMES) == set(SHIPPED)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ModelRegistryError) as e:  # models/ imports only torch: its own error type
        build_model("resnet99")
    assert "resnet99" in str(e.value) and all(n in str(e.value) for n in MODEL_NAMES)
    assert "\n" not in str(e.value)
    with pytest.raises(ModelError) as e2:  # na_deploy's entry point: the user-facing ModelError, same message
        build_registry_model("resnet99")
    assert str(e2.value) == str(e.value)


def test_bad_input_size_refused():
    with pytest.raises(ModelRegistryError, match="input_size"):
        build_model("digits_cnn", in_channels=1, num_classes=10, input_size=6)
    with pytest.raises(ModelError, match="input_size"):
        build_registry_model("digits_cnn", in_channels=1, num_classes=10, input_size=6)


@pytest.mark.parametrize("name", list(SHIPPED))
def test_output_shape_and_parameters(models, name):
    c, s, _ = SHIPPED[name]
    m = models[name].eval()
    with torch.no_grad():
        assert m(torch.randn(2, c, s, s)).shape == (2, 7)
    assert m.state_dict() and all(torch.isfinite(t).all() for t in m.state_dict().values() if t.is_floating_point())


def test_parameters_follow_arguments():
    m = build_model("resnet20", in_channels=5, num_classes=3, input_size=16).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 5, 16, 16)).shape == (1, 3)
    big = build_model("resnet18", in_channels=3, num_classes=10, input_size=96, base_width=8).eval()
    with torch.no_grad():
        assert big(torch.randn(1, 3, 96, 96)).shape == (1, 10)


@pytest.mark.parametrize("name", list(SHIPPED))
def test_conversion_friendly_structure(models, name):
    """Every conv feeds exactly one BN; no bias on convs; no max-pool anywhere; pooling only outside blocks."""
    m = models[name]
    gm = fx.symbolic_trace(m)
    mods = dict(gm.named_modules())
    convs = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(mods[n.target], nn.Conv2d)]
    assert convs
    for n in convs:
        users = list(n.users)
        assert len(users) == 1 and isinstance(mods[users[0].target], nn.BatchNorm2d), n.target
        assert mods[n.target].bias is None
    assert count(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) == 0
    for path, mod in m.named_modules():
        if isinstance(mod, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            assert ".shortcut" not in path and "stages." not in path and "block" not in path, path


@pytest.mark.parametrize("name", list(SHIPPED))
def test_surgery_replaces_every_relu(models, name):
    m = models[name]
    n_relu = count(m, nn.ReLU)
    assert n_relu == SHIPPED[name][2]
    q = quantize_model(m, p=3, noise_adaptor=False)
    assert count(q, nn.ReLU) == 0
    assert count(q, QuantReLU) == n_relu == len(quant_layers(q))
    assert all(l.p == 3 and not l.noise_adaptor for _, l in quant_layers(q))
    assert count(m, nn.ReLU) == n_relu  # the original is untouched (quantize_model copies)
    # same module names as the original at the ReLU sites (deterministic state_dict keys)
    relu_paths = [p for p, mod in m.named_modules() if isinstance(mod, nn.ReLU)]
    assert [p for p, _ in quant_layers(q)] == relu_paths
    c, s, _ = SHIPPED[name]
    with torch.no_grad():
        assert q.eval()(torch.randn(2, c, s, s)).shape == (2, 7)


class PoolNet(nn.Module):
    """Module max-pools, a functional max-pool, functional ReLUs (three spellings) inside a submodule."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.inner = Inner()
        self.apool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = self.inner(self.pool(x))
        x = F.max_pool2d(x, 2)
        return self.fc(torch.flatten(self.apool(x), 1).relu())


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(torch.relu(self.conv(x)))


def test_surgery_functional_relu_and_maxpools_counted():
    net = PoolNet().eval()
    q = quantize_model(net, p=2, noise_adaptor=True, step_size=0.25)
    assert count(q, QuantReLU) == 4  # 1 module + 3 functional
    assert count(q, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) == 0
    assert count(q, nn.AvgPool2d) == 1 and count(q, nn.AdaptiveAvgPool2d) == 1
    funcs = [n.target for n in q.graph.nodes if n.op in ("call_function", "call_method")]
    assert F.max_pool2d not in funcs and "relu" not in funcs and F.relu not in funcs and torch.relu not in funcs
    assert any(getattr(f, "__name__", "") == "avg_pool2d" for f in funcs)
    names = sorted(p for p, _ in quant_layers(q))
    assert names == ["inner.act", "quant_relu_0", "quant_relu_1", "quant_relu_2"]
    q2 = quantize_model(PoolNet(), p=2)
    assert list(q2.state_dict()) == list(q.state_dict())  # deterministic names
    # numerics: the rewritten graph equals the hand-written quantized forward (eval, eps = 0)
    x = torch.randn(3, 1, 8, 8)

    def qf(v):
        return 0.25 * torch.floor(torch.clamp(v / 0.25, 0, 2) + 0.5)

    with torch.no_grad():
        h = qf(net.conv(x))
        h = F.avg_pool2d(h, 2)
        h = qf(qf(net.inner.conv(h)))
        h = F.avg_pool2d(h, 2)
        ref = net.fc(qf(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)))
        assert torch.allclose(q.eval()(x), ref, atol=1e-6)


@pytest.mark.parametrize("act", [nn.GELU(), nn.Sigmoid(), nn.LeakyReLU(), nn.SiLU(), nn.Tanh(), nn.ELU(),
                                 nn.Hardtanh(), nn.PReLU(), nn.Softplus()])
def test_surgery_refuses_other_activation_modules_by_path(act):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.BatchNorm2d(2), act), nn.Flatten())
    with pytest.raises(ModelError) as e:
        quantize_model(net, p=2)
    assert "1.1" in str(e.value) and type(act).__name__ in str(e.value)


class FunctionalAct(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.body = Body(fn)

    def forward(self, x):
        return self.body(x)


class Body(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.conv(x))


@pytest.mark.parametrize("fn", [F.gelu, torch.sigmoid, F.silu, F.leaky_relu, torch.tanh])
def test_surgery_refuses_functional_activations_by_module(fn):
    with pytest.raises(ModelError) as e:
        quantize_model(FunctionalAct(fn), p=2)
    assert "body" in str(e.value) and "not supported" in str(e.value)


@pytest.mark.parametrize("p", [0, -1, 1.5])
def test_p_must_be_positive_integer(p):
    with pytest.raises(ModelError, match="p"):
        quantize_model(nn.Sequential(nn.ReLU()), p=p)


def test_mse_optimal_step_is_the_grid_minimum():
    torch.manual_seed(0)
    v = torch.randn(20000).abs() ** 1.5
    for p in (1, 2, 4):
        s = mse_optimal_step(v, p, grid=200)
        e = lambda t: float(quantization_mse(v.double(), torch.tensor([t], dtype=torch.float64), p)[0])
        assert e(s) <= e(0.9 * s) and e(s) <= e(1.1 * s)
        assert e(s) < e(float(v.max()) / p)  # better than "no clipping"
    assert mse_optimal_step(torch.zeros(10), 2) == 1.0


def test_calibration_sets_every_step_from_data():
    torch.manual_seed(0)
    m = quantize_model(build_model("resnet20", in_channels=3, num_classes=10, input_size=16), p=2)
    x = torch.randn(32, 3, 16, 16)
    chosen = calibrate_step_sizes(m, x)
    assert list(chosen) == [n for n, _ in quant_layers(m)]
    assert all(abs(float(l.step_size.detach()) - chosen[n]) < 1e-6 for n, l in quant_layers(m))
    assert len(set(round(s, 6) for s in chosen.values())) > 1  # layers get their own s
    assert m.training  # mode restored


class SharedRelu(nn.Module):
    """One nn.ReLU instance used at two call sites and registered under two paths (torchvision style)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
        self.relu = nn.ReLU()
        self.alias = self.relu

    def forward(self, x):
        return self.alias(self.c2(self.relu(self.c1(x))))


def test_surgery_gives_each_call_site_its_own_quantized_activation():
    q = quantize_model(SharedRelu(), p=2)
    layers = quant_layers(q)
    assert len(layers) == 2 and layers[0][1] is not layers[1][1]
    called = [n.target for n in q.graph.nodes if n.op == "call_module" and "relu" in n.target]
    assert len(set(called)) == 2
    assert list(quantize_model(SharedRelu(), p=2).state_dict()) == list(q.state_dict())
