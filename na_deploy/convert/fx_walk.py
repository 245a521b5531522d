"""The torch.fx walk: trace the QAT model (QuantReLU kept as a leaf) and convert it node by node.

`_Converter.run` visits the fx graph once in order. Each fx node's value is an affine map of earlier
activations (`affine._Lin`), a parameter (`_Const`), a shape value or a pending view (`fx_shapes`). Dispatch
goes by node kind (call_module / call_function / call_method) to one small handler per op; the math lives in `affine`.
A QuantReLU turns the map into a `NeuronNode` (th = p*s, pre-charge th/2, bias = folded bias, C2); the
model output into the `ReadoutNode` (C7); a map an op refuses becomes a graded node first (`fx_nodes`, C2). Anything
else is refused with a ConversionError naming the fx node / module path and what is allowed.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from na_deploy.errors import ConversionError
from na_deploy.ir import INPUT_NAME, NeuronNode, ReadoutNode, Synapse
from na_deploy.training.quantizer import QuantReLU
from na_deploy.convert.affine import (Shape, _bias_vector, _fold_input_scale, _Lin, _pair, apply_add,
                                      apply_batchnorm, apply_flatten, apply_linear)
from na_deploy.convert.compose import adaptive_chanmap, batchnorm_any, concat, conv_any, linear_any, pool_any
from na_deploy.convert.fx_nodes import Materializer
from na_deploy.convert.fx_shapes import Shapes, View, describe

_ALLOWED = ("Conv2d, BatchNorm1d/2d, Linear, QuantReLU, AvgPool2d/AdaptiveAvgPool2d, torch.cat on channels, "
            "channel split/shuffle, Flatten/view/reshape, Dropout, Identity, residual add, shape arithmetic")
_MAXPOOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                    nn.AdaptiveMaxPool3d)
_MAXPOOL_FUNCS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
                  F.adaptive_max_pool3d, torch.max_pool1d, torch.max_pool2d, torch.max_pool3d,
                  F.max_pool2d_with_indices, F.max_pool1d_with_indices}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_FLATTEN_FUNCS = {torch.flatten}
_PASS_FUNCS = {F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout, F.feature_alpha_dropout}
_PASS_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
_PASS_METHODS = {"clone", "detach"}  # contiguous: `fx_shapes.VIEW_METHODS`
_ACTIVATION_METHODS = {"relu", "relu_", "sigmoid", "tanh", "sigmoid_", "tanh_", "clamp", "clamp_"}
_FUNCTIONAL_ACTIVATION_NAMES = {"relu", "gelu", "silu", "mish", "elu", "selu", "celu", "leaky_relu", "hardtanh",
                                "relu6", "softplus", "hardswish", "hardsigmoid", "sigmoid", "tanh", "softmax",
                                "log_softmax", "threshold", "prelu", "rrelu", "glu"}
_MAXPOOL_WHY = "(MaxPool) has no spiking equivalent; convert to AvgPool first (quantize_model does this)"
_ACTIVATION_WHY = "is not a QuantReLU; quantize the model first (na_deploy.training.surgery.quantize_model)"
_ACTIVATION_FN_WHY = ("is an activation but not a QuantReLU; quantize the model first "
                      "(na_deploy.training.surgery.quantize_model)")


@dataclass
class _Const:
    """A parameter / buffer read by get_attr (for functional conv2d / linear)."""

    value: torch.Tensor


# --------------------------------------------------------------------------------------- helpers
class _Tracer(fx.Tracer):
    """fx tracer keeping QuantReLU (an autograd.Function inside) as a leaf."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QuantReLU) or super().is_leaf_module(m, qualname)


def trace_model(model: nn.Module) -> fx.GraphModule:
    """torch.fx symbolic trace with QuantReLU as a leaf; ConversionError if the forward cannot be traced."""
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # fx raises many exception types
        msg = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConversionError(f"model {type(model).__name__}: torch.fx cannot trace its forward ({msg}); "
                              "allowed: a traceable forward (no data-dependent control flow)") from e
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


