"""Neuron models: what one integrate-and-fire population does at each step of its window (contract C2, "Neuron
modes"). A model is a small frozen strategy object, and every simulator and backend takes its step from it:
the float SNN (`na_deploy.simulate.float_snn`), the fast and the slow reference (`hw_targets.loihi2.reference*`) and
the Lava process model (`hw_targets.loihi2.lava.processes.models`). A backend that cannot express a model refuses
it by name (the Loihi 2 fit check lists the models its Lava process implements: `Loihi2Limits.neuron_models`).

One step of node m, inside its window (C3), with I(t) the synaptic current plus bias:

    v <- v + I(t)                  integrate   (a target may then wrap v to its membrane width)
    z <- fire(v, th)               compare     (the model's `compare`, e.g. v >= th)
    v <- reset(v, z, th)           reset       (e.g. v - th where z)
    payload = z * th               float SNN: a spike carries th (C2); integer nets send z itself

and the membrane starts every window at the node's pre-charge (`default_precharge(th)` when the
converter does not say otherwise). `signed` says whether z can be -1 (a signed spike message).

The methods work on numpy arrays, torch tensors and Python numbers alike (this module never imports
torch: a Lava process model, which must not touch torch, uses it too). The stable encoding of a model is
its `name` (HDF5: the node attribute `reset` of format version 1).

Models: "subtract" (the paper's IF), "zero" (Lava's stock LIF rule), "negative" (signed spikes; stateful: the
step reads the window's running net count) and "accumulate" (accumulate-then-fire; windowed: `run_window`
sums the window, then fires; its spikes leave T steps after its window start, `emit_delay`).

Adding a mode: one subclass here, registered in `NEURON_MODELS`, plus one refusal in each backend that
cannot express it (ARCHITECTURE.md, "Add a neuron model"). A model whose step needs state sets `stateful`
(the simulators pass `count`); one whose window is not a sequence of identical steps sets `windowed` and
overrides `run_window` (the references' per-node call; its default is the per-step loop).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import numpy as np

from na_deploy.errors import IRError


def is_tensor(x: Any) -> bool:
    """True for a torch tensor (without importing torch: it is loaded already if x is one)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def where(cond: Any, a: Any, b: Any) -> Any:
    """Elementwise `a if cond else b` for numpy arrays, torch tensors or Python numbers."""
    if is_tensor(cond):
        return sys.modules["torch"].where(cond, a, b)
    out = np.where(cond, a, b)
    return out if np.ndim(out) else out.item()


