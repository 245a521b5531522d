"""The two protocols every hardware target implements, and the result types they exchange (docs/contract.md: Targets).

* `Target`: a chip's numbers. Limits, fixed point (FloatNet -> IntNet), fit check, the bit-accurate reference
  simulator, resources. Implemented by `hw_targets.<name>` (e.g. `hw_targets.loihi2.Loihi2Target`).
* `Backend`: one simulator or chip that runs an IntNet. Build, run, export. It is made for one target
  (`target.backend(name)`) and uses that target's limits, never a module-level default.

The core (`na_deploy`) calls nothing outside these protocols and never imports a target: the CLI resolves
`--target` / `--backend` in one place (`na_deploy.hw_targets.get_target` / `get_backend`) and passes the
objects in. `na_deploy.verify.bit_exact` compares a target's reference with any backend (C6).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from na_deploy.errors import FitError
from na_deploy.ir import FloatNet, IntNet


@dataclass
class Trace:
    """What one simulation of an IntNet produced, per sample.

    spike_counts: node name -> int64 array (B, *node_shape), spikes counted over the node's T-window (C3).
    readout: (B, classes) final readout potentials (int64 for integer simulators).
    step_spikes / step_readout: per window step of the last sample, {node: (T, *shape)} and (T, classes),
    when a backend ran with `record_steps=True` (verify uses them to name the first differing step).
    extra: timings and provenance strings of the simulator that made it.
    event_counts: node name -> int64 array like spike_counts: the spike messages each neuron sent per sample
    (what costs energy), where that differs from spike_counts: signed spikes (|z| summed; spike_counts is the
    net count) and two-stage offset calibration (stage 1's spikes added). None: equal to spike_counts.
    """

    timesteps: int
    spike_counts: dict[str, np.ndarray]
    readout: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)
    step_spikes: Optional[dict[str, np.ndarray]] = None
    step_readout: Optional[np.ndarray] = None
    event_counts: Optional[dict[str, np.ndarray]] = None

    def events(self) -> dict[str, np.ndarray]:
        """Messages sent per node and neuron: event_counts, or spike_counts where those are equal (None)."""
        return self.spike_counts if self.event_counts is None else self.event_counts

    @property
    def predictions(self) -> np.ndarray:
        """argmax of the readout potential; ties break to the lowest index (C7)."""
        return np.argmax(self.readout, axis=1)

    @property
    def batch(self) -> int:
        return int(self.readout.shape[0])


@dataclass(frozen=True)
class Violation:
    """One broken hardware limit: which node, which quantity, the value found and the limit."""

    node: str
    quantity: str
    value: Any
    limit: Any
    message: str = ""

    def __str__(self) -> str:
        return f"node {self.node}: {self.quantity} = {self.value} exceeds limit {self.limit}" + (
            f" ({self.message})" if self.message else "")


@runtime_checkable
class Target(Protocol):
    """A hardware target: its numeric limits and everything the core computes from them."""

    name: str
    limits: Any
    default_backend: str  # the backend name `verify` / `export` use when none is given

    def to_fixed_point(self, net: FloatNet, max_timesteps: Optional[int] = None) -> IntNet:
        """FloatNet -> IntNet within the limits (C5); FitError naming node, quantity and limit otherwise."""

    def to_fixed_point_with_report(self, net: FloatNet, max_timesteps: Optional[int] = None) -> tuple[IntNet, Any]:
        """The same IntNet plus a quantization report with a `format()` -> str."""

    def check_fit(self, net: IntNet, timesteps: Optional[int] = None) -> list[Violation]:
        """Every violated limit of `net` (for T = `timesteps`, default: the T its bound was proven for)."""

    def reference_simulate(self, net: IntNet, inputs: np.ndarray, timesteps: int, **kw: Any) -> Trace:
        """The bit-accurate reference simulator (C3, C6): one T."""

    def reference_simulate_multi(self, net: IntNet, inputs: np.ndarray, timesteps_list: Sequence[int],
                                 **kw: Any) -> dict[int, Trace]:
        """The reference at several T from one run (causality: the first T steps of a longer run)."""

    def resource_report(self, net: IntNet, trace: Optional[Trace] = None, **kw: Any) -> dict:
        """Neurons, synapses, cores, spikes, synaptic ops, energy (a JSON-able dict)."""

    def format_resource_report(self, report: dict) -> str:
        """`resource_report` as text."""

    def energy_model(self, **overrides: float) -> Any:
        """The per-operation energy assumptions `resource_report(energy=...)` uses, with user overrides."""

    def backend(self, name: Optional[str] = None, net: Optional[IntNet] = None) -> "Backend":
        """The backend `name` bound to this target's limits (default: the one that runs `net`'s neuron models,
        else `default_backend`)."""


@runtime_checkable
class Backend(Protocol):
    """One simulator or chip that runs an IntNet of one target (e.g. Lava's Loihi2SimCfg for loihi2)."""

    name: str  # short name for --backend, e.g. "lava"
    label: str  # what ran, recorded in reports, e.g. "lava-0.10-loihi2simcfg-fixed_pt"
    target: Target

    def build(self, net: IntNet, timesteps: int, inputs: Optional[np.ndarray] = None, **kw: Any) -> Any:
        """The backend's graph of `net` (not run); raises FitError for what it cannot run exactly."""

    def run(self, net: IntNet, inputs: np.ndarray, timesteps: int, *, record_steps: bool = False,
            progress: bool = False, **kw: Any) -> Trace:
        """Run every sample; a Trace like the reference's (step_spikes / step_readout with record_steps)."""

    def export(self, net: IntNet, out_dir: str | Path, *, timesteps: int = 8, force: bool = False,
               source: str = "") -> Path:
        """Write a self-contained bundle the backend's users can load and run; returns its folder."""


def require_fit(target: Target, net: IntNet, timesteps: Optional[int] = None, suffix: str = "") -> None:
    """Raise FitError naming the first violations (and how many more) if `net` breaks `target`'s limits."""
    violations = target.check_fit(net, timesteps)
    if violations:
        more = f" (+{len(violations) - 3} more)" if len(violations) > 3 else ""
        raise FitError(f"network does not fit {target.name}: " + "; ".join(str(v) for v in violations[:3])
                       + more + suffix)


__all__ = ["Trace", "Violation", "Target", "Backend", "require_fit"]
