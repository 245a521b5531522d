"""The one intermediate representation every stage after training consumes (DESIGN: "The one IR").

A network is a DAG: one `InputNode`, neuron nodes in topological order, and one readout node.
Each neuron/readout node has one or more `Synapse`s, each from one source node through one synaptic
op (`Conv2d` | `Dense` | `AvgPool2d` | `Identity`). Residual add = two synapses into one node.

Two flavours with the same topology:

* `FloatNet` (from torch, BN folded; `NeuronNode`, `ReadoutNode`), float weights.
* `IntNet` (after a target's fixed point; `IntNeuronNode`, `IntReadoutNode`), integer weights,
  a per-synapse power-of-two exponent, integer threshold / bias / pre-charge and a per-node `scale`
  (the real value of one integer unit of that node's membrane; all inputs of a node share it, C5).

Semantics (DESIGN contract C2-C4, C7), per sample, T time steps
---------------------------------------------------------------
Payload of a source: the input node sends the raw integer pixels `x` (0..255, graded) every step (C4);
a neuron node sends its spike z in {0, 1}; in the FloatNet a spike carries the value `threshold`.

FloatNet as a quantized ANN (eval):   a_input = x;  u_m = sum_i op_i(a_src_i) + b_m;
    a_m = s_m * clip(floor(u_m / s_m + 1/2), 0, p_m),  s_m = threshold_m / p_m  (round half up, C1)
    logits = sum_i op_i(a_src_i) + b_readout.
FloatNet as an SNN (unpipelined, C2):  I_m(t) = sum_i op_i(payload_src_i(t)) + b_m,
    v_m(0) = precharge_m; v += I; z = [v >= threshold]; v -= z * threshold      (t = 1..T)
    readout: V = sum_t I_R(t); class = argmax V, ties to the lowest index (C7).
IntNet (integers, exact):  I_m(t) = sum_i shift(op_i(payload_src_i(t)), exponent_i) + bias_mant << bias_exp
    with shift(y, e) = y << e for e >= 0 and y >> -e (arithmetic, floor) for e < 0; the same update.
Pipelined time (C3): node depth d (input 0, node = 1 + depth of its sources, which must all agree);
    node m is live only in its window of global steps [d_m + 1, d_m + T] and there sees the payloads its
    sources emitted one step earlier. This equals the unpipelined run above exactly.
Spike counts are counted over each node's window; the readout's final potential is V.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Union

import numpy as np

from .errors import IRError

FORMAT_NAME = "na-deploy-ir"
FORMAT_VERSION = 1
INPUT_NAME = "input"

Shape = tuple[int, ...]


def _pair(v: Any, what: str) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        v = (int(v), int(v))
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise IRError(f"{what} must be an int or a pair of ints, got {v!r}")
    return v  # type: ignore[return-value]


def _is_int_array(a: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(a).dtype, np.integer)


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
        self.stride = _pair(self.stride, "Conv2d.stride")
        self.padding = _pair(self.padding, "Conv2d.padding")
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
        self.kernel = _pair(self.kernel, "AvgPool2d.kernel")
        self.stride = _pair(self.stride, "AvgPool2d.stride")
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
            raise IRError(f"Synapse from {self.source!r}: op must be one of {sorted(OP_TYPES)}, got {type(self.op).__name__}")
        self.exponent = int(self.exponent)


# ------------------------------------------------------------------------------------ reset rules
@dataclass(frozen=True)
class SubtractReset:
    """Reset by subtraction (C2): after a spike, v -= threshold. Works for float and integer arrays."""

    name: ClassVar[str] = "subtract"

    def after_spike(self, v, z, threshold):
        return v - z * threshold


RESET_RULES: dict[str, Any] = {SubtractReset.name: SubtractReset()}


def reset_rule(name: str):
    try:
        return RESET_RULES[name]
    except KeyError:
        raise IRError(f"unknown reset rule {name!r}; known: {sorted(RESET_RULES)}") from None


# ------------------------------------------------------------------------------------------ nodes
@dataclass(eq=False)
class InputNode:
    """The image source. Payload: raw integer pixels 0..255 every step of its window (C4).

    `channel_scale` records the normalisation folded into the first layer (x_norm = x * scale_c,
    scale_c = 1 / (255 * std_c)); it is provenance only: the folded weights already contain it.
    """

    shape: Shape
    channel_scale: np.ndarray = field(default_factory=lambda: np.ones(1))
    name: str = INPUT_NAME

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.channel_scale = np.asarray(self.channel_scale, dtype=np.float64).reshape(-1)
        if not self.shape or min(self.shape) < 1:
            raise IRError(f"input shape must be positive, got {self.shape}")
        if self.name != INPUT_NAME:
            raise IRError(f"the input node must be named {INPUT_NAME!r}, got {self.name!r}")


@dataclass(eq=False)
class _Node:
    name: str
    shape: Shape
    inputs: list[Synapse]

    def _check_common(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        if not self.name or self.name == INPUT_NAME or "/" in self.name:
            raise IRError(f"node name {self.name!r} is not allowed (non-empty, not {INPUT_NAME!r}, no '/')")
        if not self.shape or min(self.shape) < 1:
            raise IRError(f"node {self.name}: shape must be positive, got {self.shape}")
        if not self.inputs:
            raise IRError(f"node {self.name}: needs at least one synaptic input")

    def _check_bias(self, bias: np.ndarray, what: str) -> np.ndarray:
        bias = np.asarray(bias)
        if bias.shape != (self.shape[0],):
            raise IRError(f"node {self.name}: {what} must have shape ({self.shape[0]},) (one per channel), got {bias.shape}")
        return bias


@dataclass(eq=False)
class NeuronNode(_Node):
    """FloatNet integrate-and-fire population (C2): threshold th = p*s, pre-charge th/2, reset rule."""

    threshold: float = 1.0
    bias: np.ndarray = None  # (C,) one per channel (per neuron for flat nodes)
    levels: int = 1  # p of the quantized activation this population replaces
    precharge: float = None  # default threshold / 2
    reset: str = SubtractReset.name
    role: str = "layer"  # "layer" | "relay" (a delay relay inserted by balance_delays)

    def __post_init__(self) -> None:
        self._check_common()
        self.threshold = float(self.threshold)
        self.levels = int(self.levels)
        if self.bias is None:
            self.bias = np.zeros(self.shape[0])
        self.bias = self._check_bias(self.bias, "bias").astype(np.float64)
        if self.precharge is None:
            self.precharge = self.threshold / 2
        self.precharge = float(self.precharge)
        if not (self.threshold > 0 and np.isfinite(self.threshold)):
            raise IRError(f"node {self.name}: threshold must be finite and > 0, got {self.threshold}")
        if self.levels < 1:
            raise IRError(f"node {self.name}: levels p must be >= 1, got {self.levels}")
        if not np.all(np.isfinite(self.bias)):
            raise IRError(f"node {self.name}: bias has non-finite values")
        reset_rule(self.reset)
        if self.role not in ("layer", "relay"):
            raise IRError(f"node {self.name}: role must be 'layer' or 'relay', got {self.role!r}")

    @property
    def step_size(self) -> float:
        return self.threshold / self.levels


@dataclass(eq=False)
class ReadoutNode(_Node):
    """FloatNet readout: accumulates input + bias (no threshold, no spike); class = argmax (C7)."""

    bias: np.ndarray = None

    def __post_init__(self) -> None:
        self._check_common()
        if self.bias is None:
            self.bias = np.zeros(self.shape[0])
        self.bias = self._check_bias(self.bias, "bias").astype(np.float64)
        if len(self.shape) != 1:
            raise IRError(f"readout {self.name}: shape must be (classes,), got {self.shape}")


@dataclass(eq=False)
class IntNeuronNode(_Node):
    """IntNet IF population: integer threshold, bias = bias_mant << bias_exp, pre-charge; `scale` is the
    real value of one integer membrane unit (so threshold * scale ~ the FloatNet threshold)."""

    threshold: int = 1
    bias_mant: np.ndarray = None
    bias_exp: int = 0
    precharge: int = 0
    scale: float = 1.0
    levels: int = 1
    reset: str = SubtractReset.name
    role: str = "layer"

    def __post_init__(self) -> None:
        self._check_common()
        self.threshold, self.precharge, self.bias_exp, self.levels = (
            int(self.threshold), int(self.precharge), int(self.bias_exp), int(self.levels))
        if self.bias_mant is None:
            self.bias_mant = np.zeros(self.shape[0], dtype=np.int64)
        self.bias_mant = self._check_bias(self.bias_mant, "bias_mant")
        if not _is_int_array(self.bias_mant):
            raise IRError(f"node {self.name}: bias_mant must be integer, got {self.bias_mant.dtype}")
        self.bias_mant = self.bias_mant.astype(np.int64)
        self.scale = float(self.scale)
        if self.threshold < 1:
            raise IRError(f"node {self.name}: integer threshold must be >= 1, got {self.threshold}")
        if self.bias_exp < 0:
            raise IRError(f"node {self.name}: bias_exp must be >= 0, got {self.bias_exp}")
        if not (self.scale > 0 and np.isfinite(self.scale)):
            raise IRError(f"node {self.name}: scale must be finite and > 0, got {self.scale}")
        reset_rule(self.reset)
        if self.role not in ("layer", "relay"):
            raise IRError(f"node {self.name}: role must be 'layer' or 'relay', got {self.role!r}")

    @property
    def bias(self) -> np.ndarray:
        """Effective integer bias per channel: bias_mant << bias_exp."""
        return self.bias_mant << self.bias_exp


@dataclass(eq=False)
class IntReadoutNode(_Node):
    """IntNet readout: integer accumulator of input + (bias_mant << bias_exp); `scale` as above."""

    bias_mant: np.ndarray = None
    bias_exp: int = 0
    scale: float = 1.0

    def __post_init__(self) -> None:
        self._check_common()
        if len(self.shape) != 1:
            raise IRError(f"readout {self.name}: shape must be (classes,), got {self.shape}")
        if self.bias_mant is None:
            self.bias_mant = np.zeros(self.shape[0], dtype=np.int64)
        self.bias_mant = self._check_bias(self.bias_mant, "bias_mant")
        if not _is_int_array(self.bias_mant):
            raise IRError(f"readout {self.name}: bias_mant must be integer, got {self.bias_mant.dtype}")
        self.bias_mant = self.bias_mant.astype(np.int64)
        self.bias_exp = int(self.bias_exp)
        self.scale = float(self.scale)
        if self.bias_exp < 0:
            raise IRError(f"readout {self.name}: bias_exp must be >= 0, got {self.bias_exp}")

    @property
    def bias(self) -> np.ndarray:
        return self.bias_mant << self.bias_exp


# ------------------------------------------------------------------------------------------- nets
@dataclass(eq=False)
class _Net:
    input: InputNode
    nodes: list
    readout: Any
    meta: dict = field(default_factory=dict)

    flavour: ClassVar[str] = ""
    _neuron_type: ClassVar[type] = object
    _readout_type: ClassVar[type] = object

    def __post_init__(self) -> None:
        self.nodes = list(self.nodes)
        self.meta = dict(self.meta)
        self.validate()

    # -- graph helpers
    def all_nodes(self) -> list:
        """Neuron nodes then the readout (topological order)."""
        return [*self.nodes, self.readout]

    def node(self, name: str):
        if name == INPUT_NAME:
            return self.input
        for n in self.all_nodes():
            if n.name == name:
                return n
        raise IRError(f"no node named {name!r}")

    def shapes(self) -> dict[str, Shape]:
        out = {INPUT_NAME: self.input.shape}
        for n in self.all_nodes():
            out[n.name] = n.shape
        return out

    def depths(self) -> dict[str, int]:
        """Hop count from the input (C3): input 0; a node is 1 + the depth of its sources.

        Raises IRError if a node's sources disagree (unbalanced paths; see `na_deploy.delays`)."""
        d = {INPUT_NAME: 0}
        for n in self.all_nodes():
            src = {s.source: d[s.source] for s in n.inputs}
            if len(set(src.values())) != 1:
                raise IRError(f"node {n.name}: inputs arrive with different hop counts {src} (C3); "
                              "balance the paths (na_deploy.delays.balance_delays) before simulating")
            d[n.name] = 1 + next(iter(src.values()))
        return d

    def is_balanced(self) -> bool:
        try:
            self.depths()
            return True
        except IRError:
            return False

    def validate(self) -> None:
        if not isinstance(self.input, InputNode):
            raise IRError(f"{type(self).__name__}.input must be an InputNode")
        seen = {INPUT_NAME: self.input.shape}
        for i, n in enumerate(self.all_nodes()):
            want = self._readout_type if i == len(self.nodes) else self._neuron_type
            if not isinstance(n, want):
                raise IRError(f"{type(self).__name__}: node {getattr(n, 'name', i)!r} must be a {want.__name__}, "
                              f"got {type(n).__name__}")
            if n.name in seen:
                raise IRError(f"duplicate node name {n.name!r}")
            for s in n.inputs:
                if s.source not in seen:
                    raise IRError(f"node {n.name}: source {s.source!r} is not an earlier node (graph must be "
                                  "topologically ordered)")
                self._check_synapse(n, s)
                out = s.op.out_shape(seen[s.source])
                if tuple(out) != tuple(n.shape):
                    raise IRError(f"node {n.name}: input from {s.source} ({s.op.kind}) has shape {tuple(out)}, "
                                  f"node shape is {tuple(n.shape)}")
            seen[n.name] = n.shape

    def _check_synapse(self, node, syn: Synapse) -> None:
        raise NotImplementedError

    # -- serialization
    def save(self, path: str | Path) -> None:
        from .ir_h5 import save_net

        save_net(self, path)