@dataclass(frozen=True)
class NeuronModel:
    """Base class of the neuron strategies: subclasses define `name`, `compare`, `fire` and `reset`.

    Two optional extensions keep the simulators' hot loops simple:
    * `stateful` models (e.g. "negative") need the window's running net spike count `count` (the caller keeps
      it: c <- c + z after each step; it starts at 0 at every window start) as a keyword of the step methods;
    * `windowed` models (e.g. "accumulate") are not a sequence of identical steps: they override
      `run_window`, and their counts at T are not the first T steps of a longer run (simulators run each T
      separately); `emit_delay(T)` is how many steps after its window start a node's first spike can come.
    `run_window` is what the integer references call per node and window; its default is the per-step loop."""

    name: ClassVar[str] = ""
    compare: ClassVar[str] = ""  # ">=" or ">": the spike condition on (v, th)
    signed: ClassVar[bool] = False  # False: z in {0, 1}; True: z in {-1, 0, 1}
    stateful: ClassVar[bool] = False  # True: fire() needs `count`, the window's running net count
    windowed: ClassVar[bool] = False  # True: run_window is not the per-step loop (no prefix causality)
    graded: ClassVar[bool] = False  # True: a non-spiking graded node, z is the integer input sum (`GradedNode`)

    @property
    def spike_dtype(self) -> np.dtype:
        """numpy dtype of the spike trains z: bool, or int8 for a signed model."""
        if self.graded:
            return np.dtype(np.int64)
        return np.dtype(np.int8) if self.signed else np.dtype(bool)

    def messages(self, z: Any) -> Any:
        """What one step's z sends downstream, in payload units: z itself (a spike, or a graded sum)."""
        return z

    def fire(self, v: Any, threshold: Any, count: Any = None) -> Any:
        """The spikes z of membrane v (after integration) for threshold th."""
        raise NotImplementedError

    def reset(self, v: Any, z: Any, threshold: Any) -> Any:
        """The membrane after spikes z."""
        raise NotImplementedError

    def fire_and_reset(self, v: Any, threshold: Any, count: Any = None) -> tuple[Any, Any]:
        """(new membrane, spikes) of one step after integration."""
        z = self.fire(v, threshold, count) if self.stateful else self.fire(v, threshold)
        return self.reset(v, z, threshold), z

    def fire_and_reset_inplace(self, v: Any, threshold: Any, z_out: Any = None, count: Any = None) -> Any:
        """In place on a numpy array or torch tensor v (the simulators' hot loops): v <- reset(v, z, th) with
        z = fire(v, th), written into `z_out` when given; returns z. Same values as `fire_and_reset`."""
        new_v, z = self.fire_and_reset(v, threshold, count)
        v[...] = new_v
        if z_out is None:
            return z
        z_out[...] = z
        return z_out

    def emit_inplace(self, v: Any, threshold: Any, count: Any = None) -> tuple[Any, Any]:
        """`fire_and_reset_inplace` plus the value the spikes carry in the float SNN, z * th in v's dtype (C2):
        returns (z, payload)."""
        z = self.fire_and_reset_inplace(v, threshold, count=count)
        payload = z.to(v.dtype) if is_tensor(z) else np.asarray(z).astype(v.dtype)
        return z, payload * threshold

    def run_window(self, v: Any, currents: Any, threshold: Any, steps: int, z_out: Any,
                   wrap: Optional[Callable[[Any], Any]] = None) -> Any:
        """One window of `steps` steps, in place: v (the membrane, pre-charged by the caller) ends as the
        window's final membrane; currents: (steps, *shape), or (1, *shape) for a current constant over the
        window; z_out: (steps, *shape) of `spike_dtype` (numpy) or the matching torch dtype, filled and
        returned; wrap: the target's membrane wrap after each integration (None: no wrap)."""
        const = currents.shape[0] == 1
        count = None
        if self.stateful:
            count = v * 0
        for t in range(steps):
            v += currents[0 if const else t]
            if wrap is not None:
                v[...] = wrap(v)
            self.fire_and_reset_inplace(v, threshold, z_out[t], count)
            if count is not None:
                count += z_out[t]
        return z_out

    def emit_delay(self, timesteps: int) -> int:
        """Steps from a node's window start to the start of its emission (0: it can spike in its first step)."""
        return 0

    def default_precharge(self, threshold: float) -> float:
        """Pre-charge of the membrane at each window start when the converter gives none."""
        return threshold / 2


@dataclass(frozen=True)
class SubtractIF(NeuronModel):
    """The paper's IF neuron (C2): fire when v >= th (at most one spike per step), then v <- v - th.
    Pre-charge th/2 (integer nets: floor(th/2), the same spikes for integer currents)."""

    name: ClassVar[str] = "subtract"
    compare: ClassVar[str] = ">="

    def fire(self, v: Any, threshold: Any, count: Any = None) -> Any:
        return v >= threshold

    def reset(self, v: Any, z: Any, threshold: Any) -> Any:
        return where(z, v - threshold, v)

    def fire_and_reset_inplace(self, v: Any, threshold: Any, z_out: Any = None, count: Any = None) -> Any:
        if is_tensor(v):
            z = v >= threshold
            v.sub_(z.to(v.dtype), alpha=threshold)  # v - th where z (exact: th * 1 and v - 0 are exact)
            if z_out is None:
                return z
            z_out.copy_(z)
            return z_out
        z = np.greater_equal(v, threshold, out=z_out)
        np.subtract(v, threshold, out=v, where=z)
        return z

    def emit_inplace(self, v: Any, threshold: Any, count: Any = None) -> tuple[Any, Any]:
        if not is_tensor(v):
            return super().emit_inplace(v, threshold)
        z = v >= threshold
        payload = z.to(v.dtype).mul_(threshold)  # the reset amount is the payload: one product for both
        v.sub_(payload)
        return z, payload


@dataclass(frozen=True)
class ResetToZeroIF(NeuronModel):
    """Lava's stock LIF rule as an IF neuron (mode "zero", contract C2): fire when v > th (strict), then v <- 0.
    What `lava.proc.lif` (`PyLifModelBitAcc`, du = 4095, dv = 0) and lava-dl's netx run; the residue above
    the threshold is lost at each spike, so the subtract conversion (th = p*s, pre-charge th/2) needs its own
    choice of threshold, pre-charge and bias (the converter's `neuron` option)."""

    name: ClassVar[str] = "zero"
    compare: ClassVar[str] = ">"

    def fire(self, v: Any, threshold: Any, count: Any = None) -> Any:
        return v > threshold

    def reset(self, v: Any, z: Any, threshold: Any) -> Any:
        return where(z, v * 0, v)


