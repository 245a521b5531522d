"""Neuron models: what one integrate-and-fire population does at each step of its window (DESIGN C2, "Neuron
modes"). A model is a small frozen strategy object, and every simulator and backend takes its step from it:
the float SNN (`na_deploy.float_sim`), the fast and the slow reference (`hw_targets.loihi2.reference*`) and
the Lava process model (`hw_targets.loihi2.lava_proc.models`). A backend that cannot express a model refuses
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

Adding a mode: one subclass here, registered in `NEURON_MODELS`, plus one refusal in each backend that
cannot express it (ARCHITECTURE.md, "Add a neuron model").
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import IRError


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
    """Base class of the neuron strategies: subclasses define `name`, `compare`, `fire` and `reset`."""

    name: ClassVar[str] = ""
    compare: ClassVar[str] = ""  # ">=" or ">": the spike condition on (v, th)
    signed: ClassVar[bool] = False  # False: z in {0, 1}; True: z in {-1, 0, 1}

    def fire(self, v: Any, threshold: Any) -> Any:
        """The spikes z of membrane v (after integration) for threshold th."""
        raise NotImplementedError

    def reset(self, v: Any, z: Any, threshold: Any) -> Any:
        """The membrane after spikes z."""
        raise NotImplementedError

    def fire_and_reset(self, v: Any, threshold: Any) -> tuple[Any, Any]:
        """(new membrane, spikes) of one step after integration."""
        z = self.fire(v, threshold)
        return self.reset(v, z, threshold), z

    def fire_and_reset_inplace(self, v: Any, threshold: Any, z_out: Any = None) -> Any:
        """In place on a numpy array or torch tensor v (the simulators' hot loops): v <- reset(v, z, th) with
        z = fire(v, th), written into `z_out` when given; returns z. Same values as `fire_and_reset`."""
        new_v, z = self.fire_and_reset(v, threshold)
        v[...] = new_v
        if z_out is None:
            return z
        z_out[...] = z
        return z_out

    def emit_inplace(self, v: Any, threshold: Any) -> tuple[Any, Any]:
        """`fire_and_reset_inplace` plus the value the spikes carry in the float SNN, z * th in v's dtype (C2):
        returns (z, payload)."""
        z = self.fire_and_reset_inplace(v, threshold)
        payload = z.to(v.dtype) if is_tensor(z) else np.asarray(z).astype(v.dtype)
        return z, payload * threshold

    def default_precharge(self, threshold: float) -> float:
        """Pre-charge of the membrane at each window start when the converter gives none."""
        return threshold / 2


@dataclass(frozen=True)
class SubtractIF(NeuronModel):
    """The paper's IF neuron (C2): fire when v >= th (at most one spike per step), then v <- v - th.
    Pre-charge th/2 (integer nets: floor(th/2), the same spikes for integer currents)."""

    name: ClassVar[str] = "subtract"
    compare: ClassVar[str] = ">="

    def fire(self, v: Any, threshold: Any) -> Any:
        return v >= threshold

    def reset(self, v: Any, z: Any, threshold: Any) -> Any:
        return where(z, v - threshold, v)

    def fire_and_reset_inplace(self, v: Any, threshold: Any, z_out: Any = None) -> Any:
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

    def emit_inplace(self, v: Any, threshold: Any) -> tuple[Any, Any]:
        if not is_tensor(v):
            return super().emit_inplace(v, threshold)
        z = v >= threshold
        payload = z.to(v.dtype).mul_(threshold)  # the reset amount is the payload: one product for both
        v.sub_(payload)
        return z, payload


@dataclass(frozen=True)
class ResetToZeroIF(NeuronModel):
    """Lava's stock LIF rule as an IF neuron (mode "zero", DESIGN C2): fire when v > th (strict), then v <- 0.
    What `lava.proc.lif` (`PyLifModelBitAcc`, du = 4095, dv = 0) and lava-dl's netx run; the residue above
    the threshold is lost at each spike, so the subtract conversion (th = p*s, pre-charge th/2) needs its own
    choice of threshold, pre-charge and bias (the converter's `neuron` option)."""

    name: ClassVar[str] = "zero"
    compare: ClassVar[str] = ">"

    def fire(self, v: Any, threshold: Any) -> Any:
        return v > threshold

    def reset(self, v: Any, z: Any, threshold: Any) -> Any:
        return where(z, v * 0, v)


SUBTRACT = SubtractIF()
ZERO = ResetToZeroIF()

NEURON_MODELS: dict[str, NeuronModel] = {m.name: m for m in (SUBTRACT, ZERO)}


def neuron_model(model: "str | NeuronModel") -> NeuronModel:
    """The registered model of that name (a NeuronModel passes through); IRError naming the known ones."""
    if isinstance(model, NeuronModel):
        return model
    try:
        return NEURON_MODELS[model]
    except (KeyError, TypeError):
        raise IRError(f"unknown neuron model {model!r}; known: {', '.join(sorted(NEURON_MODELS))}") from None


__all__ = ["NeuronModel", "SubtractIF", "SUBTRACT", "ResetToZeroIF", "ZERO", "NEURON_MODELS", "neuron_model", "where", "is_tensor"]
