"""torch QAT model -> FloatNet (DESIGN contract C2, C3, C4, C7).

`to_floatnet(model, input_shape, channel_scale)` traces the eval-mode model with torch.fx (QuantReLU kept
as a leaf) and walks the graph once. Every tensor between two quantized activations is an *affine map of
earlier activations*: a set of terms (one per source activation, each a chain of linear ops composed into
one IR op) plus a bias map. A QuantReLU turns the map into a `NeuronNode`; the model output into the
`ReadoutNode`.

Rules (each one exact):
* BN folding (`fold_batchnorm`): y = g (Wx + b - mu)/sqrt(var + eps) + beta
      -> W' = W * g/sqrt(var+eps) (per output channel),  b' = (b - mu) * g/sqrt(var+eps) + beta.
  BN must directly follow a Conv2d / Linear (a BN on a residual sum or on an activation is refused).
* QuantReLU(p, s) -> NeuronNode: threshold th = p*s, levels p, pre-charge th/2, bias = folded bias (C2).
  A spike of that node carries the value th (so weights out of it stay W; the ANN value is s*n).
* Residual add (`+`, torch.add, operator.add / iadd, Tensor.add): the terms of both branches become
  synapses of one node (identity branch -> Identity(1.0), conv+BN branch -> Conv2d); the sum must feed a
  QuantReLU (or the model output) directly. Two paths from the *same* source (relu(conv(a) + a)) merge into
  one synapse when exact (`_merge_terms`: convs of one stride in a common window, or summed Dense matrices).
* Average pooling: AvgPool2d(k, stride k) then Conv2d(K, stride s, pad P) is one Conv2d with kernel K*k,
  stride s*k, pad P*k and weights W/k^2 repeated k x k, exact when the pooled map's H, W are divisible by k;
  pooling followed (through Flatten) by a Linear is one Dense (the composed matrix, e.g. global pooling ->
  W/(H*W) repeated); consecutive non-overlapping pools compose (k1 then k2 = k1*k2). A pool that feeds a
  QuantReLU directly becomes the IR's AvgPool2d op (weight 1/(kh*kw)); anything else is refused.
  AdaptiveAvgPool2d is a plain pool when the map divides evenly into its output size.
* Flatten / view / reshape to (B, -1) are free (Dense uses C-order flatten); Dropout / Identity vanish.
* The last Linear (+ optional BN1d) -> ReadoutNode; class = argmax of its potential (C7).
* Normalisation (C4): x_norm = x_uint8 * channel_scale_c is folded into the first layer's weights
  (W[:, c] *= channel_scale_c), so the FloatNet input is the raw uint8 image.
* MaxPool, ReLU and other activations, any other op: ConversionError naming the fx node / module path.
Afterwards `na_deploy.delays.balance_delays` inserts relays so all paths into a node have equal hop counts
(C3), and a self-check runs the FloatNet as a quantized ANN against the torch model (float64, random
pixels) so a misread op can never pass silently.
"""
from __future__ import annotations

import copy
import math
import operator
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from . import __version__
from .delays import balance_delays
from .errors import ConversionError, NaDeployError
from .ir import INPUT_NAME, AvgPool2d, Conv2d, Dense, FloatNet, Identity, InputNode, NeuronNode, ReadoutNode, Synapse
from .quant import QuantReLU

Shape = tuple[int, ...]

_ALLOWED = ("Conv2d, BatchNorm1d/2d (after Conv2d/Linear), Linear, QuantReLU, AvgPool2d/AdaptiveAvgPool2d, "
            "Flatten/view/reshape, Dropout, Identity, residual add")
_MAXPOOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                    nn.AdaptiveMaxPool3d)
_MAXPOOL_FUNCS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
                  F.adaptive_max_pool3d, torch.max_pool1d, torch.max_pool2d, torch.max_pool3d,
                  F.max_pool2d_with_indices, F.max_pool1d_with_indices}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_FLATTEN_FUNCS = {torch.flatten}
