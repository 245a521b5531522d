"""The `Target` protocol and the `Trace` result type (DESIGN: Targets). The core never imports a target;
`hw_targets.<name>` implements this protocol and the CLI passes the target object in.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np

from .ir import FloatNet, IntNet


@dataclass
class Trace:
    """What one simulation of an IntNet produced, per sample.

    spike_counts: node name -> int64 array (B, *node_shape), spikes counted over the node's T-window (C3).
    readout: (B, classes) final readout potentials (int64 for integer simulators).
    """

    timesteps: int
    spike_counts: dict[str, np.ndarray]
    readout: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

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
    name: str
    limits: Any

    def to_fixed_point(self, net: FloatNet, **options: Any) -> IntNet: ...

    def check_fit(self, net: IntNet) -> list[Violation]: ...

    def reference_simulate(self, net: IntNet, inputs: np.ndarray, timesteps: int) -> Trace: ...


def require_fit(target: "Target", net: IntNet, suffix: str = "") -> None:
    """Raise FitError naming the first violation (and how many more) if `net` breaks `target`'s limits."""
    from .errors import FitError

    violations = target.check_fit(net)
    if violations:
        raise FitError(f"network does not fit {target.name}: {violations[0]}"
                       + (f" (+{len(violations) - 1} more)" if len(violations) > 1 else "") + suffix)


def first_difference(a: Trace, b: Trace) -> Optional[dict]:
    """First (sample, node, neuron index) where two traces differ, or None if identical (C6)."""
    for s in range(a.batch):
        for name, ca in a.spike_counts.items():
            cb = b.spike_counts.get(name)
            if cb is None:
                return {"sample": s, "node": name, "neuron": None, "a": "present", "b": "missing"}
            if not np.array_equal(ca[s], cb[s]):
                idx = np.argwhere(ca[s] != cb[s])[0]
                return {"sample": s, "node": name, "neuron": tuple(int(i) for i in idx),
                        "a": int(ca[s][tuple(idx)]), "b": int(cb[s][tuple(idx)])}
        if not np.array_equal(a.readout[s], b.readout[s]):
            idx = int(np.argwhere(a.readout[s] != b.readout[s])[0][0])
            return {"sample": s, "node": "readout", "neuron": (idx,), "a": a.readout[s][idx], "b": b.readout[s][idx]}
    return None