@dataclass(eq=False)
class FloatNet(_Net):
    """Float-valued converted network (BN folded), the output of `na_deploy.convert`."""

    flavour: ClassVar[str] = "float"
    _neuron_type: ClassVar[type] = NeuronNode
    _readout_type: ClassVar[type] = ReadoutNode

    def _check_synapse(self, node, syn: Synapse) -> None:
        if syn.exponent != 0:
            raise IRError(f"node {node.name}: FloatNet synapses have exponent 0, got {syn.exponent}")
        w = np.asarray(syn.op.weight)
        if not np.all(np.isfinite(w)):
            raise IRError(f"node {node.name}: input from {syn.source} has non-finite weights")


@dataclass(eq=False)
class IntNet(_Net):
    """Integer (fixed-point) network for one target; `meta['target']` names it."""

    flavour: ClassVar[str] = "int"
    _neuron_type: ClassVar[type] = IntNeuronNode
    _readout_type: ClassVar[type] = IntReadoutNode

    def _check_synapse(self, node, syn: Synapse) -> None:
        w = np.asarray(syn.op.weight)
        if not _is_int_array(w):
            raise IRError(f"node {node.name}: input from {syn.source} ({syn.op.kind}) must have integer "
                          f"weights in an IntNet, got {w.dtype}")


def load_net(path: str | Path) -> Union[FloatNet, IntNet]:
    """Load and validate a `*.nad.h5` file (either flavour)."""
    from .ir_h5 import load_net as _load

    return _load(path)


def replace_nodes(net: _Net, nodes: Iterable, readout=None, **meta: Any):
    """A copy of `net` with new nodes (and optionally readout / extra meta)."""
    return type(net)(input=net.input, nodes=list(nodes), readout=readout if readout is not None else net.readout,
                     meta={**net.meta, **meta})


def node_kind(n) -> str:
    return "readout" if isinstance(n, (ReadoutNode, IntReadoutNode)) else "neuron"


def as_dict_meta(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


__all__ = [
    "Conv2d", "Dense", "AvgPool2d", "Identity", "Synapse", "InputNode", "NeuronNode", "ReadoutNode",
    "IntNeuronNode", "IntReadoutNode", "FloatNet", "IntNet", "load_net", "replace_nodes", "SubtractReset",
    "reset_rule", "INPUT_NAME", "FORMAT_VERSION", "dataclasses",
]
