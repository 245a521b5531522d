"""The affine algebra of conversion: BN folding and affine maps of earlier activations (no torch.fx here).

Every tensor between two quantized activations is an `_Lin`: a set of `_Term`s (one per source activation,
each a chain of linear ops composed into one IR op) plus a bias map. The functions below apply one torch
op to such a map exactly (conv, linear, BN, average pool, flatten, residual add) or raise `Refusal` with the
reason; the fx walker (`fx_walk`) names the fx node in the final ConversionError.

Rules (each one exact; see the package docstring for the whole list):
* BN folding: y = g (Wx + b - mu)/sqrt(var + eps) + beta
      -> W' = W * g/sqrt(var+eps) (per output channel),  b' = (b - mu) * g/sqrt(var+eps) + beta.
* AvgPool2d(k, stride k) then Conv2d(K, stride s, pad P) = one Conv2d with kernel K*k, stride s*k, pad P*k
  and weights W/k^2 repeated k x k (exact when the pooled map's H, W are divisible by k); a pool then a
  Linear = one Dense (the composed matrix); consecutive non-overlapping pools compose (k1 then k2 = k1*k2).
* Two paths from one source merge into one synapse when exact (`_merge_terms`).
* Input normalisation x_norm = x_uint8 * channel_scale_c folds into the first layer's weights (C4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from na_deploy.errors import ConversionError, NaDeployError
from na_deploy.ir import INPUT_NAME, AvgPool2d, Conv2d, Dense, Identity
from na_deploy.simulate.torch_ops import compile_op

Shape = tuple[int, ...]


class Refusal(Exception):
    """An op that has no exact affine form here; `why` completes "<fx node>: <op name> ..."."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


# ---------------------------------------------------------------------------------------- BN folding
def bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BN as y = a*x + c per channel: a = gamma/sqrt(var + eps), c = beta - mu*a (float64)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ConversionError(f"{type(bn).__name__} without running statistics (track_running_stats=False) "
                              "normalises with batch statistics and cannot be folded; allowed: running stats")
    var = bn.running_var.detach().double().cpu().numpy()
    mean = bn.running_mean.detach().double().cpu().numpy()
    gamma = bn.weight.detach().double().cpu().numpy() if bn.weight is not None else np.ones_like(mean)
    beta = bn.bias.detach().double().cpu().numpy() if bn.bias is not None else np.zeros_like(mean)
    a = gamma / np.sqrt(var + float(bn.eps))
    return a, beta - mean * a


