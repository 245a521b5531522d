"""Quantized ReLU with the noise adaptor (contract C1; Li & Rajendran, arXiv 2312.05290, eqs. 7-10).

Forward (training, noise adaptor on):  q = s * round(clip(v/s + eps, 0, p)),  eps ~ U(-W/2, W/2) per element,
drawn fresh in every training forward and stored for the backward pass (the *same* eps). W is the noise range
(`noise_range`, `--noise-range`); the paper fixes W = 1, the default (then eps is exactly rand - 1/2, as before).
Forward (eval, or noise adaptor off):  eps = 0.
`round` is half-up: round(x) = floor(x + 1/2) (so x = k + 1/2 goes to k + 1), everywhere in this project.

Backward, with x = v/s + eps:
    dq/dv = 1 if 0 < x < p else 0                               (eq. 9, straight-through inside the range)
    dq/ds = 0 if x <= 0;  -x + round(x) if 0 < x < p;  p if x >= p   (eq. 10, LSQ)
The gradient reaching s is additionally multiplied by LSQ's gradient scale g (Esser et al., "Learned Step
Size Quantization"): g = 1/sqrt(n * p) with n the number of activations per sample, unless `grad_scale`
is given (1.0 gives eq. 10 unscaled). Only s's gradient is scaled; dq/dv is exactly eq. 9.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from na_deploy.errors import NaDeployError
from na_deploy.rounding import round_half_up

DEFAULT_NOISE_RANGE = 1.0


def check_noise_range(value) -> float:
    """W as a float; NaDeployError (one line) unless it is finite and > 0 (W = 1 is the paper's U(-1/2, 1/2))."""
    try:
        w = float(value)
    except (TypeError, ValueError):
        w = float("nan")
    if not (math.isfinite(w) and w > 0):
        raise NaDeployError(f"--noise-range {value}: allowed: a finite number > 0 (1 is the paper's U(-1/2, 1/2))")
    return w


class _QuantReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: torch.Tensor, s: torch.Tensor, eps: Optional[torch.Tensor], p: int, g: float):
        x = v / s
        if eps is not None:
            x = x + eps
        q_int = round_half_up(torch.clamp(x, 0, p))
        ctx.save_for_backward(x, s)
        ctx.p, ctx.g = p, g
        return q_int * s

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, s = ctx.saved_tensors
        p = ctx.p
        inside = (x > 0) & (x < p)
        grad_v = grad_out * inside.to(grad_out.dtype)
        ds = torch.where(inside, round_half_up(x) - x, torch.zeros_like(x))
        ds = torch.where(x >= p, torch.full_like(x, float(p)), ds)
        grad_s = (grad_out * ds).sum().reshape(s.shape) * ctx.g
        return grad_v, grad_s, None, None, None


class QuantReLU(nn.Module):
    """Activation-quantized ReLU with learnable step size `step_size` (s), `p` positive levels and the noise
    adaptor. The SNN threshold of the layer it becomes is th = p * s (C2)."""

    def __init__(self, p: int = 2, step_size: float = 1.0, noise_adaptor: bool = True,
                 grad_scale: Optional[float] = None, noise_range: float = DEFAULT_NOISE_RANGE):
        super().__init__()
        p = int(p)
        if p < 1:
            raise ValueError(f"p must be a positive integer, got {p}")
        if not step_size > 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        self.p = p
        self.noise_adaptor = bool(noise_adaptor)
        self.grad_scale = grad_scale
        self.noise_range = check_noise_range(noise_range)  # W: eps ~ U(-W/2, W/2)
        self.step_size = nn.Parameter(torch.tensor(float(step_size)))
        self.last_eps: Optional[torch.Tensor] = None  # the eps of the last training forward (for tests)

    def extra_repr(self) -> str:
        return f"p={self.p}, noise_adaptor={self.noise_adaptor}, s={float(self.step_size.detach()):.4g}"

    @property
    def threshold(self) -> float:
        return self.p * float(self.step_size.detach())

    def _g(self, v: torch.Tensor) -> float:
        if self.grad_scale is not None:
            return float(self.grad_scale)
        n = v[0].numel() if v.dim() > 0 and v.shape[0] > 0 else max(v.numel(), 1)
        return 1.0 / math.sqrt(n * self.p)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        eps = None
        if self.training and self.noise_adaptor:
            eps = torch.rand_like(v) - 0.5  # U(-1/2, 1/2), fresh every training forward
            if self.noise_range != DEFAULT_NOISE_RANGE:
                eps = eps * self.noise_range  # U(-W/2, W/2)
        self.last_eps = eps
        s = self.step_size.abs().clamp_min(1e-8)
        return _QuantReLUFn.apply(v, s, eps, self.p, self._g(v))


def set_noise_range(model: nn.Module, noise_range: float) -> None:
    """In place: every QuantReLU of `model` draws eps ~ U(-W/2, W/2), W = noise_range (checked: finite, > 0)."""
    w = check_noise_range(noise_range)
    for m in model.modules():
        if isinstance(m, QuantReLU):
            m.noise_range = w
