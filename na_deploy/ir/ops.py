"""Synaptic ops of the IR and the `Synapse` that carries one of them from a source node into a node.

Each op is a small dataclass with its equation in the docstring, validated in `__post_init__`, and an
`out_shape(in_shape)`. `OP_TYPES` maps the stable name (`kind`, also the HDF5 encoding) to the class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Union

import numpy as np

from na_deploy.errors import IRError

Shape = tuple[int, ...]


def pair(v: Any, what: str) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        v = (int(v), int(v))
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise IRError(f"{what} must be an int or a pair of ints, got {v!r}")
    return v  # type: ignore[return-value]


def is_int_array(a: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(a).dtype, np.integer)


def int_value(value, what: str) -> int:
    """An integer field (a threshold, exponent, pre-charge) as int: an integer, or a float holding an integer
    exactly; a fraction, NaN or infinity is refused naming `what`, never cast (issue 22)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        if not (isinstance(value, np.ndarray) and value.ndim == 0):
            raise IRError(f"{what} must be an integer, got {type(value).__name__} {value!r}")
        value = value.item()
    if isinstance(value, (float, np.floating)) and not (np.isfinite(value) and float(value).is_integer()):
        raise IRError(f"{what} must be an integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------- ops
@dataclass(eq=False)
class Conv2d:
    """2-D convolution (torch cross-correlation, zero padding), on (C, H, W) maps.

    out[o, y, x] = sum_{c, ky, kx} W[o, c, ky, kx] * in[g(o) * Cin/G + c, y*sh + ky - ph, x*sw + kx - pw]
    weight: (Cout, Cin / groups, kh, kw).
    """

    weight: np.ndarray
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    kind: ClassVar[str] = "conv2d"

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight)
        self.stride = pair(self.stride, "Conv2d.stride")
        self.padding = pair(self.padding, "Conv2d.padding")
        self.groups = int(self.groups)
        if self.weight.ndim != 4:
            raise IRError(f"Conv2d.weight must be 4-D (Cout, Cin/groups, kh, kw), got shape {self.weight.shape}")
        if min(self.stride) < 1 or min(self.padding) < 0 or self.groups < 1:
            raise IRError(f"Conv2d: stride >= 1, padding >= 0, groups >= 1 required, got "
                          f"stride={self.stride} padding={self.padding} groups={self.groups}")
        if self.weight.shape[0] % self.groups:
            raise IRError(f"Conv2d: Cout={self.weight.shape[0]} not divisible by groups={self.groups}")

    def out_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 3:
            raise IRError(f"Conv2d needs a (C, H, W) source, got shape {in_shape}")
        c, h, w = in_shape
        cout, cin_g, kh, kw = self.weight.shape
        if cin_g * self.groups != c:
            raise IRError(f"Conv2d weight expects {cin_g * self.groups} input channels, source has {c}")
        ho = (h + 2 * self.padding[0] - kh) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - kw) // self.stride[1] + 1
        if ho < 1 or wo < 1:
            raise IRError(f"Conv2d kernel {kh}x{kw} does not fit a {h}x{w} map")
        return (cout, ho, wo)


@dataclass(eq=False)
class Dense:
    """Fully connected: out[o] = sum_i W[o, i] * flatten(in)[i] (C-order flatten of the source shape).

    weight: (out, in).
    """

    weight: np.ndarray
    kind: ClassVar[str] = "dense"

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight)
        if self.weight.ndim != 2:
            raise IRError(f"Dense.weight must be 2-D (out, in), got shape {self.weight.shape}")

    def out_shape(self, in_shape: Shape) -> Shape:
        n = int(np.prod(in_shape))
        if self.weight.shape[1] != n:
            raise IRError(f"Dense weight expects {self.weight.shape[1]} inputs, source has {n} {tuple(in_shape)}")
        return (int(self.weight.shape[0]),)


@dataclass(eq=False)
class AvgPool2d:
    """Pooling as a synaptic op: out[c, y, x] = w * sum_{ky<kh, kx<kw} in[c, y*sh + ky, x*sw + kx].

    No padding. FloatNet: w = 1 / (kh * kw) (an average); IntNet: w is an integer gain and the 1/(kh*kw)
    lives in the destination node's scale (a grouped conv of ones on the target).
    """

    kernel: tuple[int, int]
    stride: tuple[int, int]
    weight: Union[float, int]
    kind: ClassVar[str] = "avgpool2d"

    def __post_init__(self) -> None:
        self.kernel = pair(self.kernel, "AvgPool2d.kernel")
        self.stride = pair(self.stride, "AvgPool2d.stride")
        if min(self.kernel) < 1 or min(self.stride) < 1:
            raise IRError(f"AvgPool2d: kernel and stride >= 1 required, got {self.kernel}, {self.stride}")
        self.weight = np.asarray(self.weight).item()

    def out_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 3:
            raise IRError(f"AvgPool2d needs a (C, H, W) source, got shape {in_shape}")
        c, h, w = in_shape
        ho = (h - self.kernel[0]) // self.stride[0] + 1
        wo = (w - self.kernel[1]) // self.stride[1] + 1
        if ho < 1 or wo < 1:
            raise IRError(f"AvgPool2d kernel {self.kernel} does not fit a {h}x{w} map")
        return (c, ho, wo)


@dataclass(eq=False)
class Identity:
    """out = w * in (same shape): residual shortcuts and delay relays."""

    weight: Union[float, int] = 1.0
    kind: ClassVar[str] = "identity"

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight).item()

    def out_shape(self, in_shape: Shape) -> Shape:
        return tuple(in_shape)


Op = Union[Conv2d, Dense, AvgPool2d, Identity]
OP_TYPES: dict[str, type] = {c.kind: c for c in (Conv2d, Dense, AvgPool2d, Identity)}


@dataclass(eq=False)
class Synapse:
    """One synaptic input of a node: `source` (node name or "input") through `op`.

    `exponent` (IntNet only; 0 in a FloatNet): the integer contribution is shift(op(payload), exponent).
    """

    source: str
    op: Op
    exponent: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.op, tuple(OP_TYPES.values())):
            raise IRError(f"Synapse from {self.source!r}: op must be one of {sorted(OP_TYPES)}, "
                          f"got {type(self.op).__name__}")
        self.exponent = int_value(self.exponent, f"Synapse from {self.source!r}: exponent")
