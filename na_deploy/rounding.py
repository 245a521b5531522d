"""The rounding modes of the contract, each written once (C1: round half up; C5: weight casts).

Both work on numpy arrays, torch tensors and Python numbers (this module never imports torch).
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def round_half_up(x: Any) -> Any:
    """floor(x + 1/2): the quantizer's round (C1), the pixel cast of float data (C4), integer thresholds."""
    if _is_tensor(x):
        return (x + 0.5).floor()
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def round_half_away(x: Any) -> Any:
    """sign(x) * floor(|x| + 1/2): round half away from zero (the fixed-point weight cast, C5)."""
    if _is_tensor(x):
        return x.sign() * (x.abs() + 0.5).floor()
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


__all__ = ["round_half_up", "round_half_away"]