def _where(n: fx.Node) -> str:
    """Where an fx node comes from, for error messages: the module path and/or the fx node name."""
    if n.op == "call_module":
        return f"module '{n.target}' (fx node '{n.name}')"
    stack = n.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack.values()))[0] if stack else ""
    return f"fx node '{n.name}'" + (f" in module '{owner}'" if owner else "")


def _op_name(n: fx.Node, gm: fx.GraphModule) -> str:
    """The op an fx node calls, as a user writes it (nn.Conv2d, Tensor.view, max_pool2d)."""
    if n.op == "call_module":
        return f"nn.{type(gm.get_submodule(n.target)).__name__}"
    if n.op == "call_method":
        return f"Tensor.{n.target}"
    return getattr(n.target, "__name__", str(n.target))


def _shape_of(n: fx.Node) -> Shape:
    """Per-sample output shape of an fx node (from ShapeProp's tensor_meta)."""
    tm = n.meta.get("tensor_meta")
    if tm is None or not hasattr(tm, "shape"):
        raise ConversionError(f"{_where(n)}: output is not a single tensor; allowed: {_ALLOWED}")
    return tuple(int(d) for d in tm.shape[1:])


def _is_activation(m: nn.Module) -> bool:
    return type(m).__module__ == "torch.nn.modules.activation"


def _bind(n: fx.Node, names: Sequence[str]) -> dict[str, Any]:
    """An fx call's positional and keyword arguments by parameter name."""
    out = dict(zip(names, n.args))
    out.update(n.kwargs)
    return out


def _get_attr(gm: fx.GraphModule, target: str) -> torch.Tensor:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


