"""Static shape arithmetic and channel views in the fx walk (contract C2, "Channel split and shuffle"; issue 19).

The walker knows every tensor's shape, so `x.size()`, `x.shape`, their items and the integer arithmetic on them
(`c // groups`, `h * w`) are evaluated to plain values (`Aux`). Shape ops on a map (view / reshape / flatten /
transpose / permute / chunk / split / narrow / a slice) are applied to an *index tensor* of the map's positions
(`View`: flat per-sample indices, batch included, so an op that mixes samples is caught). A view whose net effect
is a channel gather out[j] = x[sel[j]] (a channel split, ShuffleNet's channel shuffle, any reshape sequence that
only permutes or selects channels) becomes the exact map `compose.channel_select`; a C-order flatten is the
older flatten rule; any other view is refused in one line naming the fx node that made it, when it is used.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.fx as fx

from na_deploy.convert.affine import _Lin, apply_flatten
from na_deploy.convert.compose import channel_select

ARITH_FUNCS = {operator.floordiv, operator.mul, operator.add, operator.sub, operator.mod, operator.truediv,
               operator.neg, operator.pow, operator.getitem, getattr, math.prod}
VIEW_METHODS = {"view", "reshape", "flatten", "transpose", "permute", "chunk", "split", "narrow", "unflatten",
                "squeeze", "unsqueeze", "swapaxes", "movedim", "contiguous", "tensor_split"}
VIEW_FUNCS = {torch.reshape, torch.flatten, torch.transpose, torch.permute, torch.chunk, torch.split, torch.narrow,
              torch.squeeze, torch.unsqueeze, torch.swapaxes, torch.movedim, torch.tensor_split, operator.getitem}


@dataclass
class Aux:
    """A non-tensor value (x.size(), x.shape[1], c // 2, ...), evaluated from the known shapes."""

    value: Any = None


@dataclass
class View:
    """A shape op's result on map `lin` that is not yet a map: `idx` (B, ...) holds b*N + k, the position k of
    sample b of `lin` each element reads; `node` is the fx node that made it (named when it is refused)."""

    lin: _Lin
    idx: torch.Tensor
    node: fx.Node


class NotStatic(Exception):
    """An argument that is a tensor (not a shape value)."""


def static(a: Any, env: dict) -> Any:
    """Argument `a` with every fx node replaced by its evaluated value; NotStatic when one is a tensor."""
    if isinstance(a, fx.Node):
        v = env.get(a)
        if isinstance(v, Aux):
            return v.value
        raise NotStatic(a)
    if isinstance(a, (list, tuple)):
        return type(a)(static(x, env) for x in a)
    if isinstance(a, slice):
        return slice(static(a.start, env), static(a.stop, env), static(a.step, env))
    if isinstance(a, dict):
        return {k: static(v, env) for k, v in a.items()}
    return a


def index_of(lin: _Lin, batch: int) -> torch.Tensor:
    """The identity index tensor (batch,) + lin.shape of a map."""
    n = math.prod(lin.shape)
    return torch.arange(batch * n, dtype=torch.int64).reshape((batch,) + tuple(lin.shape))


def per_sample(v: View) -> Optional[torch.Tensor]:
    """The per-sample gather (indices into one sample of v.lin), or None when the view mixes samples or moves
    the batch dimension."""
    n = math.prod(v.lin.shape)
    idx = v.idx
    if idx.dim() == 0 or idx.shape[0] < 1:
        return None
    b = idx.shape[0]
    base = idx[0]
    offs = (torch.arange(b, dtype=torch.int64) * n).reshape((b,) + (1,) * base.dim())
    if base.numel() and (int(base.min()) < 0 or int(base.max()) >= n):
        return None
    if not torch.equal(idx, base.unsqueeze(0) + offs):
        return None
    return base


def classify(v: View) -> tuple[str, Any]:
    """("same", None) | ("flatten", None) | ("select", sel) | ("view", None) for a view of map v.lin."""
    g = per_sample(v)
    if g is None:
        return "view", None
    shape = tuple(v.lin.shape)
    n = math.prod(shape)
    flat = g.reshape(-1)
    if tuple(g.shape) == shape and torch.equal(flat, torch.arange(n)):
        return "same", None
    if g.dim() == 1 and torch.equal(flat, torch.arange(n)):
        return "flatten", None
    if g.dim() == 3 and len(shape) == 3 and tuple(g.shape[1:]) == shape[1:]:
        hw = shape[1] * shape[2]
        sel = g[:, 0, 0] // hw
        if torch.equal(g, sel[:, None, None] * hw + torch.arange(hw).reshape(shape[1:])):
            return "select", sel.numpy()
    return "view", None


def describe(v: View) -> str:
    """The refusal of a view that is neither a channel gather nor a flatten."""
    return (f"gives a {tuple(v.idx.shape[1:])} view of a {tuple(v.lin.shape)} map that is not a channel split, "
            "channel permutation or C-order flatten; allowed: chunk / split / narrow / slices on channels, a "
            "reshape sequence that only permutes channels (channel shuffle), flatten to (B, features)")


def apply_view(idx: torch.Tensor, n: fx.Node, args: list, kwargs: dict) -> Any:
    """Run the shape op of fx node `n` on an index tensor (args: the op's other arguments, evaluated)."""
    if n.op == "call_method":
        return getattr(idx, n.target)(*args, **kwargs)
    return n.target(idx, *args, **kwargs)


class Shapes:
    """Shape values and views for one fx walk (`fx_walk._Converter`: its `env`, `lin`, `refuse`, `algebra` and
    `path`). `call_function` / `call_method` return (True, value) for what they handle, else (False, None)."""

    def __init__(self, walker: Any):
        self.walker = walker
        self.batch = 2  # the batch ShapeProp ran with (`set_batch` reads it from the placeholder)

    def set_batch(self, placeholder: fx.Node) -> None:
        tm = placeholder.meta.get("tensor_meta")
        if tm is not None and hasattr(tm, "shape"):
            self.batch = int(tm.shape[0])

    def value(self, a: Any) -> Any:
        return self.walker.env.get(a) if isinstance(a, fx.Node) else None

    def full_shape(self, a: Any, n: fx.Node) -> tuple[int, ...]:
        """The whole shape (batch included) of tensor argument `a` of fx node `n`."""
        v = self.value(a)
        if isinstance(v, View):
            return tuple(v.idx.shape)
        return (self.batch,) + tuple(self.walker.lin(a, n).shape)

    def statics(self, n: fx.Node, args: Any) -> Any:
        """`args` with shape values evaluated; refused when one is a tensor."""
        try:
            return static(args, self.walker.env)
        except NotStatic as e:
            self.walker.refuse(n, f"with a tensor argument {e.args[0]!r}; allowed: shape values (x.size(), c // g)")

    def view_op(self, n: fx.Node) -> Any:
        """A shape op applied to the index tensor of its map; settled into a map where it is exact."""
        v = self.value(n.args[0])
        if isinstance(v, _Lin):
            v = View(v, index_of(v, self.batch), n)
        elif not isinstance(v, View):
            self.walker.refuse(n, f"on {n.args[0]!r}; allowed: shape ops on tensors")
        args, kwargs = self.statics(n, list(n.args[1:])), self.statics(n, dict(n.kwargs))
        try:
            out = apply_view(v.idx, n, args, kwargs)
        except Exception as e:  # torch raises many types
            self.walker.refuse(n, f"cannot be applied to a {tuple(v.idx.shape)} tensor ({str(e).splitlines()[0]})")
        return self.settle(n, v.lin, out)

    def settle(self, n: fx.Node, lin: _Lin, out: Any) -> Any:
        """The value of a view `out` of `lin`: lin itself, its flatten, a channel gather, or a pending View."""
        if isinstance(out, (tuple, list)):
            return tuple(self.settle(n, lin, o) for o in out)
        if not isinstance(out, torch.Tensor):
            self.walker.refuse(n, f"returns {type(out).__name__}; allowed: tensors")
        v = View(lin, out, n)
        kind, sel = classify(v)
        if kind == "same":
            return lin
        if kind == "flatten":
            return self.walker.algebra(n, apply_flatten, lin, tuple(out.shape[1:]))
        if kind == "select":
            return self.walker.algebra(n, channel_select, lin, sel, f"'{self.walker.path(n)}'")
        return v

    def call_function(self, n: fx.Node) -> tuple[bool, Any]:
        """Shape arithmetic, x.shape, a part of a chunk / split, and shape ops of views (torch.flatten of a map
        is left to the older flatten rule)."""
        f = n.target
        if f in ARITH_FUNCS:  # shape arithmetic: x.size(1) // 2, x.shape[2], ...
            try:
                vals, kw = static(list(n.args), self.walker.env), static(dict(n.kwargs), self.walker.env)
            except NotStatic:
                vals = None
            if vals is not None:
                try:
                    return True, Aux(f(*vals, **kw))
                except Exception as e:  # an arithmetic error on shape values
                    self.walker.refuse(n, f"fails on shape values {vals} ({str(e).splitlines()[0]})")
        src = self.value(n.args[0]) if n.args else None
        if f is operator.getitem and isinstance(src, tuple):  # one part of a chunk / split
            return True, src[self.statics(n, n.args[1])]
        if f is getattr:
            if n.args[1] == "shape" and isinstance(src, (_Lin, View)):
                return True, Aux(torch.Size(self.full_shape(n.args[0], n)))
            self.walker.refuse(n, f"of attribute {n.args[1]!r}; allowed: x.shape")
        if f in VIEW_FUNCS and (isinstance(src, View) or isinstance(src, _Lin) and f is not torch.flatten):
            return True, self.view_op(n)
        return False, None

    def call_method(self, n: fx.Node) -> tuple[bool, Any]:
        """x.size() / x.size(d) / x.dim(), a flatten of a map (the older rule), every other shape op."""
        m = n.target
        if m in ("size", "dim"):
            full = self.full_shape(n.args[0], n)
            if m == "dim":
                return True, Aux(len(full))
            rest = self.statics(n, list(n.args[1:]))
            dim = rest[0] if rest else self.statics(n, n.kwargs.get("dim"))
            return True, Aux(torch.Size(full) if dim is None else full[dim])
        v = self.value(n.args[0])
        tm = n.meta.get("tensor_meta")
        if isinstance(v, _Lin) and m in ("view", "reshape", "flatten") and hasattr(tm, "shape"):
            out = tuple(int(d) for d in tm.shape[1:])
            if len(out) == 1 or out == tuple(v.shape):  # the older flatten rule
                return True, self.walker.flatten(n, v)
        if isinstance(v, (_Lin, View)) and m in VIEW_METHODS or isinstance(v, View) and m in ("clone", "detach"):
            return True, self.view_op(n)
        return False, None


__all__ = ["Shapes", "ARITH_FUNCS", "Aux", "NotStatic", "VIEW_FUNCS", "VIEW_METHODS", "View", "apply_view", "classify",
           "describe", "index_of", "per_sample", "static"]
