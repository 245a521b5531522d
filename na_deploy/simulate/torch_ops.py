"""Synaptic ops of the IR as batched torch functions (shared by the ANN evaluator, the float SNN simulator
and the fast integer reference, so all of them compute an op the same way).

`compile_op(op, dtype, device)` returns f(x) with x of shape (B, *source_shape) -> (B, *node_shape).
Integer IntNet weights run exactly in float64 while every partial sum stays below 2**53.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from na_deploy.ir import AvgPool2d, Conv2d, Dense, Identity, Op


def compile_op(op: Op, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Callable:
    if isinstance(op, Conv2d):
        w = torch.as_tensor(np.asarray(op.weight, dtype=np.float64), dtype=dtype, device=device)
        stride, padding, groups = op.stride, op.padding, op.groups
        return lambda x: F.conv2d(x, w, None, stride, padding, 1, groups)
    if isinstance(op, Dense):
        wt = torch.as_tensor(np.asarray(op.weight, dtype=np.float64), dtype=dtype, device=device).t().contiguous()
        return lambda x: x.reshape(x.shape[0], -1) @ wt
    if isinstance(op, AvgPool2d):
        k, s, g = op.kernel, op.stride, float(op.weight)
        # divisor_override=1 makes avg_pool2d a window *sum*; the op's weight scales it.
        return lambda x: F.avg_pool2d(x, k, s, divisor_override=1) * g
    if isinstance(op, Identity):
        g = float(op.weight)
        return lambda x: x * g
    raise TypeError(f"unknown op {type(op).__name__}")


def apply_op(op: Op, x: torch.Tensor) -> torch.Tensor:
    """One-off application (tests, small nets); simulators should cache `compile_op`."""
    return compile_op(op, x.dtype, x.device)(x)
