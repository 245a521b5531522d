"""`ConvFast`: Lava's `Conv` process with a vectorized `fixed_pt` model (numpy im2col + one matrix product).

Lava 0.10's own `PyConvModelFixed` (lava/proc/conv/models.py) calls `scipy.signal.convolve2d` once per
(output channel, input channel) pair in a Python loop: ~1.6 s per step for one 512 -> 512 3x3 conv of a
CIFAR ResNet-18 on this machine, ~10 s per Lava step for the whole net. `ConvFast` is a subclass of
`Conv` (same constructor, Vars, ports, proc params), so it is built, connected and exported exactly like a
`Conv`; only its process model differs, and that model computes the same integers:

* one step of delay: each step sends the previous step's `a_buf` (zeros first), then receives;
* `num_message_bits == 0`: the input is binarised (`s != 0`, Lava's `astype(bool)`), else used as is;
* Lava's true convolution in its layouts (input (W, H, C), weight (Cout, kW, kH, Cin), padding / stride /
  dilation given as (x, y), `groups` splitting channels in order): out[x, y, k] =
  sum_{m, n, c} pad(s)[x*sx + m*dx, y*sy + n*dy, g*cg + c] * weight[k, kW-1-m, kH-1-n, c], g = k // (Cout/groups);
* `weight_exp` ignored, no weight clipping (as Lava's Conv);
* the result cast to int32 and wrapped (modulo) to 24 signed bits (`utils.signed_clamp`; here
  `na_deploy.integer.wrap_signed`, the one two's-complement wrap of the project).

One deliberate difference: Lava's model declares the `groups` Var int8, so 128 or more groups wrap (128 -> -128:
its output is all zeros; 512 -> 0) and a pooling layer (a grouped Conv, groups = channels) over >= 128 channels
computes garbage there; ConvFast reads `groups` as int32. Up to 127 groups the two agree.

The product runs in float64 (BLAS) when every partial sum is an integer below 2^53 in magnitude (then it is
exact), else in int64. An all-zero input gives zeros without computing. Lava casts its float64 sum to int32
before the 24-bit wrap; the two agree while |sum| < 2^31 (any 8-bit weight with a fan-in below 33,000 graded
8-bit inputs). `tests/test_lava_conv_fast.py` checks equality with Lava's model on random cases.

Lava executes every module of this folder to find process models: no import side effects, no torch here,
absolute imports only.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.conv.process import Conv

from na_deploy.integer import wrap_signed

A_OUT_BITS = 24  # Lava's Conv wraps its output to 24 signed bits
_FLOAT_EXACT = float(2 ** 53)


class ConvFast(Conv):
    """Lava's `Conv` (same arguments, Vars and ports); its `fixed_pt` model is `PyConvFastModelFixed`."""


def _pair(v) -> tuple[int, int]:
    a = np.asarray(v).reshape(-1)
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


def _patches(s: np.ndarray, k: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
             dilation: tuple[int, int]) -> np.ndarray:
    """(X, Y, kW, kH, C) view: patches[x, y, m, n, c] = pad(s)[x*sx + m*dx, y*sy + n*dy, c]."""
    p = np.pad(s, ((padding[0], padding[0]), (padding[1], padding[1]), (0, 0)))
    W, H, C = p.shape
    X = (W - dilation[0] * (k[0] - 1) - 1) // stride[0] + 1
    Y = (H - dilation[1] * (k[1] - 1) - 1) // stride[1] + 1
    if X < 1 or Y < 1:
        raise ValueError(f"conv output would be {X} x {Y}: input {s.shape}, kernel {k}, padding {padding}, "
                         f"dilation {dilation}")
    sw, sh, sc = p.strides
    return np.lib.stride_tricks.as_strided(
        p, shape=(X, Y, k[0], k[1], C),
        strides=(sw * stride[0], sh * stride[1], sw * dilation[0], sh * dilation[1], sc), writeable=False)


