"""Array engines of the fast reference (`reference/fast.py`): where the integer steps of each node run.

numpy on the CPU (the ops in torch, every integer step in numpy, in place: torch's OpenMP elementwise kernels
are 10-100x slower on a busy 2-core machine); torch on CUDA (or engine="torch"): everything on the device.
Each node's window runs through its neuron model's `run_window` (na_deploy.ir.neuron; the default is the
per-step loop v <- wrap(v + I(t)); z(t) = fire_and_reset_inplace(v, th)), or, on the numpy engine with the
optional accelerator installed, as fused compiled loops, the net chunk of steps by chunk of steps
(`reference.fused`: the same integers); the wrap is `na_deploy.integer.wrap_signed`, whose integer operators
serve numpy arrays and torch tensors alike.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from na_deploy.errors import SimulationError
from na_deploy.integer import wrap_signed
from na_deploy.ir.offset_calibration import offset_start
from na_deploy.hw_targets.loihi2.reference import fused


class _NumpyBackend:
    """CPU: the ops run in torch (threaded GEMM / conv), every integer step in numpy (single-threaded,
    in place; elementwise torch ops with OpenMP threads are slow on a busy 2-core machine)."""

    _np_float = {torch.float32: np.float32, torch.float64: np.float64}

    def __init__(self, device: torch.device):
        self.device = device

    def runs_fused(self, plans: list) -> bool:
        """True when the net runs as fused loops (`reference.fused`, numba installed), else as numpy passes."""
        return fused.enabled() and fused.supports(plans)

    def lockstep(self, plans: list, x: np.ndarray, Ts, bits: int, v0=None, keep_v: bool = False) -> "fused.Lockstep":
        return fused.lockstep(plans, x, Ts, bits, self.apply, v0, keep_v)

    def inputs(self, x: np.ndarray):
        return x

    def apply(self, syn, a: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=self._np_float[syn.dtype]))
        return syn.fn(t).numpy()

    def to_int(self, y: np.ndarray, small: bool) -> np.ndarray:
        return np.rint(y, out=y).astype(np.int32 if small else np.int64)

    def bias(self, plan, small: bool):
        return plan.bias.astype(np.int32 if small else np.int64)

    def integrate(self, plan, cur: np.ndarray, T: int, bits: int, v0=None):
        """(spikes (T, B, *shape), final membrane) of one window; v0: per-neuron start (default: pre-charge)."""
        node = plan.node
        v = np.full(cur.shape[1:], node.precharge, dtype=cur.dtype) if v0 is None else v0.astype(cur.dtype)
        z_all = np.empty((T, *cur.shape[1:]), dtype=node.neuron.spike_dtype)
        wrap = functools.partial(wrap_signed, bits=bits) if plan.wrap_needed else None
        node.neuron.run_window(v, cur, cur.dtype.type(node.threshold), T, z_all, wrap)
        return z_all, v

    def offset_start(self, plan, v):
        """Stage 2's start pc + o * th, o = clip(floor(v_rho / th), -1, 1) (two-stage offset calibration)."""
        return offset_start(v, plan.node.precharge, plan.node.threshold)

    def abs(self, z):
        return np.abs(z)

    def cumsum(self, a):
        return np.cumsum(a, axis=0, dtype=np.int64)

    def count(self, z):
        return z.sum(axis=0, dtype=np.int64)

    def numpy(self, a) -> np.ndarray:
        return np.asarray(a, dtype=np.int64)


class _TorchBackend:
    """CUDA: everything stays on the device in torch."""

    def __init__(self, device: torch.device):
        self.device = device

    def runs_fused(self, plans: list) -> bool:
        return False

    def inputs(self, x: np.ndarray):
        return torch.as_tensor(x, device=self.device)

    def apply(self, syn, a: torch.Tensor) -> torch.Tensor:
        return syn.fn(a.to(syn.dtype))

    def to_int(self, y: torch.Tensor, small: bool) -> torch.Tensor:
        return torch.round(y).to(torch.int32 if small else torch.int64)

    def bias(self, plan, small: bool):
        return torch.as_tensor(plan.bias, dtype=torch.int32 if small else torch.int64, device=self.device)

    def integrate(self, plan, cur: torch.Tensor, T: int, bits: int, v0=None):
        node = plan.node
        if v0 is None:
            v = torch.full(cur.shape[1:], node.precharge, dtype=cur.dtype, device=cur.device)
        else:
            v = v0.to(cur.dtype).clone()
        zt = torch.int64 if node.neuron.graded else torch.int8 if node.neuron.signed else torch.bool
        z_all = torch.empty((T, *cur.shape[1:]), dtype=zt, device=cur.device)
        wrap = functools.partial(wrap_signed, bits=bits) if plan.wrap_needed else None
        node.neuron.run_window(v, cur, node.threshold, T, z_all, wrap)
        return z_all, v

    def offset_start(self, plan, v):
        return offset_start(v, plan.node.precharge, plan.node.threshold)

    def abs(self, z):
        return z.abs()

    def cumsum(self, a):
        return torch.cumsum(a.to(torch.int64), dim=0)

    def count(self, z):
        return z.sum(dim=0, dtype=torch.int64)

    def numpy(self, a) -> np.ndarray:
        return a.cpu().numpy().astype(np.int64)


ENGINES = ("auto", "numpy", "torch")


def _backend(device: torch.device, engine: str = "auto"):
    """numpy for the integer steps on CPU ("auto" there), torch on any other device (or when asked)."""
    if engine not in ENGINES:
        raise SimulationError(f"engine {engine!r} unknown; allowed: {', '.join(ENGINES)}")
    if engine == "numpy" and device.type != "cpu":
        raise SimulationError(f"engine 'numpy' runs on the CPU only, device is {device}")
    if engine == "torch" or device.type != "cpu":
        return _TorchBackend(device)
    return _NumpyBackend(device)


