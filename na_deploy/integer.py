"""The two integer rules of the IntNet arithmetic, each written once (docs/contract.md C2, C5; `na_deploy.ir`).

* `shift(y, e)`: the power-of-two exponent of a synapse, y << e for e >= 0 and y >> -e for e < 0 (arithmetic
  shift: floor, as Lava's Dense applies weight_exp);
* `wrap_signed(v, bits)`: the two's-complement wrap of a `bits`-wide register, ((v + 2^(b-1)) mod 2^b) - 2^(b-1)
  (the 24-bit membrane of Loihi 2 and Lava's Conv output, `signed_clamp`).

Both use integer operators only, so one expression serves numpy arrays, numpy / Python integers and torch
integer tensors alike (the fast reference's torch engine passes tensors; tests/test_reference.py checks that
numpy and torch agree). This module imports nothing (no torch, not even numpy): the Lava process models import
it inside forked Lava processes, where torch must not be loaded, and Lava executes every module of their folder.
"""
from __future__ import annotations

from typing import Any


def shift(y: Any, e: int) -> Any:
    """y * 2**e for e >= 0; arithmetic right shift by -e (floor) for e < 0; y itself for e == 0."""
    e = int(e)
    if e == 0:
        return y
    return y << e if e > 0 else y >> (-e)


def wrap_signed(v: Any, bits: int) -> Any:
    """Two's-complement wrap of v to `bits` signed bits: ((v + 2^(b-1)) & (2^b - 1)) - 2^(b-1)."""
    half = 1 << (int(bits) - 1)
    return ((v + half) & ((1 << int(bits)) - 1)) - half


__all__ = ["shift", "wrap_signed"]
