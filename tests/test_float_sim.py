"""Float SNN simulator (C2, C3, C4, C7): conversion theory on a single layer (exact, ties included), causality of
one long run, relays, a converted digits model approaching its ANN, errors, device handling."""
import numpy as np
import pytest
import torch

from na_deploy.simulate.ann import ann_forward, argmax_lowest
from na_deploy.convert import to_floatnet
from na_deploy.errors import SimulationError
from na_deploy.simulate.float_snn import check_timesteps, simulate_float
from na_deploy.ir import Conv2d, Dense, FloatNet, Identity, InputNode, NeuronNode, ReadoutNode, Synapse
from na_deploy.models import build_model
from na_deploy.training.surgery import quantize_model
from helpers import ridge_digits_cnn  # tests/helpers.py


def dyadic_layer(seed=0, p=3, s=0.25, c=2, cout=4, side=5):
    """One conv layer whose every quantity is a short binary fraction: float arithmetic is exact, so ties
    u/s + 1/2 = integer really occur and both the ANN (half up) and the SNN (v >= th) must agree on them."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-3, 4, size=(cout, c, 3, 3)) / 4096.0
    node = NeuronNode("l1", (cout, side, side), [Synapse("input", Conv2d(w, 1, 1))], threshold=p * s, p=p,
                      bias=rng.integers(-4, 13, size=cout) / 16.0)
    ro = ReadoutNode("fc", (3,), [Synapse("l1", Dense(rng.integers(-4, 5, size=(3, cout * side * side)) / 8.0))])
    return FloatNet(InputNode((c, side, side), np.ones(c) / 255), [node], ro)


def exact_levels(net, x):
    """x = u/s of the single layer, computed exactly in float64 (dyadic values)."""
    logits, levels = ann_forward(net, x, device="cpu", dtype=torch.float64)
    node = net.nodes[0]
    u = torch.nn.functional.conv2d(x.double(), torch.as_tensor(node.inputs[0].op.weight), padding=1)
    u = u + torch.as_tensor(node.bias).view(1, -1, 1, 1)
    return u / node.step_size, levels["l1"].long()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_single_layer_T_equals_p_gives_ann_levels_exactly(dtype):
    """C2 + C4: constant analog input, pre-charge th/2, subtract reset -> count over T = p steps == ANN level."""
    net = dyadic_layer(p=3)
    x = torch.randint(0, 256, (64, 2, 5, 5), generator=torch.Generator().manual_seed(1))
    xs, levels = exact_levels(net, x)
    assert bool(((xs + 0.5) == torch.floor(xs + 0.5)).any())  # exact ties are present
    assert 0 < float(levels.double().mean()) < 3 and bool((levels == 0).any()) and bool((levels == 3).any())
    r = simulate_float(net, x, [3], device="cpu", dtype=dtype, count_timesteps=[3], progress=False)
    assert np.array_equal(r.counts[3]["l1"], levels.numpy())


@pytest.mark.parametrize("k", [2, 3, 5])
def test_single_layer_T_equals_kp(k):
    """Over T = k*p steps: count = clip(floor(k*u/s + 1/2), 0, k*p) exactly, which is k x level wherever u/s is
    within 1/(2k) of an integer level (and differs elsewhere: the first layer's share of occasional noise)."""
    p = 2
    net = dyadic_layer(seed=2, p=p)
    x = torch.randint(0, 256, (64, 2, 5, 5), generator=torch.Generator().manual_seed(2))
    xs, levels = exact_levels(net, x)
    r = simulate_float(net, x, [k * p], device="cpu", dtype=torch.float64, count_timesteps=[k * p], progress=False)
    counts = torch.as_tensor(r.counts[k * p]["l1"]).long()
    assert torch.equal(counts, torch.clamp(torch.floor(k * xs + 0.5), 0, k * p).long())
    near = (xs - levels).abs() < 1 / (2 * k)
    assert torch.equal(counts[near], k * levels[near]) and bool(near.any())
    assert bool((counts != k * levels).any())


def test_readout_potential_and_prediction():
    """C7: V(T) = sum over T steps of the readout current; class = argmax, lowest index on ties."""
    net = dyadic_layer(seed=3)
    x = torch.randint(0, 256, (16, 2, 5, 5), generator=torch.Generator().manual_seed(3))
    r = simulate_float(net, x, [3, 6], device="cpu", dtype=torch.float64, count_timesteps=[3, 6], progress=False)
    w = torch.as_tensor(net.readout.inputs[0].op.weight)
    for T in (3, 6):
        spikes_value = torch.as_tensor(r.counts[T]["l1"]).double().reshape(16, -1) * net.nodes[0].threshold
        assert torch.allclose(torch.as_tensor(r.potentials[T]), spikes_value @ w.T, rtol=0, atol=1e-12)
        assert np.array_equal(r.predictions[T], argmax_lowest(torch.as_tensor(r.potentials[T])).numpy())
    tie = torch.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    assert argmax_lowest(tie).tolist() == [1, 0]


@pytest.fixture(scope="module")
def small_resnet():
    torch.manual_seed(0)
    model = quantize_model(build_model("tiny_resnet", 1, 10, 12, widths=(8, 16)), 2, True, step_size=0.5).eval()
    return to_floatnet(model, (1, 12, 12), [1 / (255 * 0.3)])


def test_one_long_run_equals_short_runs_and_relays_copy(small_resnet):
    """Causality: the first T steps of a max(T) run are a T-step run; relays (C3) re-emit their source."""
    x = torch.randint(0, 256, (10, 1, 12, 12), generator=torch.Generator().manual_seed(4))
    long = simulate_float(small_resnet, x, [2, 5, 8], device="cpu", count_timesteps=[2, 5, 8], batch_size=4,
                          progress=False)
    for T in (2, 5):
        short = simulate_float(small_resnet, x, [T], device="cpu", count_timesteps=[T], batch_size=10,
                               progress=False)
        assert np.array_equal(short.predictions[T], long.predictions[T])
        assert all(np.array_equal(short.counts[T][k], long.counts[T][k]) for k in short.counts[T])
        assert short.spikes[T] == long.spikes[T]
    relays = [n for n in small_resnet.nodes if n.role == "relay"]
    assert relays
    for n in relays:
        assert np.array_equal(long.counts[8][n.name], long.counts[8][n.inputs[0].source])
    rates = long.firing_rates(8)
    assert all(0 <= v <= 1 for v in rates.values()) and max(rates.values()) > 0
    assert long.summary()["samples"] == 10


def test_first_layer_of_a_converted_model_matches_ann_at_T_p(small_resnet):
    """A node fed only by the input sees a constant current: its count at T = p equals its ANN level."""
    x = torch.randint(0, 256, (6, 1, 12, 12), generator=torch.Generator().manual_seed(5))
    _, levels = ann_forward(small_resnet, x, device="cpu")
    r = simulate_float(small_resnet, x, [2], device="cpu", dtype=torch.float64, count_timesteps=[2], progress=False)
    first = small_resnet.nodes[0]
    assert first.inputs[0].source == "input" and first.p == 2
    assert np.array_equal(r.counts[2][first.name], levels[first.name].numpy())


@pytest.fixture(scope="module")
def digits_net():
    """A 'trained-ish' digits model without SGD (na_deploy.testing.ridge_digits_cnn), as a FloatNet."""
    model, d = ridge_digits_cnn(0, grid=50)
    return to_floatnet(model, d.input_shape, d.normalization.channel_scale, name="digits_cnn"), d


def test_snn_accuracy_approaches_the_ann(digits_net):
    net, d = digits_net
    logits, _ = ann_forward(net, d.x_test, device="cpu")
    ann_pred = argmax_lowest(logits).numpy()
    ann_acc = float(np.mean(ann_pred == d.y_test))
    assert ann_acc > 0.7
    r = simulate_float(net, d.x_test, [1, 2, 4, 8, 16, 32], labels=d.y_test, device="cpu", batch_size=128,
                       progress=False)
    agree = {t: float(np.mean(r.predictions[t] == ann_pred)) for t in r.timesteps}
    assert agree[32] > agree[1] and agree[32] > 0.8
    assert r.accuracy[32] > r.accuracy[1] and r.accuracy[32] > ann_acc - 0.05
    assert r.samples == len(d.y_test) and r.images_per_s > 0


def test_errors_are_one_line_simulation_errors(small_resnet):
    x = torch.zeros((2, 1, 12, 12), dtype=torch.uint8)
    with pytest.raises(SimulationError, match="timesteps"):
        simulate_float(small_resnet, x, [0, 2], progress=False)
    with pytest.raises(SimulationError, match="timesteps"):
        check_timesteps([1.5])
    with pytest.raises(SimulationError, match=r"input: expected shape \(B, 1, 12, 12\)"):
        simulate_float(small_resnet, torch.zeros((2, 1, 8, 8)), [1], progress=False)
    with pytest.raises(SimulationError, match="count_timesteps"):
        simulate_float(small_resnet, x, [1, 2], count_timesteps=[4], progress=False)
    with pytest.raises(SimulationError, match="labels"):
        simulate_float(small_resnet, x, [1], labels=[1, 2, 3], progress=False)
    net = dyadic_layer()
    l2 = NeuronNode("l2", net.nodes[0].shape, [Synapse("l1", Identity(1.0))], threshold=1.0, p=2)
    ro = ReadoutNode("r", (3,), [Synapse("l2", net.readout.inputs[0].op), Synapse("l1", net.readout.inputs[0].op)])
    unbalanced = FloatNet(net.input, [net.nodes[0], l2], ro)
    with pytest.raises(SimulationError, match="balance"):
        simulate_float(unbalanced, torch.zeros((1, 2, 5, 5)), [1], progress=False)


def test_default_device_and_cuda_agree_with_cpu(small_resnet):
    """Device-agnostic: the default device (CUDA when present) gives the CPU's spike counts and predictions."""
    x = torch.randint(0, 256, (8, 1, 12, 12), generator=torch.Generator().manual_seed(6))
    cpu = simulate_float(small_resnet, x, [4], device="cpu", dtype=torch.float64, count_timesteps=[4],
                         progress=False)
    dflt = simulate_float(small_resnet, x.numpy(), [4], dtype=torch.float64, count_timesteps=[4], progress=False)
    assert np.array_equal(cpu.predictions[4], dflt.predictions[4])
    assert all(np.array_equal(cpu.counts[4][k], dflt.counts[4][k]) for k in cpu.counts[4])
    assert dflt.device.startswith("cuda") == torch.cuda.is_available()
