"""Helpers of this project's own tests and benchmarks (not part of the installed package; the public test helpers,
`assert_bit_exact` and the random IR networks, are in `na_deploy.testing`).

Tests import this module as `helpers` (pytest puts tests/ on sys.path, as for `layering`); a benchmark that needs
one of these adds the tests folder to sys.path itself (see benchmarks/README.md).

* `settle_batchnorm(model)`: trained-looking BatchNorm statistics and step sizes for an untrained QAT model;
* `ridge_digits_cnn()`: a 'trained-ish' quantized digits_cnn without SGD (ridge-regression readout);
* `tampered(inet, node)`: issue 11's tampering of one node (what provenance and fidelity checks must catch).
"""
from __future__ import annotations

from na_deploy.ir import AvgPool2d, Conv2d, Dense, Identity, IntNet, Synapse


def settle_batchnorm(model, seed: int = 0, step_size: float = 0.3):
    """Trained-looking statistics without training, so a converted SNN is neither silent nor saturated: every
    BatchNorm's running mean ~ U(-0.2, 0.2) and variance ~ U(0.5, 1.5) (torch generator seeded `seed`, drawn
    in module order), every QuantReLU's step size `step_size`. Returns `model` in eval mode."""
    import torch
    from torch import nn

    from na_deploy.training.quantizer import QuantReLU

    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        elif isinstance(m, QuantReLU):
            m.step_size.data.fill_(step_size)
    return model.eval()


def ridge_digits_cnn(seed: int = 0, *, data_seed: int = 0, grid: int = 50, widths=(8, 16)):
    """A 'trained-ish' quantized digits_cnn without SGD -> (model, digits dataset): random convs (torch seed
    `seed`), BN statistics and step sizes (MSE grid of `grid` points) from the training split of
    `load_digits_dataset(data_seed)`, the linear readout fitted by ridge regression on the quantized features.
    Honest but with small class margins (tests of the float SNN, fidelity, neuron modes)."""
    import torch
    from torch import nn

    from na_deploy.data.arrays import load_digits_dataset
    from na_deploy.models import build_model
    from na_deploy.training.surgery import calibrate_step_sizes, quantize_model

    torch.manual_seed(seed)
    d = load_digits_dataset(data_seed)
    xtr = d.normalization.apply(torch.as_tensor(d.x_train))
    model = quantize_model(build_model("digits_cnn", 1, 10, 8, widths=tuple(widths)), 2, True)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average: running stats = the data's statistics
    model.train()
    with torch.no_grad():
        model.features[:-1](xtr)  # BN statistics (QuantReLU noise does not reach them: BN sits before it)
    model.eval()
    calibrate_step_sizes(model, xtr[:256], grid=grid)
    with torch.no_grad():
        feats = torch.flatten(model.features(xtr), 1).double()
    a = torch.cat([feats, torch.ones(len(feats), 1, dtype=torch.float64)], 1)
    onehot = nn.functional.one_hot(torch.as_tensor(d.y_train), 10).double()
    sol = torch.linalg.solve(a.T @ a + 1e-2 * torch.eye(a.shape[1], dtype=torch.float64), a.T @ onehot)
    model.fc.weight.data.copy_(sol[:-1].T.float())
    model.fc.bias.data.copy_(sol[-1].float())
    return model, d


def tampered(inet: IntNet, node_name: str, threshold: int = 3) -> IntNet:
    """Issue 11's tampering: a copy of `inet` with `node_name`'s synaptic weights negated and its integer
    threshold set to `threshold` (what provenance and fidelity checks must catch)."""
    import dataclasses

    from na_deploy.ir import replace_nodes

    def neg(op):
        if isinstance(op, Conv2d):
            return Conv2d(-op.weight, op.stride, op.padding, op.groups)
        if isinstance(op, Dense):
            return Dense(-op.weight)
        return AvgPool2d(op.kernel, op.stride, -op.weight) if isinstance(op, AvgPool2d) else Identity(-op.weight)

    return replace_nodes(inet, [dataclasses.replace(n, threshold=threshold, inputs=[
        Synapse(s.source, neg(s.op), s.exponent) for s in n.inputs]) if n.name == node_name else n
        for n in inet.nodes])


def randomize_batchnorm(model, seed: int = 0):
    """Random BN statistics and affine parameters (so BN folding is exercised); the model in eval mode."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


def random_qat(model, shape, seed: int = 0):
    """`randomize_batchnorm`, then quantized (p = 2, noise adaptor) with step sizes calibrated on random inputs."""
    import torch

    from na_deploy.training.surgery import calibrate_step_sizes, quantize_model

    torch.manual_seed(seed)
    q = quantize_model(randomize_batchnorm(model, seed), 2, True)
    calibrate_step_sizes(q, torch.rand((16,) + tuple(shape)), seed=seed)
    return q.eval()


def deploy_random(model, shape, lava: bool = False):
    """`random_qat` -> FloatNet (self-check) -> fixed point fitting Loihi 2 -> reference run on 2 images (readout
    of the net's classes) -> with `lava`, Lava bit-exact on 1; (FloatNet, IntNet)."""
    import torch

    from na_deploy.convert import to_floatnet
    from na_deploy.hw_targets import get_target

    q = random_qat(model, shape)
    net = to_floatnet(q, shape, 1.0 / 255)
    target = get_target("loihi2")
    fixed = target.to_fixed_point(net, 8)
    assert not target.check_fit(fixed, 8)
    x = torch.randint(0, 256, (2,) + tuple(shape), generator=torch.Generator().manual_seed(1)).numpy()
    assert target.reference_simulate(fixed, x, 8).readout.shape == (2, net.readout.shape[0])
    if lava:
        from na_deploy.verify.bit_exact import verify
        assert verify(fixed, x[:1].astype("uint8"), 8, target, target.backend("lava", fixed)).equal
    return net, fixed

