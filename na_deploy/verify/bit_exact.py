"""Verification (contract C6): a target's bit-accurate reference simulator vs any backend, on the same samples.

`verify(net, inputs, T, target, backend)` runs both, compares every node's spike counts and the readout
potentials of every sample, and on a mismatch names the first one (sample, node, neuron, both values) and,
by re-running that sample with per-step recording, the window step at which it first differs and the
earliest divergence of any node. Target-agnostic: it calls only the `Target` and `Backend` protocols
(`na_deploy.protocols`), never a target package.

The report's keys name the backend's side "lava" (`layers[i]["lava"]`, `seconds["lava_per_sample"]`, ...):
the names of report.json from before backends were pluggable, kept so reports stay comparable;
`report["backend"]` says which backend it was.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from na_deploy.checks import check_pixels, check_timestep
from na_deploy.errors import SimulationError
from na_deploy.ir import IntNet
from na_deploy.protocols import Backend, Target, Trace, require_fit


@dataclass
class VerifyReport:
    """Reference vs backend on the same samples (C6): per-layer totals, readout, first mismatch, timing."""

    samples: int
    timesteps: int
    layers: list[dict]  # {node, reference, lava, equal}: total spikes over all samples ("lava": the backend)
    readout_equal: bool
    mismatching_samples: int
    first_mismatch: Optional[dict]
    seconds: dict
    backend: str  # the backend's label (what ran)
    sample_ids: list[int] = field(default_factory=list)  # which samples (e.g. test-set indices) were verified
    per_sample: list[dict] = field(default_factory=list)  # {sample, equal, first} for every sample
    reference_trace: Optional[Trace] = field(default=None, repr=False)  # what each side produced (not in JSON)
    backend_trace: Optional[Trace] = field(default=None, repr=False)

    @property
    def equal(self) -> bool:
        return self.first_mismatch is None

    def to_dict(self) -> dict:
        return {"equal": self.equal, "samples": self.samples, "timesteps": self.timesteps, "layers": self.layers,
                "readout_equal": self.readout_equal, "mismatching_samples": self.mismatching_samples,
                "first_mismatch": self.first_mismatch, "seconds": self.seconds, "backend": self.backend,
                "sample_ids": self.sample_ids, "per_sample": self.per_sample}


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
        for name, ea in (a.event_counts or {}).items():  # messages sent (signed spikes, offset stage 1)
            eb = (b.event_counts or {}).get(name)
            if eb is not None and not np.array_equal(ea[s], eb[s]):
                idx = np.argwhere(ea[s] != eb[s])[0]
                return {"sample": s, "node": name, "neuron": tuple(int(i) for i in idx), "what": "event count",
                        "a": int(ea[s][tuple(idx)]), "b": int(eb[s][tuple(idx)])}
    return None


def step_of_difference(ref_steps: np.ndarray, hw_steps: np.ndarray) -> Optional[int]:
    """First window step (1-based) at which two (T, ...) per-step records differ, else None."""
    for j in range(min(len(ref_steps), len(hw_steps))):
        if not np.array_equal(ref_steps[j], hw_steps[j]):
            return j + 1
    return None


def prefix_causal(net: IntNet) -> bool:
    """True when the first j steps of a T-step run are a j-step run (C3), which `reference_step_records` needs:
    not for windowed neuron models (accumulate-then-fire) nor two-stage offset calibration."""
    from na_deploy.ir.graph import offset_steps

    return offset_steps(net) == 0 and not any(n.neuron.windowed for n in net.nodes)


def reference_step_records(net: IntNet, x: np.ndarray, timesteps: int, target: Target) -> tuple[dict, np.ndarray]:
    """Per-window-step spikes {node: (T, *shape)} and readout potentials (T, K) of ONE sample x (1, ...),
    from the target's reference at every prefix (C3: the first j steps of a T-step run are a j-step run):
    spikes at step j = counts(j) - counts(j - 1); readout after step j = V(j)."""
    T = int(timesteps)
    tr = target.reference_simulate_multi(net, x, range(1, T + 1))
    spikes = {}
    for n in net.nodes:
        c = np.stack([tr[j].spike_counts[n.name][0] for j in range(1, T + 1)])
        spikes[n.name] = np.diff(c, axis=0, prepend=np.zeros_like(c[:1]))
    return spikes, np.stack([tr[j].readout[0] for j in range(1, T + 1)])


def _jsonable(d: Optional[dict]) -> Optional[dict]:
    """A mismatch record with numpy integers and tuples as plain ints and lists (for report.json)."""
    if d is None:
        return None
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _jsonable(v)
        elif isinstance(v, (tuple, list)):
            v = [int(a) for a in v]
        elif isinstance(v, (np.integer,)):
            v = int(v)
        out[k] = v
    return out


def _earliest_divergence(net: IntNet, ref_sp: dict, ref_ro: np.ndarray, hw_sp: dict,
                         hw_ro: np.ndarray) -> Optional[dict]:
    """The node and neuron that differ first in backend time (depth + window step), readout included."""
    depth = net.depths()
    earliest = None
    for n in net.nodes:
        jn = step_of_difference(ref_sp[n.name], hw_sp[n.name])
        if jn is not None:
            g = depth[n.name] + jn
            if earliest is None or g < earliest["lava_step_in_slot"]:
                where = np.argwhere(ref_sp[n.name][jn - 1] != hw_sp[n.name][jn - 1])[0]
                earliest = {"node": n.name, "neuron": [int(a) for a in where], "step": jn, "lava_step_in_slot": g}
    jr = step_of_difference(ref_ro, hw_ro)
    if jr is not None and (earliest is None or depth[net.readout.name] + jr < earliest["lava_step_in_slot"]):
        where = np.argwhere(ref_ro[jr - 1] != hw_ro[jr - 1])[0]
        earliest = {"node": net.readout.name, "neuron": [int(a) for a in where], "step": jr,
                    "lava_step_in_slot": depth[net.readout.name] + jr}
    return earliest


def locate_step(net: IntNet, x: np.ndarray, timesteps: int, node: str, neuron, target: Target, backend: Backend,
                **run_kwargs: Any) -> dict:
    """Re-run ONE sample x (1, ...) with per-step recording on the backend and in the target's reference;
    return the window step (1-based) and backend step (depth + window step, within the sample's slot) at
    which `node[neuron]` first differs, and the earliest step at which any neuron of any node differs."""
    if not prefix_causal(net):
        return {"step": None, "lava_step_in_slot": None, "earliest": None,
                "step_note": "not located: this net's counts at T are not the first T steps of a longer run "
                             "(accumulate-then-fire or offset calibration)"}
    depth = net.depths()
    hw = backend.run(net, x, timesteps, record_steps=True, **run_kwargs)
    ref_sp, ref_ro = reference_step_records(net, x, timesteps, target)
    hw_sp, hw_ro = hw.step_spikes, hw.step_readout
    idx = (slice(None), *neuron) if neuron is not None else (slice(None),)
    if node not in ref_sp:  # the readout
        j = step_of_difference(ref_ro[idx], hw_ro[idx])
    else:
        j = step_of_difference(ref_sp[node][idx], hw_sp[node][idx])
    return {"step": j, "lava_step_in_slot": None if j is None else depth[node] + j,
            "earliest": _earliest_divergence(net, ref_sp, ref_ro, hw_sp, hw_ro)}


def _layers(ref: Trace, hw: Trace) -> list[dict]:
    """Per node: total spikes over all samples on both sides and whether the per-sample counts are equal."""
    return [{"node": k, "reference": int(ref.spike_counts[k].sum()), "lava": int(hw.spike_counts[k].sum()),
             "equal": bool(np.array_equal(ref.spike_counts[k], hw.spike_counts[k]))} for k in ref.spike_counts]


def _sample_slice(tr: Trace, s: int) -> Trace:
    """Sample s of a trace as a one-sample trace."""
    ev = None if tr.event_counts is None else {k: v[s:s + 1] for k, v in tr.event_counts.items()}
    return Trace(tr.timesteps, {k: v[s:s + 1] for k, v in tr.spike_counts.items()}, tr.readout[s:s + 1],
                 event_counts=ev)


def _first_mismatch(net: IntNet, ref: Trace, hw: Trace, sample_ids: Sequence[int]) -> Optional[dict]:
    """`first_difference` as a report record: {sample (its id), node (the readout by its name), neuron,
    reference, lava}."""
    first = first_difference(ref, hw)
    if first is None:
        return None
    a, b = first.pop("a"), first.pop("b")
    if first["node"] not in ref.spike_counts:  # first_difference labels the readout "readout"
        first["node"] = net.readout.name
    first["sample"] = int(sample_ids[first["sample"]])
    return _jsonable({**first, "reference": a, "lava": b})


def _per_sample(net: IntNet, ref: Trace, hw: Trace, sample_ids: Sequence[int]) -> list[dict]:
    """{sample id, equal, first difference in that sample (without step location) or None} per sample."""
    out = []
    for s, sid in enumerate(sample_ids):
        first = _first_mismatch(net, _sample_slice(ref, s), _sample_slice(hw, s), [sid])
        out.append({"sample": int(sid), "equal": first is None, "first": first})
    return out


def verify(net: IntNet, inputs: np.ndarray, timesteps: int, target: Target, backend: Backend, *,
           locate: bool = True, progress: bool = False, sample_ids: Optional[Sequence[int]] = None,
           **run_kwargs: Any) -> VerifyReport:
    """`target`'s reference simulator vs `backend` on the same samples, every node, every sample (C6).

    sample_ids: what to call the samples in the report (e.g. their test-set indices; default 0..N-1).
    Refuses (FitError) a net failing the target's fit check before anything runs. On a mismatch,
    `first_mismatch` names the sample, node, neuron, both values and (locate=True) the step, found by
    re-running that sample with per-step recording. `run_kwargs` go to `backend.run` (for Lava: on_build,
    samples_per_run, timeout_s)."""
    T = check_timestep(timesteps)
    require_fit(target, net, T, suffix=f"; refusing to run it on {backend.name}")
    x = check_pixels(inputs, net.input.shape)
    ids = [int(i) for i in (range(len(x)) if sample_ids is None else sample_ids)]
    if len(ids) != len(x):
        raise SimulationError(f"sample_ids: {len(ids)} ids for {len(x)} samples; give one id per sample")
    t0 = time.perf_counter()
    ref = target.reference_simulate(net, x, T)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    hw = backend.run(net, x, T, progress=progress, **run_kwargs)
    t_hw = time.perf_counter() - t0
    first = _first_mismatch(net, ref, hw, ids)
    if first is not None and locate:
        s = ids.index(first["sample"])
        first.update(_jsonable(locate_step(net, x[s:s + 1], T, first["node"], first["neuron"], target, backend,
                                           **run_kwargs)))
    per_sample = _per_sample(net, ref, hw, ids)
    n = len(x)
    seconds = {"reference": t_ref, "lava": t_hw, "reference_per_sample": t_ref / n, "lava_per_sample": t_hw / n,
               "lava_over_reference": t_hw / max(t_ref, 1e-12),
               "lava_run": hw.extra.get("seconds_run"), "lava_build": hw.extra.get("seconds_build")}
    return VerifyReport(samples=n, timesteps=T, layers=_layers(ref, hw),
                        readout_equal=bool(np.array_equal(ref.readout, hw.readout)),
                        mismatching_samples=sum(not r["equal"] for r in per_sample), first_mismatch=first,
                        seconds=seconds, backend=backend.label, sample_ids=ids, per_sample=per_sample,
                        reference_trace=ref, backend_trace=hw)


__all__ = ["VerifyReport", "verify", "first_difference", "prefix_causal", "step_of_difference",
           "reference_step_records", "locate_step"]