def fold_batchnorm(weight: np.ndarray, bias: Optional[np.ndarray], bn: nn.modules.batchnorm._BatchNorm
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Fold eval-mode BN into the preceding conv/linear (output channel = axis 0 of `weight`).

    W' = W * a[:, None, ...],  b' = b * a + c   with a = gamma/sqrt(var + eps), c = beta - mu*a  (float64).
    """
    a, c = bn_affine(bn)
    weight = np.asarray(weight, dtype=np.float64)
    if weight.shape[0] != a.shape[0]:
        raise ConversionError(f"BatchNorm with {a.shape[0]} channels follows a layer with {weight.shape[0]} outputs")
    b = np.zeros(weight.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
    return weight * a.reshape((-1,) + (1,) * (weight.ndim - 1)), b * a + c


# ------------------------------------------------------------------------------- affine-map values
@dataclass
class _Term:
    """The contribution of one source activation: `op` applied to it, then optionally flattened.

    op: "identity" | "pool" (kernel/stride, no padding) | "conv" (weight, stride, padding, groups) | "dense"."""

    op: str
    src_shape: Shape
    shape: Shape                       # per-sample shape of this term's value now
    weight: Optional[np.ndarray] = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    kernel: tuple[int, int] = (1, 1)
    flat: bool = False

    def ir_op(self):
        """The IR op computing this term: Identity | AvgPool2d | Conv2d | Dense."""
        if self.op == "dense":
            return Dense(self.weight)
        if self.op == "chanmap":
            return None  # an uneven adaptive pool reaches a neuron only through Flatten + Linear
        if self.flat and tuple(self.shape) != tuple(self.src_shape):
            return None  # a flattened map without a Linear cannot feed a neuron of the source's shape
        if self.op == "identity":
            return Identity(1.0)
        if self.op == "pool":
            return AvgPool2d(self.kernel, self.stride, 1.0 / (self.kernel[0] * self.kernel[1]))
        return Conv2d(self.weight, self.stride, self.padding, self.groups)


@dataclass
class _Lin:
    """sum over sources of term(source) + bias, a tensor of per-sample `shape` (bias None = 0)."""

    terms: dict[str, _Term]
    shape: Shape
    bias: Optional[np.ndarray] = None
    is_sum: bool = False
    last: str = ""                     # module path of the last Linear/Conv (names the readout)

    @classmethod
    def of_source(cls, name: str, shape: Shape) -> "_Lin":
        """The activation of source `name` itself (one identity term, no bias)."""
        return cls({name: _Term("identity", shape, shape)}, shape)


def _pair(v: Any) -> tuple[int, int]:
    """An int or a pair of ints as a pair of ints."""
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def _bias_vector(bias: Optional[np.ndarray], shape: Shape, node: str) -> np.ndarray:
    """Per-channel (per-neuron for flat nodes) bias from a bias map that must be constant per channel."""
    if bias is None:
        return np.zeros(shape[0])
    b = np.asarray(bias, dtype=np.float64).reshape(shape[0], -1)
    if b.shape[1] > 1 and not np.allclose(b, b[:, :1], rtol=1e-12, atol=1e-12 * max(1.0, np.abs(b).max())):
        raise ConversionError(f"node {node}: the folded bias varies across positions of a channel (a bias "
                              "before a padded conv?); allowed: one bias per channel")
    return b[:, 0].copy()


def _dense_of(term: _Term, w_lin: np.ndarray) -> np.ndarray:
    """W_lin @ M where M is the (numel(term.shape), numel(src_shape)) matrix of the term's op (float64).

    Computed as vector-Jacobian products of the op (exact up to float64 rounding), one per output row."""
    if term.op == "dense":
        return w_lin @ term.weight
    if term.op == "chanmap":  # the same matrix on every channel (uneven adaptive pools, `compose`)
        rows = w_lin.reshape(w_lin.shape[0], term.src_shape[0], -1) @ term.weight
        return rows.reshape(w_lin.shape[0], -1)
    if term.op == "identity":
        return np.array(w_lin, dtype=np.float64, copy=True)
    fn = compile_op(replace(term, flat=False).ir_op(), torch.float64, "cpu")
    x0 = torch.zeros((1,) + tuple(term.src_shape), dtype=torch.float64)
    _, vjp = torch.func.vjp(lambda x: fn(x).reshape(-1), x0)
    rows = torch.func.vmap(vjp)(torch.as_tensor(w_lin, dtype=torch.float64))[0]
    return rows.reshape(w_lin.shape[0], -1).numpy()


def _as_full_conv(t: _Term) -> Optional[tuple[np.ndarray, tuple[int, int], tuple[int, int]]]:
    """(weight (Cout, Cin, kh, kw) with groups expanded, stride, padding) of an identity / pool / conv term."""
    cin = t.src_shape[0]
    if t.op == "identity":
        return np.eye(cin)[:, :, None, None], (1, 1), (0, 0)
    if t.op == "pool":
        w = np.zeros((cin, cin) + tuple(t.kernel))
        w[np.arange(cin), np.arange(cin)] = 1.0 / (t.kernel[0] * t.kernel[1])
        return w, t.stride, (0, 0)
    cout, cin_g, kh, kw = t.weight.shape
    cout_g = cout // t.groups
    w = np.zeros((cout, cin, kh, kw))
    for g in range(t.groups):
        w[g * cout_g:(g + 1) * cout_g, g * cin_g:(g + 1) * cin_g] = t.weight[g * cout_g:(g + 1) * cout_g]
    return w, t.stride, t.padding


def _merge_terms(a: _Term, b: _Term) -> Optional[_Term]:
    """One term computing a(x) + b(x) exactly (same source x), or None.

    Flat / dense: W_a + W_b of the materialised matrices. Maps: both as dense-channel convs with one stride;
    kernels embedded in a common window so tap offsets (ky - P) line up: P = max(P_a, P_b),
    K = P + max(K_a - 1 - P_a, K_b - 1 - P_b) + 1; exact when the common conv's output shape is the sum's."""
    if len(a.shape) == 1:
        eye = np.eye(math.prod(a.shape))
        return _Term("dense", a.src_shape, a.shape, _dense_of(a, eye) + _dense_of(b, eye))
    if a.flat or b.flat or a.op == "dense" or b.op == "dense":
        return None
    (wa, sa, pa), (wb, sb, pb) = _as_full_conv(a), _as_full_conv(b)
    if sa != sb or wa.shape[:2] != wb.shape[:2]:
        return None
    lo = tuple(max(pa[i], pb[i]) for i in range(2))
    hi = tuple(max(wa.shape[2 + i] - 1 - pa[i], wb.shape[2 + i] - 1 - pb[i]) for i in range(2))
    w = np.zeros(wa.shape[:2] + (lo[0] + hi[0] + 1, lo[1] + hi[1] + 1))
    for wt, p in ((wa, pa), (wb, pb)):
        oy, ox = lo[0] - p[0], lo[1] - p[1]
        w[:, :, oy:oy + wt.shape[2], ox:ox + wt.shape[3]] += wt
    try:
        ok = tuple(Conv2d(w, sa, lo).out_shape(a.src_shape)) == tuple(a.shape)
    except NaDeployError:
        ok = False
    return _Term("conv", a.src_shape, a.shape, w, sa, lo, 1) if ok else None


def _fold_input_scale(op, scale: np.ndarray, in_shape: Shape, node: str):
    """Fold x_norm[c] = x[c] * scale[c] into the first layer's op (C4)."""
    c = in_shape[0]
    if scale.size != c:
        raise ConversionError(f"channel_scale has {scale.size} entries, the input has {c} channels")
    if isinstance(op, Conv2d):
        cout, cin_g = op.weight.shape[:2]
        per_out = scale[(np.arange(cout) // (cout // op.groups))[:, None] * cin_g + np.arange(cin_g)[None, :]]
        return Conv2d(op.weight * per_out[:, :, None, None], op.stride, op.padding, op.groups)
    if isinstance(op, Dense):
        w = op.weight.reshape(op.weight.shape[0], c, -1) * scale[None, :, None]
        return Dense(w.reshape(op.weight.shape))
    if isinstance(op, AvgPool2d) and np.all(scale == scale[0]):
        return AvgPool2d(op.kernel, op.stride, op.weight * float(scale[0]))
    raise ConversionError(f"node {node}: a {op.kind} synapse straight from the raw input cannot carry the input "
                          "normalisation (per-channel scale); allowed: a Conv2d or Linear as the first layer")


# ------------------------------------------------------------------ torch ops applied to an affine map
def single_term(lin: _Lin, what: str) -> tuple[str, _Term]:
    """The (source, term) of a map with one term that is not a residual sum; Refusal otherwise."""
    if lin.is_sum or len(lin.terms) != 1:
        raise Refusal(f"applied to a residual sum; a sum must feed a QuantReLU directly ({what})")
    return next(iter(lin.terms.items()))


def conv_padding(padding: Any, stride: Any, kh: int, kw: int) -> Any:
    """Integer padding of a conv given as an int / pair / 'valid' / 'same' (stride 1, odd kernel)."""
    if not isinstance(padding, str):
        return padding
    if padding == "valid":
        return (0, 0)
    if padding == "same" and _pair(stride) == (1, 1) and kh % 2 and kw % 2:
        return (kh // 2, kw // 2)
    raise Refusal(f"with padding={padding!r}; allowed: integers, 'valid', 'same' (stride 1, odd k)")


def _conv_term(t: _Term, lin_shape: Shape, out: Shape, w: np.ndarray, stride: tuple[int, int],
               padding: tuple[int, int], groups: int) -> _Term:
    """The conv term of conv(term): on an activation, or folded through a non-overlapping average pool."""
    if t.op == "identity":
        return _Term("conv", t.src_shape, out, w, stride, padding, int(groups))
    if t.op == "pool" and t.kernel == t.stride:
        k = t.kernel
        if lin_shape[1] * k[0] != t.src_shape[1] or lin_shape[2] * k[1] != t.src_shape[2]:
            raise Refusal(f"after an average pool {k} over a {t.src_shape[1]}x{t.src_shape[2]} map that the "
                          "pool does not divide evenly: no exact fold into the conv; allowed: divisible maps")
        w2 = np.repeat(np.repeat(w, k[0], axis=2), k[1], axis=3) / (k[0] * k[1])
        return _Term("conv", t.src_shape, out, w2, (stride[0] * k[0], stride[1] * k[1]),
                     (padding[0] * k[0], padding[1] * k[1]), int(groups))
    raise Refusal(f"after a {t.op} op with no activation in between (no exact single synapse); "
                  "allowed: activation or non-overlapping average pool before a conv")


def apply_conv(lin: _Lin, out: Shape, path: str, weight: torch.Tensor, bias: Optional[torch.Tensor], stride,
               padding, dilation, groups, padding_mode: str = "zeros") -> _Lin:
    """conv2d(lin) with output shape `out`, as an affine map (`path` names the layer)."""
    src, t = single_term(lin, "conv")
    w = weight.detach().double().cpu().numpy()
    kh, kw = w.shape[2:]
    if _pair(dilation) != (1, 1) or padding_mode != "zeros":
        raise Refusal(f"with dilation {dilation} / padding_mode {padding_mode!r}; allowed: dilation 1, zeros")
    padding = conv_padding(padding, stride, kh, kw)
    stride, padding = _pair(stride), _pair(padding)
    if t.flat or len(lin.shape) != 3:
        raise Refusal(f"on a tensor of shape {lin.shape}; allowed: (C, H, W) maps")
    nt = _conv_term(t, lin.shape, out, w, stride, padding, groups)
    b = None
    if bias is not None:
        b = np.broadcast_to(bias.detach().double().cpu().numpy()[:, None, None], out).copy()
    return _Lin({src: nt}, out, b, False, path)


def apply_linear(lin: _Lin, path: str, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> _Lin:
    """linear(lin) as an affine map: one Dense term (the composed matrix) and the propagated bias."""
    src, t = single_term(lin, "linear")
    if len(lin.shape) != 1:
        raise Refusal(f"on a tensor of shape {lin.shape}; flatten to (B, features) first")
    w = weight.detach().double().cpu().numpy()
    out = (w.shape[0],)
    nt = _Term("dense", t.src_shape, out, _dense_of(t, w))
    b = np.zeros(out) if bias is None else bias.detach().double().cpu().numpy().copy()
    if lin.bias is not None:
        b = b + w @ lin.bias.reshape(-1)
    return _Lin({src: nt}, out, b, False, path)


def apply_batchnorm(lin: _Lin, bn: nn.Module) -> _Lin:
    """Eval-mode BN folded into the conv/linear term that `lin` ends with (and into its bias map)."""
    src, t = single_term(lin, "BatchNorm on a residual sum cannot be folded")
    if t.op not in ("conv", "dense") or t.flat:
        raise Refusal(f"does not directly follow a Conv2d/Linear (it follows a {t.op} op); BN is folded only "
                      "into the preceding conv/linear")
    if len(lin.shape) not in (1, 3):
        raise Refusal(f"on a tensor of shape {lin.shape}; allowed: (C, H, W) after a conv or (N,) after a linear")
    a, c = bn_affine(bn)
    w, _ = fold_batchnorm(t.weight, None, bn)
    per_channel = (-1,) + (1,) * (len(lin.shape) - 1)
    base = lin.bias if lin.bias is not None else np.zeros(lin.shape)
    bmap = base * a.reshape(per_channel) + c.reshape(per_channel)
    return _Lin({src: replace(t, weight=w)}, lin.shape, bmap, False, lin.last)


def apply_pool(lin: _Lin, out: Shape, kernel: Any, stride: Any) -> _Lin:
    """Average pool (no padding) of `lin` with output shape `out`: a pool term, composed with an earlier
    non-overlapping pool when both are non-overlapping."""
    src, t = single_term(lin, "average pool")
    if t.flat or len(lin.shape) != 3:
        raise Refusal(f"on a tensor of shape {lin.shape}; allowed: (C, H, W) maps")
    k, s = _pair(kernel), _pair(stride if stride is not None and stride != [] else kernel)
    if t.op == "identity":
        nt = _Term("pool", t.src_shape, out, kernel=k, stride=s)
    elif t.op == "pool" and t.kernel == t.stride and k == s:
        nt = _Term("pool", t.src_shape, out, kernel=(t.kernel[0] * k[0], t.kernel[1] * k[1]),
                   stride=(t.kernel[0] * k[0], t.kernel[1] * k[1]))
    else:
        raise Refusal(f"after a {t.op} op with no activation in between; allowed: pooling after an "
                      "activation (or after another non-overlapping pool)")
    return _Lin({src: nt}, out, None, False, lin.last)


def apply_flatten(lin: _Lin, out: Shape) -> _Lin:
    """Reshape of `lin` to `out`: a no-op, or a C-order flatten to (features,)."""
    if out == lin.shape:
        return lin
    if len(out) != 1 or out[0] != math.prod(lin.shape):
        raise Refusal(f"reshapes {lin.shape} to {out}; allowed: flatten to (B, features)")
    terms = {s: replace(t, shape=out, flat=True) for s, t in lin.terms.items()}
    b = None if lin.bias is None else lin.bias.reshape(out)
    return _Lin(terms, out, b, lin.is_sum, lin.last)


def apply_add(a: _Lin, b: _Lin) -> _Lin:
    """a + b (residual add): the union of both maps' terms; two paths from one source merge when exact."""
    if a.shape != b.shape:
        raise Refusal(f"of shapes {a.shape} and {b.shape}; allowed: equal shapes (no broadcasting)")
    if INPUT_NAME in a.terms or INPUT_NAME in b.terms:
        raise Refusal("has a shortcut from the raw input (graded pixels cannot be delay-relayed); start "
                      "residual paths after the first neuron layer")
    terms = {**a.terms, **b.terms}
    for src in set(a.terms) & set(b.terms):  # two paths from one source: one synapse if exact
        merged = _merge_terms(a.terms[src], b.terms[src])
        if merged is None:
            raise Refusal(f"sums two paths from the same source {src} that no single synaptic op computes "
                          "exactly; allowed: distinct sources, or same-stride convs / identity / linear")
        terms[src] = merged
    bias = a.bias if b.bias is None else (b.bias if a.bias is None else a.bias + b.bias)
    return _Lin(terms, a.shape, bias, True, a.last or b.last)
