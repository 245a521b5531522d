"""Two-stage offset calibration of a subtract-mode net (COS-style, "lightweight"; Hao et al., ICLR 2023, "Bridging
the gap between ANNs and SNNs by calibrating offset spikes", arXiv 2302.10685, code github.com/hzc1208/ANN2SNN_COS).

An inference option stored in the net itself: meta["offset_steps"] = rho (int >= 0, 0 = off), in FloatNet and
IntNet (saved in *.nad.h5, carried through fixed point), only for nets whose every node runs mode "subtract".

    stage 1: every node runs its window for rho steps from its usual pre-charge pc, with the same input as
             stage 2 (all layers at once, one run); its residual membrane after rho steps v_rho gives the
             per-neuron offset o = clip(floor(v_rho / th), -1, 1): -1 when it fired more than its input
             justified (v_rho < 0), +1 when it fired less (v_rho >= th), else 0;
    stage 2: the normal T-step run, each neuron starting from pc' = pc + o * th (per neuron, per sample).

Spike counts, readout and accuracy are stage 2's; stage 1's spikes are real spikes too (Trace.event_counts,
spikes per inference), and one inference takes rho + T steps (+ the depth terms of each run). T < rho is
refused ("offset calibration (rho steps) is longer than the run (T steps)").

Where this follows COS (read from the authors' modules.py, class MPLayer): a pre-simulation of rho
(`presim_len`) steps from the usual th/2 start; the residual membrane after it decides the offset spike: v < 0
shifts the initial membrane down, v >= th up; then the T-step (`sim_len`) run restarts from the shifted start
on the same input sequence. Where it simplifies COS: (1) all layers calibrate at once in one uncalibrated
rho-step run (COS calibrates layer by layer, each layer's pre-simulation seeing its calibrated predecessors'
output; the paper's "iterative property"), which is what one pass on hardware can do; (2) the shift is exactly
one threshold (COS shifts by max(1, distance of the nearest firing / non-firing membrane to the threshold), in
units of th); (3) o = -1 whenever v_rho < 0 (COS also requires at least one stage-1 spike, which for a
subtract neuron starting at th/2 only differs when no spike came and the input was negative: then the shift
changes nothing unless the input turns positive later); (4) the shift is clipped to one spike (COS's higher
orders are commented out in its code).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from na_deploy.errors import ConversionError, SimulationError
from na_deploy.ir.graph import offset_steps


def check_offset_steps(rho: Any, what: str = "offset_steps") -> int:
    """rho as an int >= 0, or ConversionError naming `what` and what is allowed."""
    if isinstance(rho, bool) or not isinstance(rho, (int, np.integer)) or int(rho) < 0:
        raise ConversionError(f"{what} {rho!r}: allowed: an integer >= 0 (0 = no offset calibration)")
    return int(rho)


def with_offset_steps(net, rho: int, what: str = "offset_steps"):
    """Copy of a subtract-mode FloatNet / IntNet with meta offset_steps = rho (rho = 0 removes the key, so a net
    without calibration keeps its bytes); ConversionError for another neuron mode."""
    rho = check_offset_steps(rho, what)
    if rho:
        bad = [n for n in net.nodes if n.neuron.name != "subtract"]
        if bad:
            raise ConversionError(f"{what} {rho}: offset calibration needs neuron mode subtract, node {bad[0].name} "
                                  f"runs {bad[0].neuron.name!r}; allowed: {what} 0 for that mode")
    meta = {k: v for k, v in net.meta.items() if k != "offset_steps"}
    if rho:
        meta["offset_steps"] = rho
    return type(net)(input=net.input, nodes=list(net.nodes), readout=net.readout, meta=meta)


def check_run(net, timesteps) -> None:
    """SimulationError when the net's calibration is longer than the shortest run asked for."""
    rho = offset_steps(net)
    ts = [int(t) for t in ([timesteps] if np.ndim(timesteps) == 0 else timesteps)]
    if rho and ts and min(ts) < rho:
        raise SimulationError(f"offset calibration ({rho} steps) is longer than the run ({min(ts)} steps)")


def offset_start(v_rho: Any, precharge: Any, threshold: Any) -> Any:
    """pc + o * th, o = clip(floor(v_rho / th), -1, 1): numpy arrays or torch tensors (float or integer)."""
    if hasattr(v_rho, "div"):  # torch
        o = v_rho.div(threshold, rounding_mode="floor").clamp_(-1, 1)
    else:
        o = np.clip(np.floor_divide(v_rho, threshold), -1, 1)
    return precharge + o * threshold


def steps_per_inference(net, timesteps: int) -> int:
    """Global steps one sample takes through the pipelined net (C3), both stages included: the Lava slot
    (`Trace.extra["slot_steps"]`, equal by tests/test_compare.py). A run of T steps lasts (window start of the
    readout) + T - 1, each node's window starting one step after its sources start emitting; an "accumulate"
    node starts emitting T steps after its window start. Offset calibration's stage 1 runs inside each node's
    window, just before stage 2 (the input is held for rho + T steps): it adds rho."""
    T = int(timesteps)

    def run(t: int) -> int:
        emit, start = {"input": 1}, 0
        for n in net.all_nodes():
            start = max(emit[s.source] for s in n.inputs) + 1
            if n is not net.readout:
                emit[n.name] = start + n.neuron.emit_delay(t)
        return start + t - 1

    return run(T) + offset_steps(net)


__all__ = ["check_offset_steps", "with_offset_steps", "check_run", "offset_start", "steps_per_inference"]