_PASS_FUNCS = {F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout, F.feature_alpha_dropout}
_PASS_METHODS = {"contiguous", "clone", "detach"}
_AUX_METHODS = {"size", "dim"}
_RESHAPE_METHODS = {"view", "reshape", "flatten"}


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
        return cls({name: _Term("identity", shape, shape)}, shape)


@dataclass
class _Aux:
    """A non-tensor value (x.size(0), x.shape, ...): allowed only as arguments of reshapes."""


@dataclass
class _Const:
    """A parameter / buffer read by get_attr (for functional conv2d / linear)."""

    value: torch.Tensor


# --------------------------------------------------------------------------------------- helpers
class _Tracer(fx.Tracer):
    """fx tracer keeping QuantReLU (an autograd.Function inside) as a leaf."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QuantReLU) or super().is_leaf_module(m, qualname)


def _where(n: fx.Node) -> str:
    if n.op == "call_module":
        return f"module '{n.target}' (fx node '{n.name}')"
    stack = n.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack.values()))[0] if stack else ""
    return f"fx node '{n.name}'" + (f" in module '{owner}'" if owner else "")


def _op_name(n: fx.Node, gm: fx.GraphModule) -> str:
    if n.op == "call_module":
        return f"nn.{type(gm.get_submodule(n.target)).__name__}"
    if n.op == "call_method":
        return f"Tensor.{n.target}"
    return getattr(n.target, "__name__", str(n.target))


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def _shape_of(n: fx.Node) -> Shape:
    tm = n.meta.get("tensor_meta")
    if tm is None or not hasattr(tm, "shape"):
        raise ConversionError(f"{_where(n)}: output is not a single tensor; allowed: {_ALLOWED}")
    return tuple(int(d) for d in tm.shape[1:])


def _is_activation(m: nn.Module) -> bool:
    return type(m).__module__ == "torch.nn.modules.activation"


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
    if term.op == "identity":
        return np.array(w_lin, dtype=np.float64, copy=True)
    from .ops import compile_op

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


# ------------------------------------------------------------------------------------- the walker
class _Converter:
    def __init__(self, gm: fx.GraphModule, input_shape: Shape, channel_scale: np.ndarray):
        self.gm = gm
        self.input_shape = input_shape
        self.scale = channel_scale
        self.env: dict[fx.Node, Any] = {}
        self.nodes: list[NeuronNode] = []
        self.readout: Optional[ReadoutNode] = None
        self.p_by_node: dict[str, int] = {}
        self.noise_flags: set[bool] = set()

    # -- value access
    def lin(self, a: Any, n: fx.Node) -> _Lin:
        v = self.env.get(a) if isinstance(a, fx.Node) else None
        if not isinstance(v, _Lin):
            raise ConversionError(f"{_where(n)}: {_op_name(n, self.gm)} expects a tensor argument, got {a!r}; "
                                  f"allowed: {_ALLOWED}")
        return v

    def refuse(self, n: fx.Node, why: str) -> None:
        raise ConversionError(f"{_where(n)}: {_op_name(n, self.gm)} {why}")

    # -- linear ops on affine maps
    def single_term(self, lin: _Lin, n: fx.Node, what: str) -> tuple[str, _Term]:
        if lin.is_sum or len(lin.terms) != 1:
            self.refuse(n, f"applied to a residual sum; a sum must feed a QuantReLU directly ({what})")
        return next(iter(lin.terms.items()))

    def conv(self, n: fx.Node, lin: _Lin, weight: torch.Tensor, bias: Optional[torch.Tensor], stride, padding,
             dilation, groups, padding_mode: str = "zeros") -> _Lin:
        src, t = self.single_term(lin, n, "conv")
        w = weight.detach().double().cpu().numpy()
        kh, kw = w.shape[2:]
        if _pair(dilation) != (1, 1) or padding_mode != "zeros":
            self.refuse(n, f"with dilation {dilation} / padding_mode {padding_mode!r}; allowed: dilation 1, zeros")
        if isinstance(padding, str):
            if padding == "valid":
                padding = (0, 0)
            elif padding == "same" and _pair(stride) == (1, 1) and kh % 2 and kw % 2:
                padding = (kh // 2, kw // 2)
            else:
                self.refuse(n, f"with padding={padding!r}; allowed: integers, 'valid', 'same' (stride 1, odd k)")
        stride, padding = _pair(stride), _pair(padding)
        out = _shape_of(n)
        if t.flat or len(lin.shape) != 3:
            self.refuse(n, f"on a tensor of shape {lin.shape}; allowed: (C, H, W) maps")
        if t.op == "identity":
            nt = _Term("conv", t.src_shape, out, w, stride, padding, int(groups))
        elif t.op == "pool" and t.kernel == t.stride:
            k = t.kernel
            if lin.shape[1] * k[0] != t.src_shape[1] or lin.shape[2] * k[1] != t.src_shape[2]:
                self.refuse(n, f"after an average pool {k} over a {t.src_shape[1]}x{t.src_shape[2]} map that the "
                               "pool does not divide evenly: no exact fold into the conv; allowed: divisible maps")
            w2 = np.repeat(np.repeat(w, k[0], axis=2), k[1], axis=3) / (k[0] * k[1])
            nt = _Term("conv", t.src_shape, out, w2, (stride[0] * k[0], stride[1] * k[1]),
                       (padding[0] * k[0], padding[1] * k[1]), int(groups))
        else:
            self.refuse(n, f"after a {t.op} op with no activation in between (no exact single synapse); "
                           "allowed: activation or non-overlapping average pool before a conv")
        b = None
        if bias is not None:
            b = np.broadcast_to(bias.detach().double().cpu().numpy()[:, None, None], out).copy()
        return _Lin({src: nt}, out, b, False, self.path(n))

    def linear(self, n: fx.Node, lin: _Lin, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> _Lin:
        src, t = self.single_term(lin, n, "linear")
        if len(lin.shape) != 1:
            self.refuse(n, f"on a tensor of shape {lin.shape}; flatten to (B, features) first")
        w = weight.detach().double().cpu().numpy()
        out = (w.shape[0],)
        nt = _Term("dense", t.src_shape, out, _dense_of(t, w))
        b = np.zeros(out) if bias is None else bias.detach().double().cpu().numpy().copy()
        if lin.bias is not None:
            b = b + w @ lin.bias.reshape(-1)
        return _Lin({src: nt}, out, b, False, self.path(n))

    def batchnorm(self, n: fx.Node, lin: _Lin, bn: nn.Module) -> _Lin:
        src, t = self.single_term(lin, n, "BatchNorm on a residual sum cannot be folded")
        if t.op not in ("conv", "dense") or t.flat:
            self.refuse(n, f"does not directly follow a Conv2d/Linear (it follows a {t.op} op); BN is folded only "
                           "into the preceding conv/linear")
        if len(lin.shape) not in (1, 3):
            self.refuse(n, f"on a tensor of shape {lin.shape}; allowed: (C, H, W) after a conv or (N,) after a linear")
        a, c = bn_affine(bn)
        w, _ = fold_batchnorm(t.weight, None, bn)
        per_channel = (-1,) + (1,) * (len(lin.shape) - 1)
        base = lin.bias if lin.bias is not None else np.zeros(lin.shape)
        bmap = base * a.reshape(per_channel) + c.reshape(per_channel)
        return _Lin({src: replace(t, weight=w)}, lin.shape, bmap, False, lin.last)

    def pool(self, n: fx.Node, lin: _Lin, kernel: Any, stride: Any) -> _Lin:
        src, t = self.single_term(lin, n, "average pool")
        if t.flat or len(lin.shape) != 3:
            self.refuse(n, f"on a tensor of shape {lin.shape}; allowed: (C, H, W) maps")
        k, s = _pair(kernel), _pair(stride if stride is not None and stride != [] else kernel)
        out = _shape_of(n)
        if t.op == "identity":
            nt = _Term("pool", t.src_shape, out, kernel=k, stride=s)
        elif t.op == "pool" and t.kernel == t.stride and k == s:
            nt = _Term("pool", t.src_shape, out, kernel=(t.kernel[0] * k[0], t.kernel[1] * k[1]),
                       stride=(t.kernel[0] * k[0], t.kernel[1] * k[1]))
        else:
            self.refuse(n, f"after a {t.op} op with no activation in between; allowed: pooling after an "
                           "activation (or after another non-overlapping pool)")
        return _Lin({src: nt}, out, None, False, lin.last)

    def flatten(self, n: fx.Node, lin: _Lin) -> _Lin:
        out = _shape_of(n)
        if out == lin.shape:
            return lin
        if len(out) != 1 or out[0] != math.prod(lin.shape):
            self.refuse(n, f"reshapes {lin.shape} to {out}; allowed: flatten to (B, features)")
        terms = {s: replace(t, shape=out, flat=True) for s, t in lin.terms.items()}
        b = None if lin.bias is None else lin.bias.reshape(out)
        return _Lin(terms, out, b, lin.is_sum, lin.last)

    def add(self, n: fx.Node, a: _Lin, b: _Lin) -> _Lin:
        if a.shape != b.shape:
            self.refuse(n, f"of shapes {a.shape} and {b.shape}; allowed: equal shapes (no broadcasting)")
        if INPUT_NAME in a.terms or INPUT_NAME in b.terms:
            self.refuse(n, "has a shortcut from the raw input (graded pixels cannot be delay-relayed); start "
                           "residual paths after the first neuron layer")
        terms = {**a.terms, **b.terms}
        for src in set(a.terms) & set(b.terms):  # two paths from one source: one synapse if exact
            merged = _merge_terms(a.terms[src], b.terms[src])
            if merged is None:
                self.refuse(n, f"sums two paths from the same source {src} that no single synaptic op computes "
                               "exactly; allowed: distinct sources, or same-stride convs / identity / linear")
            terms[src] = merged
        bias = a.bias if b.bias is None else (b.bias if a.bias is None else a.bias + b.bias)
        return _Lin(terms, a.shape, bias, True, a.last or b.last)

    # -- emitting nodes
    def synapses(self, lin: _Lin, node: str, n: fx.Node) -> list[Synapse]:
        if INPUT_NAME in lin.terms and len(lin.terms) > 1:
            self.refuse(n, "has a shortcut from the raw input; start residual paths after the first neuron layer")
        syns = []
        for src, t in lin.terms.items():
            op = t.ir_op()
            if op is None:
                self.refuse(n, f"receives a flattened {t.op} map without a Linear; allowed: Linear after Flatten")
            if src == INPUT_NAME:
                op = _fold_input_scale(op, self.scale, self.input_shape, node)
            syns.append(Synapse(src, op))
        return syns

    def quant_relu(self, n: fx.Node, m: QuantReLU, lin: _Lin) -> _Lin:
        name = str(n.target)
        if name in self.p_by_node:
            self.refuse(n, "is called twice; allowed: one QuantReLU module per use site")
        s = float(m.step_size.detach().abs().clamp_min(1e-8).double())
        node = NeuronNode(name=name, shape=lin.shape, inputs=self.synapses(lin, name, n), threshold=m.p * s,
                          bias=_bias_vector(lin.bias, lin.shape, name), levels=m.p)
        self.nodes.append(node)
        self.p_by_node[name] = m.p
        self.noise_flags.add(bool(m.noise_adaptor))
        return _Lin.of_source(name, lin.shape)

    def output(self, n: fx.Node) -> None:
        arg = n.args[0]
        lin = self.env.get(arg) if isinstance(arg, fx.Node) else None
        if not isinstance(lin, _Lin):
            raise ConversionError(f"model output {arg!r} is not a single tensor; allowed: logits of a Linear")
        if len(lin.shape) != 1 or any(t.op != "dense" for t in lin.terms.values()):
            raise ConversionError(f"model output (fx node '{arg.name}') does not come from a Linear layer "
                                  f"(shape {lin.shape}); the last layer must be a Linear (it becomes the readout)")
        name = lin.last or "readout"
        if name in self.p_by_node:
            name = f"{name}.readout"
        self.readout = ReadoutNode(name=name, shape=lin.shape, inputs=self.synapses(lin, name, n),
                                   bias=_bias_vector(lin.bias, lin.shape, name))

    def path(self, n: fx.Node) -> str:
        return str(n.target) if n.op == "call_module" else n.name

    # -- dispatch
    def run(self) -> None:
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                if self.env:
                    raise ConversionError(f"model forward takes more than one input (fx node '{n.name}'); "
                                          "allowed: one image tensor")
                self.env[n] = _Lin.of_source(INPUT_NAME, self.input_shape)
            elif n.op == "get_attr":
                self.env[n] = _Const(_get_attr(self.gm, n.target))
            elif n.op == "call_module":
                self.env[n] = self.call_module(n, self.gm.get_submodule(n.target))
            elif n.op == "call_function":
                self.env[n] = self.call_function(n)
            elif n.op == "call_method":
                self.env[n] = self.call_method(n)
            elif n.op == "output":
                self.output(n)

    def call_module(self, n: fx.Node, m: nn.Module) -> Any:
        if isinstance(m, _MAXPOOL_MODULES):
            self.refuse(n, "(MaxPool) has no spiking equivalent; convert to AvgPool first (quantize_model does this)")
        if isinstance(m, QuantReLU):
            return self.quant_relu(n, m, self.lin(n.args[0], n))
        if isinstance(m, nn.ReLU) or _is_activation(m):
            self.refuse(n, "is not a QuantReLU; quantize the model first (na_deploy.surgery.quantize_model)")
        if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)):
            return self.lin(n.args[0], n)
        x = self.lin(n.args[0], n) if n.args else None
        if type(m) is nn.Conv2d:
            return self.conv(n, x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups, m.padding_mode)
        if type(m) is nn.Linear:
            return self.linear(n, x, m.weight, m.bias)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return self.batchnorm(n, x, m)
        if type(m) is nn.AvgPool2d:
            self.check_avgpool(n, m.padding, m.ceil_mode, m.divisor_override, m.kernel_size, m.stride, x)
            return self.pool(n, x, m.kernel_size, m.stride)
        if type(m) is nn.AdaptiveAvgPool2d:
            return self.adaptive_pool(n, x)
        if type(m) is nn.Flatten:
            return self.flatten(n, x)
        self.refuse(n, f"is not supported; allowed: {_ALLOWED}")

    def check_avgpool(self, n, padding, ceil_mode, divisor_override, kernel, stride, x: _Lin) -> None:
        if _pair(padding) != (0, 0) or divisor_override is not None:
            self.refuse(n, f"with padding {padding} / divisor_override {divisor_override}; allowed: padding 0")
        if ceil_mode:
            k, s = _pair(kernel), _pair(stride if stride else kernel)
            out = _shape_of(n)
            floor = tuple((x.shape[i + 1] - k[i]) // s[i] + 1 for i in range(2))
            if tuple(out[1:]) != floor:
                self.refuse(n, "with ceil_mode=True adds partial windows; allowed: ceil_mode=False")

    def adaptive_pool(self, n: fx.Node, x: _Lin) -> _Lin:
        out = _shape_of(n)
        if len(x.shape) != 3 or x.shape[1] % out[1] or x.shape[2] % out[2]:
            self.refuse(n, f"from {x.shape} to {out}: uneven windows; allowed: map sides divisible by the output")
        k = (x.shape[1] // out[1], x.shape[2] // out[2])
        return self.pool(n, x, k, k)

    def call_function(self, n: fx.Node) -> Any:
        f = n.target
        if f in _MAXPOOL_FUNCS:
            self.refuse(n, "(MaxPool) has no spiking equivalent; convert to AvgPool first (quantize_model does this)")
        if f in _ADD_FUNCS:
            if len(n.args) != 2 or n.kwargs.get("alpha", 1) != 1:
                self.refuse(n, "with extra arguments; allowed: a + b of two tensors")
            a, b = n.args
            if not all(isinstance(v, fx.Node) and isinstance(self.env.get(v), _Lin) for v in (a, b)):
                self.refuse(n, f"with a constant operand ({a!r}, {b!r}); allowed: the sum of two tensors")
            return self.add(n, self.lin(a, n), self.lin(b, n))
        if f in _FLATTEN_FUNCS:
            return self.flatten(n, self.lin(n.args[0], n))
        if f in _PASS_FUNCS:
            return self.lin(n.args[0], n)
        if f is getattr or f is operator.getitem and isinstance(self.env.get(n.args[0]), _Aux):
            return _Aux()
        if f is F.avg_pool2d:
            x = self.lin(n.args[0], n)
            a = _bind(n, ["input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                          "divisor_override"])
            self.check_avgpool(n, a.get("padding", 0), a.get("ceil_mode", False), a.get("divisor_override"),
                               a["kernel_size"], a.get("stride"), x)
            return self.pool(n, x, a["kernel_size"], a.get("stride"))
        if f is F.adaptive_avg_pool2d:
            return self.adaptive_pool(n, self.lin(n.args[0], n))
        if f is torch.mean:
            return self.mean(n)
        if f in (F.conv2d, torch.conv2d):
            a = _bind(n, ["input", "weight", "bias", "stride", "padding", "dilation", "groups"])
            return self.conv(n, self.lin(a["input"], n), self.const(a["weight"], n), self.const(a.get("bias"), n),
                             a.get("stride", 1), a.get("padding", 0), a.get("dilation", 1), a.get("groups", 1))
        if f is F.linear:
            a = _bind(n, ["input", "weight", "bias"])
            return self.linear(n, self.lin(a["input"], n), self.const(a["weight"], n), self.const(a.get("bias"), n))
        if getattr(f, "__name__", "").rstrip("_") in _FUNCTIONAL_ACTIVATION_NAMES:
            self.refuse(n, "is an activation but not a QuantReLU; quantize the model first "
                           "(na_deploy.surgery.quantize_model)")
        self.refuse(n, f"is not supported; allowed: {_ALLOWED}")

    def call_method(self, n: fx.Node) -> Any:
        m = n.target
        if m in _AUX_METHODS:
            return _Aux()
        if m in ("add", "add_"):
            if len(n.args) != 2 or n.kwargs.get("alpha", 1) != 1 or not isinstance(self.env.get(n.args[1]), _Lin):
                self.refuse(n, "with a constant or scaled operand; allowed: a + b of two tensors")
            return self.add(n, self.lin(n.args[0], n), self.lin(n.args[1], n))
        if m in _RESHAPE_METHODS:
            return self.flatten(n, self.lin(n.args[0], n))
        if m in _PASS_METHODS:
            return self.lin(n.args[0], n)
        if m == "mean":
            return self.mean(n)
        if m in ("relu", "relu_", "sigmoid", "tanh", "sigmoid_", "tanh_", "clamp", "clamp_"):
            self.refuse(n, "is an activation but not a QuantReLU; quantize the model first "
                           "(na_deploy.surgery.quantize_model)")
        if m in ("max", "amax"):
            self.refuse(n, "(max pooling) has no spiking equivalent; convert to AvgPool first")
        self.refuse(n, f"is not supported; allowed: {_ALLOWED}")

    def mean(self, n: fx.Node) -> _Lin:
        """x.mean((2, 3)) / torch.mean(x, (-2, -1), keepdim) = global average pool (+ flatten)."""
        x = self.lin(n.args[0], n)
        dims = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        if len(x.shape) != 3 or sorted(d % 4 for d in dims) != [2, 3]:
            self.refuse(n, f"over dims {dims} of shape {x.shape}; allowed: the spatial mean (global pool)")
        pooled = self.pool(n, x, x.shape[1:], x.shape[1:])
        return pooled if pooled.shape == _shape_of(n) else self.flatten(n, pooled)

    def const(self, a: Any, n: fx.Node) -> Optional[torch.Tensor]:
        if a is None:
            return None
        v = self.env.get(a) if isinstance(a, fx.Node) else None
        if not isinstance(v, _Const):
            self.refuse(n, "with a weight computed at run time; allowed: parameters (get_attr)")
        return v.value


_FUNCTIONAL_ACTIVATION_NAMES = {"relu", "gelu", "silu", "mish", "elu", "selu", "celu", "leaky_relu", "hardtanh",
                                "relu6", "softplus", "hardswish", "hardsigmoid", "sigmoid", "tanh", "softmax",
                                "log_softmax", "threshold", "prelu", "rrelu", "glu"}


def _bind(n: fx.Node, names: Sequence[str]) -> dict[str, Any]:
    out = dict(zip(names, n.args))
    out.update(n.kwargs)
    return out


def _get_attr(gm: fx.GraphModule, target: str) -> torch.Tensor:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


# ------------------------------------------------------------------------------------------ public
def trace_model(model: nn.Module) -> fx.GraphModule:
    """torch.fx symbolic trace with QuantReLU as a leaf; ConversionError if the forward cannot be traced."""
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # fx raises many exception types
        msg = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConversionError(f"model {type(model).__name__}: torch.fx cannot trace its forward ({msg}); "
                              "allowed: a traceable forward (no data-dependent control flow)") from e
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


def _check_channel_scale(channel_scale: Any, input_shape: Shape) -> np.ndarray:
    scale = np.asarray(channel_scale if channel_scale is not None else np.ones(input_shape[0]),
                       dtype=np.float64).reshape(-1)
    if scale.size == 1 and input_shape[0] > 1:
        scale = np.full(input_shape[0], float(scale[0]))
    if scale.size != input_shape[0] or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ConversionError(f"channel_scale must hold {input_shape[0]} finite positive values (one per input "
                              f"channel), got {scale.tolist()}")
    return scale


def to_floatnet(model: nn.Module, input_shape: Sequence[int], channel_scale: Any = None, *,
                name: Optional[str] = None, source: Optional[str] = None, self_check: bool = True,
                seed: int = 0) -> FloatNet:
    """Convert an eval-mode QAT torch model to a delay-balanced FloatNet (C2-C4, C7; rules in the module doc).

    input_shape: (C, H, W) of one image; channel_scale: per-channel normalisation x_norm = x_uint8 * scale_c,
    folded into the first layer so the FloatNet consumes raw uint8 pixels. `self_check` runs the FloatNet as a
    quantized ANN against the torch model (float64, 2 random images, seeded) and raises ConversionError when
    the logits differ (a misread op can never pass silently).
    """
    input_shape = tuple(int(d) for d in input_shape)
    if not input_shape or min(input_shape) < 1:
        raise ConversionError(f"input_shape must be positive (C, H, W), got {input_shape}")
    quants = [m for m in model.modules() if isinstance(m, QuantReLU)]
    if not quants:
        raise ConversionError(f"model {name or type(model).__name__} is not a QAT model (no QuantReLU); quantize it "
                              "first (na_deploy.surgery.quantize_model / `na-deploy quantize`)")
    for path, m in model.named_modules():
        if isinstance(m, _MAXPOOL_MODULES):
            raise ConversionError(f"module '{path}': {type(m).__name__} (MaxPool) has no spiking equivalent; "
                                  "convert to AvgPool first (quantize_model does this)")
    scale = _check_channel_scale(channel_scale, input_shape)
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        gm = trace_model(model)
        p0 = next(model.parameters(), None)
        example = torch.zeros((2,) + input_shape, dtype=p0.dtype if p0 is not None else torch.float32,
                              device=p0.device if p0 is not None else "cpu")
        with torch.no_grad():
            try:
                ShapeProp(gm).propagate(example)
            except NaDeployError:
                raise
            except Exception as e:
                cause = e.__cause__ or e  # ShapeProp wraps the model's own error
                msg = (str(cause).splitlines() or [type(cause).__name__])[0]
                raise ConversionError(f"model {name or type(model).__name__} does not run on input shape "
                                      f"{input_shape}: {msg}") from e
            conv = _Converter(gm, input_shape, scale)
            conv.run()
    finally:
        model.train(was_training)
    ps = sorted(set(conv.p_by_node.values()))
    meta = {
        "source": source or "torch", "model": name or type(model).__name__,
        "p": ps[0] if len(ps) == 1 else None, "p_by_node": dict(conv.p_by_node),
        "noise_adaptor": next(iter(conv.noise_flags)) if len(conv.noise_flags) == 1 else None,
        "input_form": "uint8 pixels; channel scale folded into the first layer (C4)",
        "na_deploy_version": __version__,
    }
    net = FloatNet(InputNode(input_shape, scale), conv.nodes, conv.readout, meta)
    net = balance_delays(net)
    net.meta["convert_s"] = round(time.perf_counter() - t0, 4)
    if self_check:
        check_against_torch(net, model, seed=seed)
    return net


def check_against_torch(net: FloatNet, model: nn.Module, n_images: int = 2, seed: int = 0,
                        rtol: float = 1e-6) -> float:
    """Run the FloatNet as a quantized ANN and a float64 copy of the torch model on `n_images` seeded random
    uint8 images; ConversionError if the logits differ by more than rtol * max|logit| (returns that error).

    Both sides evaluate in float64, so a quantization level can only flip on a tie closer than ~1e-12."""
    from .ann_eval import ann_forward

    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_images,) + tuple(net.input.shape), generator=gen, dtype=torch.int64)
    ref_model = copy.deepcopy(model).double().cpu().eval()
    scale = torch.as_tensor(net.input.channel_scale, dtype=torch.float64).view(1, -1, *([1] * (x.dim() - 2)))
    with torch.no_grad():
        ref = ref_model(x.double() * scale)
    got, _ = ann_forward(net, x, device="cpu", dtype=torch.float64, keep_levels=False)
    err = float((got - ref).abs().max())
    tol = rtol * max(1.0, float(ref.abs().max()))
    if not err <= tol:
        raise ConversionError(f"self-check: the FloatNet's ANN logits differ from the torch model's by {err:.3g} "
                              f"(> {tol:.3g}); an op was misread during conversion")
    return err


def convert_checkpoint(ckpt: Any, self_check: bool = True) -> FloatNet:
    """FloatNet of a QAT checkpoint (`na_deploy.checkpoint.Checkpoint` or a path to one)."""
    from .checkpoint import load_checkpoint

    if isinstance(ckpt, (str, os.PathLike)):
        ckpt = load_checkpoint(ckpt)
    where = ckpt.path or "checkpoint"
    if ckpt.kind != "qat":
        raise ConversionError(f"{where}: not a QAT model (checkpoint kind {ckpt.kind!r}); quantize it first "
                              "(`na-deploy quantize`)")
    model = ckpt.build_model()
    net = to_floatnet(model, ckpt.input_shape, ckpt.normalization.channel_scale, name=ckpt.model_name,
                      source=str(where), self_check=self_check)
    net.meta.update({"data_name": ckpt.data_name, "data_fingerprint": ckpt.data_fingerprint,
                     "checkpoint_epoch": int(ckpt.epoch)})
    if ckpt.p is not None:
        net.meta["p"] = int(ckpt.p)
    if ckpt.noise_adaptor is not None:
        net.meta["noise_adaptor"] = bool(ckpt.noise_adaptor)
    return net


__all__ = ["to_floatnet", "convert_checkpoint", "fold_batchnorm", "bn_affine", "trace_model",
           "check_against_torch"]