# ------------------------------------------------------------------------------------- the walker
class _Converter:
    """One pass over a traced, shape-propagated model; collects `nodes`, `readout`, p and noise flags."""

    def __init__(self, gm: fx.GraphModule, input_shape: Shape, channel_scale: np.ndarray):
        self.gm = gm
        self.input_shape = input_shape
        self.scale = channel_scale
        self.env: dict[fx.Node, Any] = {}
        self.nodes: list[NeuronNode] = []
        self.readout: Optional[ReadoutNode] = None
        self.p_by_node: dict[str, int] = {}
        self.noise_flags: set[bool] = set()
        self._functions: dict[Callable, Callable[[fx.Node], Any]] = {
            **{f: self._fn_maxpool for f in _MAXPOOL_FUNCS}, **{f: self._fn_add for f in _ADD_FUNCS},
            **{f: self._fn_flatten for f in _FLATTEN_FUNCS}, **{f: self._fn_pass for f in _PASS_FUNCS},
            F.avg_pool2d: self._fn_avg_pool2d, F.adaptive_avg_pool2d: self._fn_adaptive_avg_pool2d,
            torch.mean: self.mean, F.conv2d: self._fn_conv2d, torch.conv2d: self._fn_conv2d,
            F.linear: self._fn_linear, torch.cat: self._fn_cat, torch.concat: self._fn_cat,
        }
        self.graded = Materializer(self)
        self.shapes = Shapes(self)

    # -- value access
    def lin(self, a: Any, n: fx.Node) -> _Lin:
        """The affine map held by argument `a` of fx node `n`; ConversionError when it is not a tensor."""
        v = self.env.get(a) if isinstance(a, fx.Node) else None
        if isinstance(v, View):
            self.refuse(v.node, describe(v))
        if not isinstance(v, _Lin):
            self.refuse(n, f"expects a tensor argument, got {a!r}; allowed: {_ALLOWED}")
        return v

    def const(self, a: Any, n: fx.Node) -> Optional[torch.Tensor]:
        """The parameter held by argument `a` (None stays None); refused when computed at run time."""
        v = self.env.get(a) if isinstance(a, fx.Node) else None
        if a is not None and not isinstance(v, _Const):
            self.refuse(n, "with a weight computed at run time; allowed: parameters (get_attr)")
        return None if a is None else v.value

    def refuse(self, n: fx.Node, why: str) -> None:
        raise ConversionError(f"{_where(n)}: {_op_name(n, self.gm)} {why}")

    def algebra(self, n: fx.Node, fn: Callable[..., _Lin], *args: Any, **kwargs: Any) -> _Lin:
        """fn(*args, **kwargs) from `affine`, retried on graded nodes (`fx_nodes`); else a ConversionError."""
        out, why = self.graded.apply(fn, args, kwargs, n)
        if why is None:
            return out
        self.refuse(n, why)

    def path(self, n: fx.Node) -> str:
        return str(n.target) if n.op == "call_module" else n.name

    # -- linear ops on affine maps (the math is in `affine`)
    def conv(self, n: fx.Node, lin: _Lin, weight: torch.Tensor, bias: Optional[torch.Tensor], stride, padding,
             dilation, groups, padding_mode: str = "zeros") -> _Lin:
        return self.algebra(n, conv_any, lin, _shape_of(n), self.path(n), weight, bias, stride, padding,
                            dilation, groups, padding_mode)

    def linear(self, n: fx.Node, lin: _Lin, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> _Lin:
        return self.algebra(n, lambda *a: linear_any(*a) or apply_linear(*a), lin, self.path(n), weight, bias)

    def batchnorm(self, n: fx.Node, lin: _Lin, bn: nn.Module) -> _Lin:
        return self.algebra(n, lambda *a: batchnorm_any(*a) or apply_batchnorm(*a), lin, bn)

    def pool(self, n: fx.Node, lin: _Lin, kernel: Any, stride: Any, padding: Any = 0, with_pad: bool = True) -> _Lin:
        """Average pool (zero padding counted when `with_pad`, i.e. count_include_pad) of any map (`compose`)."""
        return self.algebra(n, pool_any, lin, _shape_of(n), kernel, stride, padding, with_pad, self.path(n))

    def flatten(self, n: fx.Node, lin: _Lin) -> _Lin:
        return self.algebra(n, apply_flatten, lin, _shape_of(n))

    def add(self, n: fx.Node, a: _Lin, b: _Lin) -> _Lin:
        return self.algebra(n, apply_add, a, b)

    def check_avgpool(self, n, padding, ceil_mode, divisor_override, kernel, stride, x: _Lin) -> bool:
        """Refuse other divisor overrides, and ceil_mode partial windows divided by their own size; True when every
        window is divided by kh*kw (divisor_override = kh*kw: `quantize_model`'s ceil-mode max-pool, C2)."""
        k, s, p = _pair(kernel), _pair(stride if stride else kernel), _pair(padding)
        if divisor_override is not None and divisor_override != k[0] * k[1]:
            self.refuse(n, f"with divisor_override {divisor_override}; allowed: None or kh*kw = {k[0] * k[1]}")
        if ceil_mode and divisor_override is None and tuple(_shape_of(n)[1:]) != tuple(
                (x.shape[i + 1] + 2 * p[i] - k[i]) // s[i] + 1 for i in range(2)):
            self.refuse(n, "with ceil_mode=True adds partial windows; allowed: ceil_mode=False, or divisor_override="
                        "kh*kw (quantize_model's ceil-mode max-pool: partial windows divided by kh*kw)")
        return divisor_override is not None

    def adaptive_pool(self, n: fx.Node, x: _Lin) -> _Lin:
        """AdaptiveAvgPool2d: a plain pool when the map divides evenly, else the exact per-channel matrix."""
        out = _shape_of(n)
        if len(x.shape) != 3 or x.shape[1] % out[1] or x.shape[2] % out[2]:  # uneven windows, upsampling
            return self.algebra(n, adaptive_chanmap, x, out)
        k = (x.shape[1] // out[1], x.shape[2] // out[2])
        return self.pool(n, x, k, k)

    def mean(self, n: fx.Node) -> _Lin:
        """x.mean((2, 3)) / torch.mean(x, (-2, -1), keepdim) = global average pool (+ flatten)."""
        x = self.lin(n.args[0], n)
        dims = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        if len(x.shape) != 3 or sorted(d % 4 for d in dims) != [2, 3]:
            self.refuse(n, f"over dims {dims} of shape {x.shape}; allowed: the spatial mean (global pool)")
        pooled = self.pool(n, x, x.shape[1:], x.shape[1:])
        return pooled if pooled.shape == _shape_of(n) else self.flatten(n, pooled)

    # -- emitting nodes
    def synapses(self, lin: _Lin, node: str, n: fx.Node) -> list[Synapse]:
        """One IR synapse per term of `lin` (the input normalisation folded into a synapse from the input)."""
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
        """QuantReLU(p, s) -> NeuronNode with th = p*s, p levels and the folded bias (C2)."""
        name = str(n.target)
        if name in self.p_by_node:
            self.refuse(n, "is called twice; allowed: one QuantReLU module per use site")
        s = float(m.step_size.detach().abs().clamp_min(1e-8).double())
        node = NeuronNode(name=name, shape=lin.shape, inputs=self.synapses(lin, name, n), threshold=m.p * s,
                          bias=_bias_vector(lin.bias, lin.shape, name), p=m.p)
        self.nodes.append(node)
        self.p_by_node[name] = m.p
        self.noise_flags.add(bool(m.noise_adaptor))
        return _Lin.of_source(name, lin.shape)

    def output(self, n: fx.Node) -> None:
        """The model output -> ReadoutNode (must be the logits of a Linear, C7)."""
        arg = n.args[0]
        lin = self.env.get(arg) if isinstance(arg, fx.Node) else None
        if isinstance(lin, View):
            self.refuse(lin.node, describe(lin))
        if not isinstance(lin, _Lin):
            raise ConversionError(f"model output {arg!r} is not a single tensor; allowed: logits of a Linear")
        if len(lin.shape) == 1 and any(t.op == "pool" for t in lin.terms.values()):  # pooled logits (SqueezeNet)
            lin = self.linear(n, lin, torch.eye(lin.shape[0], dtype=torch.float64), None)  # exact: the pool's matrix
        if len(lin.shape) != 1 or any(t.op != "dense" for t in lin.terms.values()):
            raise ConversionError(f"model output (fx node '{arg.name}') does not come from a Linear layer "
                                  f"(shape {lin.shape}); the last layer must be a Linear (it becomes the readout)")
        name = lin.last or "readout"
        if name in self.p_by_node:
            name = f"{name}.readout"
        self.readout = ReadoutNode(name=name, shape=lin.shape, inputs=self.synapses(lin, name, n),
                                   bias=_bias_vector(lin.bias, lin.shape, name))

    # -- dispatch
    def run(self) -> None:
        """Visit every fx node in order, storing its value in `env`."""
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                if self.env:
                    raise ConversionError(f"model forward takes more than one input (fx node '{n.name}'); "
                                          "allowed: one image tensor")
                self.env[n] = _Lin.of_source(INPUT_NAME, self.input_shape)
                self.shapes.set_batch(n)
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
        """A submodule call: QuantReLU, pass-through, or a linear op on the first argument's map."""
        if isinstance(m, _MAXPOOL_MODULES):
            self.refuse(n, _MAXPOOL_WHY)
        if isinstance(m, QuantReLU):
            return self.quant_relu(n, m, self.lin(n.args[0], n))
        if isinstance(m, nn.ReLU) or _is_activation(m):
            self.refuse(n, _ACTIVATION_WHY)
        if isinstance(m, _PASS_MODULES):
            return self.lin(n.args[0], n)
        x = self.lin(n.args[0], n) if n.args else None
        if type(m) is nn.Conv2d:
            return self.conv(n, x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups, m.padding_mode)
        if type(m) is nn.Linear:
            return self.linear(n, x, m.weight, m.bias)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return self.batchnorm(n, x, m)
        if type(m) is nn.AvgPool2d:
            full = self.check_avgpool(n, m.padding, m.ceil_mode, m.divisor_override, m.kernel_size, m.stride, x)
            return self.pool(n, x, m.kernel_size, m.stride, m.padding, m.count_include_pad or full)
        if type(m) is nn.AdaptiveAvgPool2d:
            return self.adaptive_pool(n, x)
        if type(m) is nn.Flatten:
            return self.flatten(n, x)
        self.refuse(n, f"is not supported; allowed: {_ALLOWED}")

    def call_function(self, n: fx.Node) -> Any:
        """A free function call, dispatched by function (`_functions`), then getattr/getitem and activations."""
        f = n.target
        done, value = self.shapes.call_function(n)
        if done:
            return value
        handler = self._functions.get(f)
        if handler is not None:
            return handler(n)
        if getattr(f, "__name__", "").rstrip("_") in _FUNCTIONAL_ACTIVATION_NAMES:
            self.refuse(n, _ACTIVATION_FN_WHY)
        self.refuse(n, f"is not supported; allowed: {_ALLOWED}")

    def call_method(self, n: fx.Node) -> Any:
        """A Tensor method call: size/dim, add, reshapes, pass-throughs, mean; activations and max refused."""
        m = n.target
        done, value = self.shapes.call_method(n)
        if done:
            return value
        if m in ("add", "add_"):
            if len(n.args) != 2 or n.kwargs.get("alpha", 1) != 1 or not isinstance(self.env.get(n.args[1]), _Lin):
                self.refuse(n, "with a constant or scaled operand; allowed: a + b of two tensors")
            return self.add(n, self.lin(n.args[0], n), self.lin(n.args[1], n))
        if m in _PASS_METHODS:
            return self.lin(n.args[0], n)
        if m == "mean":
            return self.mean(n)
        if m in _ACTIVATION_METHODS:
            self.refuse(n, _ACTIVATION_FN_WHY)
        if m in ("max", "amax"):
            self.refuse(n, "(max pooling) has no spiking equivalent; convert to AvgPool first")
        self.refuse(n, f"is not supported; allowed: {_ALLOWED}")

    # -- call_function handlers
    def _fn_maxpool(self, n: fx.Node) -> Any:
        self.refuse(n, _MAXPOOL_WHY)

    def _fn_add(self, n: fx.Node) -> _Lin:
        if len(n.args) != 2 or n.kwargs.get("alpha", 1) != 1:
            self.refuse(n, "with extra arguments; allowed: a + b of two tensors")
        a, b = n.args
        if not all(isinstance(v, fx.Node) and isinstance(self.env.get(v), _Lin) for v in (a, b)):
            self.refuse(n, f"with a constant operand ({a!r}, {b!r}); allowed: the sum of two tensors")
        return self.add(n, self.lin(a, n), self.lin(b, n))

    def _fn_cat(self, n: fx.Node) -> _Lin:
        """torch.cat(parts, 1): channel concatenation (`compose.concat`)."""
        a = _bind(n, ["tensors", "dim"])
        if a.get("dim", 0) not in (1, -3) or not isinstance(a["tensors"], (list, tuple)):
            self.refuse(n, f"on dim {a.get('dim', 0)}; allowed: channel concatenation (dim 1) of (C, H, W) maps")
        return self.algebra(n, concat, [self.lin(t, n) for t in a["tensors"]], _shape_of(n))

    def _fn_flatten(self, n: fx.Node) -> _Lin:
        return self.flatten(n, self.lin(n.args[0], n))

    def _fn_pass(self, n: fx.Node) -> _Lin:
        return self.lin(n.args[0], n)

    def _fn_avg_pool2d(self, n: fx.Node) -> _Lin:
        x = self.lin(n.args[0], n)
        a = _bind(n, ["input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                      "divisor_override"])
        full = self.check_avgpool(n, a.get("padding", 0), a.get("ceil_mode", False), a.get("divisor_override"),
                                  a["kernel_size"], a.get("stride"), x)
        return self.pool(n, x, a["kernel_size"], a.get("stride"), a.get("padding", 0),
                         a.get("count_include_pad", True) or full)

    def _fn_adaptive_avg_pool2d(self, n: fx.Node) -> _Lin:
        return self.adaptive_pool(n, self.lin(n.args[0], n))

    def _fn_conv2d(self, n: fx.Node) -> _Lin:
        a = _bind(n, ["input", "weight", "bias", "stride", "padding", "dilation", "groups"])
        return self.conv(n, self.lin(a["input"], n), self.const(a["weight"], n), self.const(a.get("bias"), n),
                         a.get("stride", 1), a.get("padding", 0), a.get("dilation", 1), a.get("groups", 1))

    def _fn_linear(self, n: fx.Node) -> _Lin:
        a = _bind(n, ["input", "weight", "bias"])
        return self.linear(n, self.lin(a["input"], n), self.const(a["weight"], n), self.const(a.get("bias"), n))
