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
3. **balance with the consumers**: the payload bound at that sigma times a spiking consumer's summed mantissas
   and T would exceed the 24-bit state range by R: sigma_g grows by sqrt(R) (`balance_ratio`), so the node
   and its consumer each lose sqrt(R) of resolution instead of the consumer losing all of R; at most by the
   node's largest input mantissa (an exact unit, mantissas 1, is never coarsened: its consumer takes all of R).
The fit loop may still coarsen sigma_g (24-bit bound, bias range), as for every node.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from na_deploy.errors import FitError
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


def check_graded_modes(net) -> None:
    """Graded nodes run next to subtract nodes only (C2): refuse other neuron models in one line."""
    graded = [n.name for n in net.nodes if n.neuron.graded]
    others = sorted({n.neuron.name for n in net.nodes if not n.neuron.graded} - {"subtract"})
    if graded and others:
        raise FitError(f"node {graded[0]}: a graded node in a net of neuron model {others[0]}; allowed: graded "
                       "nodes in nets of mode subtract")


def spiking_consumers(net, name: str) -> list:
    """(consumer node, synapse) pairs that read graded node `name`'s payload and are no graded node themselves,
    through graded relays (which forward it unchanged)."""
    out = []
    for m in net.all_nodes():
        for s in m.inputs:
            if s.source != name:
                continue
            if getattr(m, "neuron", None) is not None and m.neuron.graded:
                if m.role == "relay":
                    out += spiking_consumers(net, m.name)
            else:
                out.append((m, s))
    return out


def consumer_load(syn, top: int) -> float:
    """How many payloads one consumer neuron sums at full mantissa range: max over output channels of
    sum |W| / max |W| times the op's mantissa range `top` (the consumer's current is about load * payload)."""
    w = np.abs(np.asarray(syn.op.weight, dtype=np.float64))
    peak = float(w.max(initial=0.0))
    if peak == 0.0:
        return 0.0
    if w.ndim <= 1:  # identity / pool gain: one payload (a k x k pool: k^2 of them)
        k = syn.op.kernel[0] * syn.op.kernel[1] if hasattr(syn.op, "kernel") else 1
        return float(top * k)
    return float(top * (w.reshape(w.shape[0], -1).sum(axis=1) / peak).max())


def balance_ratio(payload_peak: float, loads: Sequence[float], timesteps: int, limits: Loihi2Limits) -> float:
    """Rule 3: a consumer's membrane grows to about T * load * payload, which the 24-bit bound would make its
    scale absorb alone (its weights rounding to a few levels, or to 0). When that exceeds the state range by R,
    the graded node takes sqrt(R) of it (a coarser sigma_g, a smaller payload) and the consumer the other sqrt(R):
    both keep about 127 / sqrt(R) mantissa levels. Returns the factor for sigma_g (>= 1)."""
    need = max((timesteps * ld * payload_peak for ld in loads), default=0.0)
    r = need / limits.state_max
    return math.sqrt(r) if r > 1.0 else 1.0


__all__ = ["check_graded_modes", "exact_unit", "integer_gain_scale", "spiking_consumers", "consumer_load",
           "balance_ratio"]
