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

Here: `with_offset_steps` (set rho on a net) and `offset_start` (stage 2's start, used by every simulator and the
Lava model). The rules on rho (`check_offset_steps`, `check_run`) and the step count of one inference
(`steps_per_inference`) are IR timing rules (`na_deploy.ir.timing`, C3), re-exported here.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from na_deploy.ir.timing import check_offset_steps, check_run, offset_steps, steps_per_inference  # noqa: F401


def with_offset_steps(net, rho: int, what: str = "offset_steps"):
    """Copy of a subtract-mode FloatNet / IntNet with meta offset_steps = rho (rho = 0 removes the key, so a net
    without calibration keeps its bytes); OffsetStepsError (`timing.check_offset_steps`) for a bad rho or another
    neuron mode."""
    rho = check_offset_steps(rho, what, net.nodes)
    meta = {k: v for k, v in net.meta.items() if k != "offset_steps"}
    if rho:
        meta["offset_steps"] = rho
    return type(net)(input=net.input, nodes=list(net.nodes), readout=net.readout, meta=meta)


def offset_start(v_rho: Any, precharge: Any, threshold: Any) -> Any:
    """pc + o * th, o = clip(floor(v_rho / th), -1, 1): numpy arrays or torch tensors (float or integer)."""
    if hasattr(v_rho, "div"):  # torch
        o = v_rho.div(threshold, rounding_mode="floor").clamp_(-1, 1)
    else:
        o = np.clip(np.floor_divide(v_rho, threshold), -1, 1)
    return precharge + o * threshold


__all__ = ["check_offset_steps", "with_offset_steps", "check_run", "offset_start", "steps_per_inference"]