@dataclass(frozen=True)
class NegativeIF(SubtractIF):
    """Signed spikes (mode "negative", QFFS-style; Li, Ma & Furber 2022, Front. Neurosci. 16:918793). Converted
    exactly as "subtract" (th = p*s, pre-charge th/2); the state per neuron is its net count c of the window
    (0 at the window start, kept by the caller: `count`). One step after integration v <- v + I(t):

        v >= th:            z = +1, v <- v - th
        v < 0 and c > 0:    z = -1, v <- v + th          (then c <- c + z, by the caller)
        else:               z = 0

    With the th/2 pre-charge this fires at +th/2 and -th/2 relative to the un-pre-charged membrane: symmetric
    +-theta/2 thresholds. What the QFFS text we could read says (its abstract, Front. Neurosci. 16:918793): the
    framework suppresses "occasional noise" (a spike sent early whose excess input the neuron cannot take back
    later); a third-party note (nengo issue #1694) lists QFFS among the conversions that fire negative spikes.
    Where that text is silent and this rule decides: the +-theta/2 thresholds; a negative spike only undoes an
    earlier positive one of the same window (c > 0), so the net count stays in [0, T] (the ReLU of the
    quantized ANN); at most one spike (of either sign) per step; the reset is by subtraction in both
    directions (adding th back after a -1); integer nets send z itself (a -1 message adds -w at the synapse),
    the float SNN sends z * th.
    Trace.spike_counts holds c at the window end (what the next layer received in sum); the messages sent,
    sum |z|, are what costs energy (Trace.event_counts)."""

    name: ClassVar[str] = "negative"
    signed: ClassVar[bool] = True
    stateful: ClassVar[bool] = True

    def fire(self, v: Any, threshold: Any, count: Any = None) -> Any:
        if count is None:
            raise IRError("neuron model 'negative' needs the window's running count (keyword count)")
        return where(v >= threshold, 1, where((v < 0) & (count > 0), -1, 0))

    def reset(self, v: Any, z: Any, threshold: Any) -> Any:
        return where(z > 0, v - threshold, where(z < 0, v + threshold, v))

    def fire_and_reset_inplace(self, v: Any, threshold: Any, z_out: Any = None, count: Any = None) -> Any:
        if count is None:
            raise IRError("neuron model 'negative' needs the window's running count (keyword count)")
        pos = v >= threshold
        neg = (v < 0) & (count > 0)
        if is_tensor(v):
            v.sub_(pos.to(v.dtype), alpha=threshold).add_(neg.to(v.dtype), alpha=threshold)
            z = pos.to(sys.modules["torch"].int8) - neg.to(sys.modules["torch"].int8)
            if z_out is None:
                return z
            z_out.copy_(z)
            return z_out
        np.subtract(v, threshold, out=v, where=pos)
        np.add(v, threshold, out=v, where=neg)
        z = np.subtract(pos.view(np.int8), neg.view(np.int8), out=z_out)
        return z

    def emit_inplace(self, v: Any, threshold: Any, count: Any = None) -> tuple[Any, Any]:
        return NeuronModel.emit_inplace(self, v, threshold, count)


def _sum_rows(currents: Any, steps: int, dtype: Any) -> Any:
    """Sum over the first `steps` rows of currents (one row: that row times `steps`), in `dtype`."""
    if currents.shape[0] == 1:
        return currents[0] * steps
    if is_tensor(currents):
        return currents[:steps].sum(dim=0, dtype=dtype)
    return currents[:steps].sum(axis=0, dtype=dtype)