def conv_kernel(weight: np.ndarray, groups: int = 1) -> np.ndarray:
    """Lava's (Cout, kW, kH, Cin / groups) weight as (groups, kW*kH*Cin/groups, Cout/groups) int64 matrices,
    spatially flipped (Lava's Conv is a true convolution): the right-hand side of `conv_apply`."""
    w = np.asarray(weight).astype(np.int64)
    cout, kw, kh, cg = w.shape
    G = int(groups)
    if G < 1 or cout % G:
        raise ValueError(f"conv: {cout} output channels do not split into {G} groups")
    return np.ascontiguousarray(w[:, ::-1, ::-1, :].reshape(G, cout // G, kw * kh * cg).transpose(0, 2, 1))


def conv_apply(s: np.ndarray, kern: np.ndarray, kernel_size, stride=1, padding=0, dilation=1,
               kern_f64: np.ndarray | None = None) -> np.ndarray:
    """The integer sum of Lava's `utils.conv` (before its int32 cast and 24-bit wrap) as (X, Y, Cout) int64,
    for s (W, H, Cin) integers and kern = `conv_kernel(weight, groups)` (kern_f64: the same as float64)."""
    s = np.asarray(s)
    G, K, kg = kern.shape
    kw, kh = _pair(kernel_size)
    cg = K // (kw * kh)
    if s.ndim != 3 or s.shape[2] != cg * G or kw * kh * cg != K:
        raise ValueError(f"conv: input {s.shape} does not match kernel {kw}x{kh}, {G} groups of {cg} channels")
    pt = _patches(s.astype(np.int64), (kw, kh), _pair(stride), _pair(padding), _pair(dilation))
    X, Y = pt.shape[:2]
    cols = pt.reshape(X, Y, kw, kh, G, cg).transpose(4, 0, 1, 2, 3, 5).reshape(G, X * Y, K)
    bound = float(np.abs(s).max(initial=0)) * float(np.abs(kern).max(initial=0)) * K
    if bound < _FLOAT_EXACT:  # every partial sum is an integer below 2^53: float64 is exact
        kf = kern.astype(np.float64) if kern_f64 is None else kern_f64
        out = np.rint(np.matmul(cols.astype(np.float64), kf)).astype(np.int64)
    else:
        out = np.matmul(cols, kern)
    return out.transpose(1, 0, 2).reshape(X, Y, G * kg)


def conv_lava_exact(s: np.ndarray, weight: np.ndarray, stride=1, padding=0, dilation=1, groups: int = 1
                    ) -> np.ndarray:
    """`conv_apply(s, conv_kernel(weight, groups), ...)`: s (W, H, Cin), weight (Cout, kW, kH, Cin / groups)."""
    w = np.asarray(weight)
    return conv_apply(s, conv_kernel(w, groups), w.shape[1:3], stride, padding, dilation)


def signed_wrap(x: np.ndarray, bits: int = A_OUT_BITS) -> np.ndarray:
    """Lava's `utils.signed_clamp` of Conv's output: `na_deploy.integer.wrap_signed` at Conv's 24 bits."""
    return wrap_signed(x, bits)


@implements(proc=ConvFast, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyConvFastModelFixed(PyLoihiProcessModel):
    """Vectorized fixed-point Conv: Lava's `PyConvModelFixed` step, one matrix product per step."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    a_buf: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    weight: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=8)
    kernel_size: np.ndarray = LavaPyType(np.ndarray, np.int8, precision=8)
    stride: np.ndarray = LavaPyType(np.ndarray, np.int8, precision=8)
    padding: np.ndarray = LavaPyType(np.ndarray, np.int8, precision=8)
    dilation: np.ndarray = LavaPyType(np.ndarray, np.int8, precision=8)
    groups: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=16)  # Lava: int8, wraps at 128 groups
    num_message_bits: np.ndarray = LavaPyType(np.ndarray, np.int8, precision=5)
    weight_exp: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=8)
    num_weight_bits: np.ndarray = LavaPyType(np.ndarray, np.int8, precision=5)

    def _kernels(self) -> tuple[np.ndarray, np.ndarray]:
        """The prepared kernels, rebuilt whenever `weight` differs from the weights they were made from."""
        cached = getattr(self, "_fast_cache", None)
        if cached is None or not np.array_equal(cached[0], self.weight):
            kern = conv_kernel(self.weight, int(self.groups[0]))
            cached = (np.array(self.weight, copy=True), kern, kern.astype(np.float64))
            self._fast_cache = cached
        return cached[1], cached[2]

    def run_spk(self) -> None:
        self.a_out.send(self.a_buf)
        s = self.s_in.recv()
        if self.num_message_bits.item() == 0:
            s = (s != 0).astype(np.int64)
        if not s.any():
            self.a_buf = np.zeros(self.a_buf.shape, dtype=np.int32)
            return
        kern, kern_f64 = self._kernels()
        out = conv_apply(s, kern, self.weight.shape[1:3], self.stride, self.padding, self.dilation, kern_f64)
        self.a_buf = signed_wrap(out.astype(np.int32))


__all__ = ["ConvFast", "PyConvFastModelFixed", "conv_kernel", "conv_apply", "conv_lava_exact", "signed_wrap",
           "A_OUT_BITS"]
