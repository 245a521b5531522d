"""Nodes of the IR: the input, integrate-and-fire populations and the readout, in both flavours.

* FloatNet: `NeuronNode` (float threshold th = p*s, bias, pre-charge) and `ReadoutNode`.
* IntNet: `IntNeuronNode` (integer threshold, bias = bias_mant << bias_exp, pre-charge, and `scale`, the
  real value of one integer membrane unit; all inputs of a node share it, C5) and `IntReadoutNode`.

Every neuron node carries its `neuron` model (`na_deploy.ir.neuron`: compare, reset, pre-charge rule,
payload sign), `p` (the number of positive levels of the quantized activation it replaces, th = p*s) and
its `role` ("layer", or "relay" for a delay relay inserted by `na_deploy.convert.delays.balance_delays`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from na_deploy.errors import IRError
from na_deploy.ir.neuron import SUBTRACT, NeuronModel, neuron_model
from na_deploy.ir.ops import Shape, Synapse, int_value, is_int_array

INPUT_NAME = "input"
ROLES = ("layer", "relay")


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

    def _int(self, field_name: str) -> int:
        """An IntNet node's integer field: refused naming node and field unless it holds an integer exactly."""
        return int_value(getattr(self, field_name), f"node {self.name}: {field_name}")

    def _check_bias(self, bias: np.ndarray, what: str) -> np.ndarray:
        bias = np.asarray(bias)
        if bias.shape != (self.shape[0],):
            raise IRError(f"node {self.name}: {what} must have shape ({self.shape[0]},) (one per channel), "
                          f"got {bias.shape}")
        return bias

    def _check_int_bias(self, bias_mant) -> np.ndarray:
        """IntNet nodes: integer bias_mant (C,), bias_exp >= 0; returns bias_mant as int64."""
        if bias_mant is None:
            bias_mant = np.zeros(self.shape[0], dtype=np.int64)
        bias_mant = self._check_bias(bias_mant, "bias_mant")
        if not is_int_array(bias_mant):
            raise IRError(f"node {self.name}: bias_mant must be integer, got {bias_mant.dtype}")
        if self.bias_exp < 0:
            raise IRError(f"node {self.name}: bias_exp must be >= 0, got {self.bias_exp}")
        return bias_mant.astype(np.int64)

    def _check_neuron_fields(self) -> None:
        """p >= 1 and a known role (neuron nodes of both flavours)."""
        if self.p < 1:
            raise IRError(f"node {self.name}: p (activation levels) must be >= 1, got {self.p}")
        if self.role not in ROLES:
            raise IRError(f"node {self.name}: role must be one of {ROLES}, got {self.role!r}")


@dataclass(eq=False)
class NeuronNode(_Node):
    """FloatNet integrate-and-fire population (C2): threshold th = p*s, pre-charge th/2 (the neuron model's
    default), the neuron model's compare and reset."""

    threshold: float = 1.0
    bias: np.ndarray = None  # (C,) one per channel (per neuron for flat nodes)
    p: int = 1  # positive levels of the quantized activation this population replaces (th = p*s)
    precharge: float = None  # default: neuron.default_precharge(threshold)
    neuron: NeuronModel = SUBTRACT
    role: str = "layer"  # "layer" | "relay" (a delay relay inserted by balance_delays)

    def __post_init__(self) -> None:
        self._check_common()
        self.neuron = neuron_model(self.neuron)
        self.threshold = float(self.threshold)
        self.p = int(self.p)
        if self.bias is None:
            self.bias = np.zeros(self.shape[0])
        self.bias = self._check_bias(self.bias, "bias").astype(np.float64)
        if self.precharge is None:
            self.precharge = self.neuron.default_precharge(self.threshold)
        self.precharge = float(self.precharge)
        if not (self.threshold > 0 and np.isfinite(self.threshold)):
            raise IRError(f"node {self.name}: threshold must be finite and > 0, got {self.threshold}")
        if not np.all(np.isfinite(self.bias)):
            raise IRError(f"node {self.name}: bias has non-finite values")
        self._check_neuron_fields()

    @property
    def step_size(self) -> float:
        """s = th / p, the quantization step of the activation this population replaces."""
        return self.threshold / self.p


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
    p: int = 1
    neuron: NeuronModel = SUBTRACT
    role: str = "layer"

    def __post_init__(self) -> None:
        self._check_common()
        self.neuron = neuron_model(self.neuron)
        self.threshold, self.precharge, self.bias_exp, self.p = (
            self._int("threshold"), self._int("precharge"), self._int("bias_exp"), self._int("p"))
        self.bias_mant = self._check_int_bias(self.bias_mant)
        self.scale = float(self.scale)
        if self.threshold < 1:
            raise IRError(f"node {self.name}: integer threshold must be >= 1, got {self.threshold}")
        if not (self.scale > 0 and np.isfinite(self.scale)):
            raise IRError(f"node {self.name}: scale must be finite and > 0, got {self.scale}")
        self._check_neuron_fields()

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
        self.bias_exp = self._int("bias_exp")
        self.bias_mant = self._check_int_bias(self.bias_mant)
        self.scale = float(self.scale)
        if not (self.scale > 0 and np.isfinite(self.scale)):
            raise IRError(f"readout {self.name}: scale must be finite and > 0, got {self.scale}")

    @property
    def bias(self) -> np.ndarray:
        return self.bias_mant << self.bias_exp


def node_kind(n) -> str:
    return "readout" if isinstance(n, (ReadoutNode, IntReadoutNode)) else "neuron"
