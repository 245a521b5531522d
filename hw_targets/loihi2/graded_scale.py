"""The integer scale of a graded node (contract C2 "Graded nodes", C5), for `fixed_point.quantize_node`.

A graded node forwards its integer input sum as a graded spike, so one payload unit is worth its scale sigma_g,
and every synapse out of it carries W * sigma_g (`fixed_point.source_value`). sigma_g is chosen so that its own
input weights stay exact where they can:

1. **exact unit**: when every real input weight W * v_s is an integer multiple k * u of one unit u with
   |k| <= the op's mantissa range (an average pool of a spiking source: th / k^2 each, k = 1; a graded relay:
   sigma_src, k = 1), sigma_g = u: the node's input is exact and its payload as small as it can be
   (9 at most for a 3 x 3 pool of spikes), which keeps its consumers' 24-bit bounds small too;
2. otherwise the ordinary node rule (`fixed_point.weight_scale`: the finest sigma at which every mantissa fits,
   the documented 8-bit quantization), then made coarser, if needed, so that an Identity input from another
   graded node (a residual chain of graded nodes: MobileNetV2's bottleneck sums) has an integer gain
   sigma_src / sigma_g = m * 2**e (m <= 127, e >= 0): exact, where the rounded gain would lose up to 1 / (2m).
   A graded source finer than sigma_w keeps sigma_w: its gain < 1 is a mantissa with a negative exponent
   (Loihi's weight_exp floors: an error below one unit per step, `fixed_point.synapse_exponent`).
The fit loop may still coarsen sigma_g (24-bit bound, bias range), as for every node.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from na_deploy.hw_targets.loihi2.limits import Loihi2Limits

_REL = 1e-9  # relative tolerance of "an integer multiple" (float64 products of exact quantities)


def exact_unit(reals: Sequence[np.ndarray], tops: Sequence[int]) -> Optional[float]:
    """The unit u of rule 1 (the smallest nonzero |weight|), or None when some weight is no multiple k*u with
    |k| <= its op's mantissa range (tops[i])."""
    nz = [np.abs(r[r != 0]) for r in reals]
    nz = [a for a in nz if a.size]
    if not nz:
        return None
    u = float(min(a.min() for a in nz))
    for r, top in zip(reals, tops):
        k = np.asarray(r, dtype=np.float64) / u
        if np.abs(k).max(initial=0.0) > top or not np.allclose(k, np.round(k), rtol=0.0, atol=_REL * max(1.0, top)):
            return None
    return u


def integer_gain_scale(sigma_w: float, graded_identity_scales: Sequence[float], limits: Loihi2Limits) -> float:
    """Rule 2's coarsening: the smallest sigma >= sigma_w at which sigma_src / sigma = m * 2**e (m <= gain_max,
    e in [0, dense_exponent_max]) for the coarsest graded identity source; sigma_w when that source is finer
    (its gain < 1 then takes a negative exponent: `fixed_point.synapse_exponent`)."""
    if not graded_identity_scales:
        return sigma_w
    src = max(graded_identity_scales)
    r = src / sigma_w
    if r < 1.0:
        return sigma_w
    e = 0
    while r / 2.0 ** e > limits.gain_max and e < limits.dense_exponent_max:
        e += 1
    m = max(1, math.floor(r / 2.0 ** e * (1 + _REL)))
    return src / (m * 2.0 ** e)


__all__ = ["exact_unit", "integer_gain_scale"]