@dataclass(frozen=True)
class AccumulateIF(SubtractIF):
    """Accumulate-then-fire IF (mode "accumulate"; Datta et al., arXiv 2312.06900). Converted as "subtract"
    (th = p*s, pre-charge th/2: the same integer net). A window of T steps has two phases per node:
    accumulate (window steps 1..T): v <- v + I(t), no compare, no spike; fire (the next T steps): no
    integration, each step z = [v >= th], v <- v - th (the `fire` / `reset` of this class, subtract's). So the
    node emits n = clip(floor(v_T / th), 0, T) spikes, all leading (1..1 0..0), v_T = pc + the window's summed
    current: exactly the rounded, clipped level the quantized ANN computes from the same input, with no
    deviation from spike timing. Its spikes reach consumers T steps later than a subtract node's
    (`emit_delay`); counts at T are not prefixes of a longer run (`windowed`)."""

    name: ClassVar[str] = "accumulate"
    windowed: ClassVar[bool] = True

    def fire_total(self, v: Any, threshold: Any, steps: int) -> Any:
        """The fire phase at once, in place: v holds pc + the window's summed current; returns the count
        n = clip(floor(v / th), 0, steps) and leaves v - n * th."""
        if is_tensor(v):
            n = sys.modules["torch"].div(v, threshold, rounding_mode="floor").clamp_(0, steps)
            v.sub_(n * threshold)
            return n
        n = np.clip(np.floor_divide(v, threshold), 0, steps)
        v -= n * threshold
        return n

    def run_window(self, v: Any, currents: Any, threshold: Any, steps: int, z_out: Any,
                   wrap: Optional[Callable[[Any], Any]] = None) -> Any:
        v += _sum_rows(currents, steps, v.dtype)
        if wrap is not None:  # wrapping each step's sum = wrapping the total (mod 2**bits)
            v[...] = wrap(v)
        n = self.fire_total(v, threshold, steps)
        for t in range(steps):
            z_out[t] = n > t
        return z_out

    def emit_delay(self, timesteps: int) -> int:
        return int(timesteps)


@dataclass(frozen=True)
class GradedNode(NeuronModel):
    """A non-spiking graded node (contract C2, "Graded nodes"): no threshold, no membrane state. Each step of its
    window it forwards its input sum I(t) (synaptic current plus bias) as one graded spike (Loihi 2 graded
    spikes: a signed payload of at most 24 bits), z = v = I(t), and its state returns to 0. The converter puts
    one where a linear op sits between two activations and cannot be composed into one exact synapse (e.g. an
    average pool before a padded conv, MobileNetV2's linear bottleneck). Its window and delay are a relay's
    (C3): one step per hop. FloatNet: threshold 1, so the payload z * th is the float sum; IntNet: threshold 1,
    pre-charge 0, and z is the integer sum. A node's "spike count" is the sum of its payloads over its window
    (what its consumers received in sum); fidelity checks skip it (it has no spikes)."""

    name: ClassVar[str] = "graded"
    compare: ClassVar[str] = ""
    graded: ClassVar[bool] = True

    def fire(self, v: Any, threshold: Any, count: Any = None) -> Any:
        return v * 1  # a copy: the payload is the whole sum

    def reset(self, v: Any, z: Any, threshold: Any) -> Any:
        return v * 0

    def fire_and_reset_inplace(self, v: Any, threshold: Any, z_out: Any = None, count: Any = None) -> Any:
        if is_tensor(v):
            z = v.clone()
            v.zero_()
            if z_out is None:
                return z
            z_out.copy_(z)
            return z_out
        if z_out is None:
            z = np.array(v, copy=True)
        else:
            z_out[...] = v
            z = z_out
        v[...] = 0
        return z

    def default_precharge(self, threshold: float) -> float:
        return 0.0


SUBTRACT = SubtractIF()
ZERO = ResetToZeroIF()
NEGATIVE = NegativeIF()
ACCUMULATE = AccumulateIF()
GRADED = GradedNode()

# the spiking models (what a neuron mode can choose); the graded node is no mode: the converter places it
NEURON_MODELS: dict[str, NeuronModel] = {m.name: m for m in (SUBTRACT, ZERO, NEGATIVE, ACCUMULATE)}
ALL_MODELS: dict[str, NeuronModel] = {**NEURON_MODELS, GRADED.name: GRADED}


def neuron_model(model: "str | NeuronModel") -> NeuronModel:
    """The registered model of that name (a NeuronModel passes through); IRError naming the known ones."""
    if isinstance(model, NeuronModel):
        return model
    try:
        return ALL_MODELS[model]
    except (KeyError, TypeError):
        raise IRError(f"unknown neuron model {model!r}; known: {', '.join(sorted(ALL_MODELS))}") from None


__all__ = ["NeuronModel", "SubtractIF", "SUBTRACT", "ResetToZeroIF", "ZERO", "NegativeIF", "NEGATIVE",
           "AccumulateIF", "ACCUMULATE", "GradedNode", "GRADED",
           "NEURON_MODELS", "ALL_MODELS", "neuron_model", "where", "is_tensor"]
