"""C1: the quantized activation with the noise adaptor (forward formula, eps, eq. 9 / eq. 10 gradients)."""
import math

import pytest
import torch

from na_deploy.training.quantizer import QuantReLU, round_half_up


def hand_forward(v, s, p, eps=None):
    """q = s * floor(clip(v/s + eps, 0, p) + 1/2) -- C1 written out."""
    x = v / s + (0 if eps is None else eps)
    return s * torch.floor(torch.clamp(x, 0, p) + 0.5)


def hand_grads(v, s, p, eps, w):
    """Eq. 9 / eq. 10 for loss = sum(w * q), x = v/s + eps, elementwise."""
    x = v / s + eps
    dv, ds = [], []
    for xi, wi in zip(x.tolist(), w.tolist()):
        inside = 0 < xi < p
        dv.append(wi if inside else 0.0)
        if xi <= 0:
            ds.append(0.0)
        elif xi >= p:
            ds.append(wi * p)
        else:
            ds.append(wi * (-xi + math.floor(xi + 0.5)))
    return torch.tensor(dv, dtype=v.dtype), sum(ds)


@pytest.mark.parametrize("p", [1, 2, 3, 7])
def test_c1_forward_edge_values_eval(p):
    s = 0.5  # exact in binary: v/s is exact, so the ties below are exact ties
    m = QuantReLU(p=p, step_size=s, noise_adaptor=True).eval()
    x = torch.tensor([-3.0, -0.5, 0.0, 0.25, 0.5, 1.0, 1.5, p - 0.5, float(p), p + 0.5, p + 3.0],
                     dtype=torch.float64)
    v = x * s
    q = m(v)
    assert torch.equal(q, hand_forward(v, torch.tensor(s, dtype=torch.float64), p))
    # explicit values: 0 and below -> 0; p and above -> p*s; ties go UP (half-up, not banker's)
    assert q[2] == 0 and q[0] == 0 and q[1] == 0
    assert q[8] == p * s and q[9] == p * s and q[10] == p * s
    assert q[4] == s                      # 0.5 -> 1 (torch.round would give 0)
    assert q[6] == min(2, p) * s          # 1.5 -> 2
    assert q[7] == p * s                  # p - 0.5 -> p
    assert torch.round(torch.tensor(0.5)) == 0  # documents why half-up is spelled out


def test_round_half_up_ties():
    x = torch.tensor([-1.5, -0.5, 0.5, 1.5, 2.5, 2.4999])
    assert round_half_up(x).tolist() == [-1.0, 0.0, 1.0, 2.0, 3.0, 2.0]


def test_c1_eps_is_zero_in_eval_and_without_noise_adaptor():
    torch.manual_seed(0)
    v = torch.randn(4, 8, 5, 5)
    m = QuantReLU(p=2, step_size=0.3, noise_adaptor=True).eval()
    q1, q2 = m(v), m(v)
    assert m.last_eps is None and torch.equal(q1, q2)
    assert torch.equal(q1, hand_forward(v, m.step_size.detach(), 2))
    off = QuantReLU(p=2, step_size=0.3, noise_adaptor=False).train()
    assert torch.equal(off(v), q1) and off.last_eps is None


def test_c1_training_forward_uses_uniform_eps_fresh_each_call():
    torch.manual_seed(1)
    v = torch.randn(64, 100)
    m = QuantReLU(p=3, step_size=0.25, noise_adaptor=True).train()
    q = m(v)
    eps = m.last_eps
    assert eps is not None and eps.shape == v.shape
    assert float(eps.min()) >= -0.5 and float(eps.max()) < 0.5
    assert abs(float(eps.mean())) < 0.02 and abs(float(eps.var()) - 1 / 12) < 0.005  # U(-1/2, 1/2)
    assert torch.equal(q, hand_forward(v, m.step_size.detach(), 3, eps))
    m(v)
    assert not torch.equal(m.last_eps, eps)  # fresh every training forward


@pytest.mark.parametrize("noise", [True, False])
@pytest.mark.parametrize("p", [1, 2, 4])
def test_c1_gradients_equal_eq9_eq10_with_the_same_eps(p, noise):
    torch.manual_seed(10 + p)
    s0 = 0.37
    m = QuantReLU(p=p, step_size=s0, noise_adaptor=noise, grad_scale=1.0).train()
    v = (torch.rand(400, dtype=torch.float64) * (p + 2) - 1) * s0  # spans < 0, (0, p), > p
    v.requires_grad_(True)
    m.step_size.data = m.step_size.data.double()
    w = torch.randn(400, dtype=torch.float64)
    (m(v) * w).sum().backward()
    eps = m.last_eps if noise else torch.zeros_like(v)
    s = m.step_size.detach()
    dv, ds = hand_grads(v.detach(), s, p, eps, w)
    assert torch.equal(v.grad, dv)
    assert math.isclose(float(m.step_size.grad), ds, rel_tol=1e-10, abs_tol=1e-10)
    assert 0 < int(dv.ne(0).sum()) < len(dv)  # the sample spans inside and outside (0, p)
    if noise:  # a different eps would give different gradients: the test can see a re-drawn eps
        dv2, ds2 = hand_grads(v.detach(), s, p, torch.rand_like(v) - 0.5, w)
        assert not torch.equal(dv2, dv) or not math.isclose(ds2, ds, rel_tol=1e-9)


def test_c1_lsq_gradient_scale_default():
    """Default grad scale on s is LSQ's g = 1/sqrt(n*p), n = activations per sample; dq/dv unscaled."""
    torch.manual_seed(3)
    v = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    w = torch.randn_like(v)
    grads = {}
    for g in (None, 1.0):
        m = QuantReLU(p=2, step_size=0.5, noise_adaptor=False, grad_scale=g)
        m.step_size.data = m.step_size.data.double()
        vv = v.clone().requires_grad_(True)
        (m(vv) * w).sum().backward()
        grads[g] = (vv.grad, float(m.step_size.grad))
    assert torch.equal(grads[None][0], grads[1.0][0])
    assert math.isclose(grads[None][1], grads[1.0][1] / math.sqrt(3 * 4 * 4 * 2), rel_tol=1e-12)


def test_quantrelu_rejects_bad_parameters():
    with pytest.raises(ValueError):
        QuantReLU(p=0)
    with pytest.raises(ValueError):
        QuantReLU(p=2, step_size=0.0)
    assert QuantReLU(p=3, step_size=0.5).threshold == 1.5  # th = p*s (C2)
