"""Does an IntNet fit Loihi 2? Design-rule checks and the static 24-bit bound (contract C5).

`check_fit(net, limits)` returns every broken rule as a `Violation(node, quantity, value, limit)`; an empty
list means the net fits. Rules (each a small function in `limits.py` style):

* weights per op type: conv2d mantissas in [-128, 127] and exponent 0 (Lava's Conv ignores weight_exp);
  dense mantissas even in [-256, 254] ([-254, 0] for an all-non-positive matrix: Lava's Dense
  clip/truncate leaves exactly those unchanged), exponent in [-8, 7]; avgpool gain in [-128, 127], exponent 0
  (a grouped Conv); identity gain in [-128, 127], exponent in [-8, 7] (a diagonal Sparse);
* threshold in [1, 2**23 - 1], pre-charge 24-bit signed, bias mantissa 13-bit signed, bias exponent 0..7,
  neuron model one of Loihi2Limits.neuron_models ("subtract": our Lava process; "zero": the stock LIF),
  balanced hop counts (C3);
* the **static bound**: interval arithmetic over the largest input payload (255 for graded pixels, 1 for a
  spike), the integer weights, the bias and T = max_timesteps steps, proving that no per-synapse accumulator,
  no total input current and no membrane (before or after reset) leaves the 24-bit signed range.

Static bound, per node m and output channel c (all integers):
    synapse i:  lo_i = P_i * sum(min(W_i[c], 0)),  hi_i = P_i * sum(max(W_i[c], 0)),  then shifted by e_i
                (x * 2**e for e >= 0, floor(x / 2**-e) for e < 0) -- the interval of shift(op(payload), e);
    current:    I in [sum_i lo_i + b_c, sum_i hi_i + b_c];
    membrane:   v_0 = pc; v_t = v_{t-1} + I_t, minus th after a spike (mode "subtract",
                `membrane_interval`) or set to 0 after a spike (mode "zero", `zero_membrane_interval`):
                closed forms of [min_t, max_t] of v over T steps, valid for any T;
    readout:    V_t = sum of t currents: bound = [min(I_lo, T * I_lo), max(I_hi, T * I_hi)].
Mode "negative" (signed spikes): a source's payload lies in [-1, 1], so each synapse's interval takes the |w|
sums (`op_interval(..., pmin=-1)`); the subtract closed form then holds for the membrane. Mode "accumulate":
T steps of integration with no reset (`accumulate_membrane_interval`). Two-stage offset calibration (meta
offset_steps > 0): the pre-charge may be pc - th .. pc + th (`bound_options`, `node_bound(offset=True)`).
Graded nodes (C2): the "membrane" is the current interval with 0, which is its consumers' payload range
(`graded` in `bound_options`); the payload must fit a graded spike, `graded_spike_bits` = 24 signed.
Mode "zero" runs on Lava's stock LIF (backend "lava-lif"), whose registers add rules (`lif_rules`): vth <=
2^17 - 1, 64 x bias encodable as bias_mant << bias_exp (`limits.lif_bias`), the per-step synaptic sum (a_in,
without the bias) 16-bit signed, and |64 v| <= 2^23 - 1 (the LIF's v is 64 x ours and saturates there;
for a zero-mode node fed only by the input, over one step: `membrane_steps`).
`lif_ratios` states the last three as ratios (<= 1: fits) for a fixed-point scale search (not wired in yet).
Bounds are computed in float64 (exact below 2**53; far beyond the 24-bit limits anyway).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from na_deploy.ir import INPUT_NAME, AvgPool2d, Conv2d, Dense, Identity, IntNet, IntReadoutNode
from na_deploy.protocols import Violation

from na_deploy.hw_targets.loihi2.limits import (LOIHI2, Loihi2Limits, lif_bias, rule_equal, rule_integer, rule_member,
                                                rule_range, rule_step)


# ----------------------------------------------------------------------------------------- bounds
@dataclass(frozen=True)
class NodeBound:
    """Static integer bounds of one node over T steps (global min / max over its channels)."""

    node: str
    timesteps: int
    synapses: tuple[tuple[float, float], ...]  # per synapse: interval of shift(op(payload), exponent)
    synapses_raw: tuple[tuple[float, float], ...]  # per synapse: interval of op(payload) (before the shift)
    current: tuple[float, float]  # total input current incl. bias, per step
    membrane: tuple[float, float]  # membrane (neuron: pre/post spike; readout: accumulated potential)
    synaptic: tuple[float, float] = (0.0, 0.0)  # per-step sum of the synapses, without the bias (LIF a_in)

    def max_abs(self) -> float:
        vals = [abs(x) for iv in (*self.synapses, *self.synapses_raw, self.current, self.membrane) for x in iv]
        return max(vals) if vals else 0.0

    def headroom_bits(self, limits: Loihi2Limits = LOIHI2) -> float:
        """log2(limit / largest bound): > 0 means it fits, by that many bits."""
        m = self.max_abs()
        return float("inf") if m == 0 else float(np.log2(limits.state_max / m))


def payload_max(source: str, limits: Loihi2Limits = LOIHI2, graded=None) -> int:
    """Largest payload a source sends: graded pixels (C4), a graded node's sum (`graded`: name -> (lo, hi)) or a
    binary spike (C2)."""
    if graded and source in graded:
        return graded[source][1]
    return limits.graded_payload_max if source == INPUT_NAME else limits.spike_payload_max


def payload_min(source: str, signed_sources=(), graded=None) -> int:
    """Smallest payload a source sends: -1 for a signed-spike node (mode "negative", C2), a graded node's lower
    bound (<= 0), else 0."""
    if graded and source in graded:
        return graded[source][0]
    return -1 if source in signed_sources else 0


def op_interval(op, pmax: float, channels: int, pmin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel [lo, hi] of op(payload) for payloads in [pmin, pmax] (pmin <= 0; float64). With
    pmin = -1 (signed spikes) a weight contributes -|w| and +|w|: the |w| sums."""
    if isinstance(op, (Conv2d, Dense)):
        w = np.asarray(op.weight, dtype=np.float64)
        axes = (1, 2, 3) if isinstance(op, Conv2d) else 1
        neg, pos = np.minimum(w, 0).sum(axis=axes), np.maximum(w, 0).sum(axis=axes)
        if pmin == 0:
            return neg * pmax, pos * pmax
        return neg * pmax + pos * pmin, pos * pmax + neg * pmin
    if isinstance(op, AvgPool2d):
        g = float(op.weight) * op.kernel[0] * op.kernel[1]
    elif isinstance(op, Identity):
        g = float(op.weight)
    else:
        raise TypeError(f"unknown op {type(op).__name__}")
    if pmin == 0:
        lo, hi = min(g * pmax, 0.0), max(g * pmax, 0.0)
    else:
        lo, hi = min(g * pmax, g * pmin), max(g * pmax, g * pmin)
    return np.full(channels, lo), np.full(channels, hi)


def shift_interval(lo: np.ndarray, hi: np.ndarray, e: int) -> tuple[np.ndarray, np.ndarray]:
    """Interval of shift(y, e): y * 2**e (e >= 0), floor(y / 2**-e) (e < 0, arithmetic shift)."""
    if e >= 0:
        return lo * 2.0 ** e, hi * 2.0 ** e
    return np.floor(lo / 2.0 ** -e), np.floor(hi / 2.0 ** -e)


def membrane_interval(i_lo: np.ndarray, i_hi: np.ndarray, threshold: int, precharge: int,
                      timesteps: int) -> tuple[float, float]:
    """[min, max] over t = 1..T of an IF membrane (reset by subtraction) whose per-step current lies in
    [i_lo, i_hi] (per channel), before and after the spike check; closed form (any T, O(channels)):

      upper: i_hi <= 0: pc + i_hi;   else max(pc, th - 1) + i_hi + (T - 1) * max(i_hi - th, 0)
             (below th the membrane grows to at most th - 1 before a step adds i_hi; a reset removes th
             per step, so it can only keep climbing by i_hi - th per step when i_hi > th);
      lower: min(pc, 0) + T * min(i_lo, 0)
             (a reset leaves v = pre - th >= 0, so below 0 only negative currents push it down);
    and the initial pre-charge pc itself."""
    th, pc, T = float(threshold), float(precharge), float(timesteps)
    upper = np.where(i_hi <= 0, pc + i_hi, max(pc, th - 1) + i_hi + (T - 1) * np.maximum(i_hi - th, 0))
    lower = min(pc, 0.0) + T * np.minimum(i_lo, 0)
    return min(pc, float(lower.min())), max(pc, float(upper.max()))


def zero_membrane_interval(i_lo: np.ndarray, i_hi: np.ndarray, threshold: int, precharge: int,
                           timesteps: int) -> tuple[float, float]:
    """[min, max] over t = 1..T of an IF membrane reset to 0 (mode "zero": spike when v > th, then v <- 0)
    whose per-step current lies in [i_lo, i_hi], before and after the spike check; closed form:

      upper: max(pc, th) + max(i_hi, 0)
             (the value held between steps is pc (start), 0 (after a spike) or <= th (no spike, since
             v > th would have fired), so before a step v <= max(pc, th); one step adds at most i_hi);
      lower: min(pc, 0) + T * min(i_lo, 0)
             (a reset sets v = 0, so below min(pc, 0) only negative currents push it, at most T times);
    and the pre-charge pc itself. Unlike "subtract" the upper bound does not grow with T."""
    th, pc, T = float(threshold), float(precharge), float(timesteps)
    upper = max(pc, th) + np.maximum(i_hi, 0)
    lower = min(pc, 0.0) + T * np.minimum(i_lo, 0)
    return min(pc, float(lower.min())), max(pc, float(upper.max()))


def accumulate_membrane_interval(i_lo: np.ndarray, i_hi: np.ndarray, threshold: int, precharge: int,
                                 timesteps: int) -> tuple[float, float]:
    """[min, max] of an accumulate-then-fire membrane (mode "accumulate"): T steps of integration without any
    reset, [pc + T * min(i_lo, 0), pc + T * max(i_hi, 0)], then the fire phase, which only lowers v while
    v >= th (so it stays within [0, v_T] there: the bound includes 0)."""
    pc, T = float(precharge), float(timesteps)
    return (min(pc, 0.0, float((pc + T * np.minimum(i_lo, 0)).min())),
            max(pc, float((pc + T * np.maximum(i_hi, 0)).max())))


def graded_membrane_interval(i_lo: np.ndarray, i_hi: np.ndarray, threshold: int, precharge: int,
                             timesteps: int) -> tuple[float, float]:
    """A graded node (C2): its state is its current of this step (then 0), so [min(i_lo, 0), max(i_hi, 0)]."""
    return min(0.0, float(i_lo.min())), max(0.0, float(i_hi.max()))


# "negative": the subtract closed form holds unchanged: its negative spike (v < 0 -> v + th) leaves v < th, and
# below 0 only negative currents push v (the per-step current interval uses the signed payload range).
MEMBRANE_INTERVALS = {"subtract": membrane_interval, "zero": zero_membrane_interval,
                      "negative": membrane_interval, "accumulate": accumulate_membrane_interval,
                      "graded": graded_membrane_interval}


def readout_interval(i_lo: np.ndarray, i_hi: np.ndarray, timesteps: int) -> tuple[float, float]:
    """[min, max] over t = 1..T of V_t = sum of t currents in [i_lo, i_hi]."""
    T = float(timesteps)
    return float(np.minimum(i_lo, T * i_lo).min()), float(np.maximum(i_hi, T * i_hi).max())


def bound_options(net) -> dict:
    """The net-wide facts a node's bound needs (FloatNet or IntNet): which sources send signed spikes, and
    whether two-stage offset calibration may move a pre-charge by +-th (meta offset_steps > 0)."""
    opts = {"signed_sources": frozenset(n.name for n in net.nodes if n.neuron.signed),
            "offset": int(net.meta.get("offset_steps", 0) or 0) > 0}
    if isinstance(net, IntNet) and any(n.neuron.graded for n in net.nodes):
        opts["graded"] = graded_payloads(net, opts)
    return opts


def graded_payloads(net: IntNet, opts: dict, timesteps: int = 1, limits: Loihi2Limits = LOIHI2) -> dict:
    """name -> (lo, hi) payload interval of every graded node of an IntNet (one step's current; any T)."""
    graded: dict = {}
    for n in net.nodes:
        if n.neuron.graded:
            graded[n.name] = node_bound(n, timesteps, limits, **{**opts, "graded": graded}).membrane
    return graded


def node_bound(node, timesteps: int, limits: Loihi2Limits = LOIHI2, signed_sources=frozenset(),
               offset: bool = False, graded=None) -> NodeBound:
    """The static bound of one IntNet node (neuron or readout) over `timesteps` steps. signed_sources: nodes
    whose payload is in [-1, 1] (`bound_options`); offset: pre-charges anywhere in [pc - th, pc + th];
    graded: name -> payload interval of graded sources."""
    c = node.shape[0]
    raws, syns = [], []
    cur_lo, cur_hi = np.zeros(c), np.zeros(c)
    for s in node.inputs:
        lo, hi = op_interval(s.op, payload_max(s.source, limits, graded), c,
                             payload_min(s.source, signed_sources, graded))
        raws.append((float(lo.min()), float(hi.max())))
        lo, hi = shift_interval(lo, hi, s.exponent)
        syns.append((float(lo.min()), float(hi.max())))
        cur_lo, cur_hi = cur_lo + lo, cur_hi + hi
    synaptic = (float(cur_lo.min()), float(cur_hi.max()))
    b = np.asarray(node.bias, dtype=np.float64)
    cur_lo, cur_hi = cur_lo + b, cur_hi + b
    if isinstance(node, IntReadoutNode):
        mem = readout_interval(cur_lo, cur_hi, timesteps)
    else:
        interval = MEMBRANE_INTERVALS.get(node.neuron.name, membrane_interval)  # unknown: refused by name anyway
        steps = membrane_steps(node, timesteps)
        mem = interval(cur_lo, cur_hi, node.threshold, node.precharge, steps)
        if offset:  # stage 2 starts from pc + o * th, o in {-1, 0, 1} (the closed forms are monotone in pc)
            mem = (interval(cur_lo, cur_hi, node.threshold, node.precharge - node.threshold, steps)[0],
                   interval(cur_lo, cur_hi, node.threshold, node.precharge + node.threshold, steps)[1])
    return NodeBound(node.name, int(timesteps), tuple(syns), tuple(raws),
                     (float(cur_lo.min()), float(cur_hi.max())), mem, synaptic)


def membrane_steps(node, timesteps: int) -> int:
    """Steps the membrane bound must cover: T, except 1 for a mode "zero" node fed only by the input. Its
    current is one constant c per neuron and window (C4: the same pixels every step), so v only falls when
    c <= 0: it can fire at most on step 1 (pc + c > th), and afterwards it falls below 0 and never fires
    again. The stock LIF's v saturates at -(2^23 - 1) while the reference's keeps falling, but neither fires,
    so counts stay equal; what must hold exactly is step 1 (and, for c > 0, v >= min(pc, 0)). Without this
    the bound's T x min(I, 0) would force a first layer to a few weight levels at large T."""
    if node.neuron.name == "zero" and node.inputs and all(s.source == INPUT_NAME for s in node.inputs):
        return 1
    return int(timesteps)


def net_timesteps(net: IntNet, timesteps: int | None = None, limits: Loihi2Limits = LOIHI2) -> int:
    """T the bound is checked for: the argument, else net.meta['max_timesteps'], else the limits' default."""
    if timesteps is not None:
        return int(timesteps)
    return int(net.meta.get("max_timesteps", limits.max_timesteps))


def static_bounds(net: IntNet, limits: Loihi2Limits = LOIHI2, timesteps: int | None = None) -> dict[str, NodeBound]:
    T = net_timesteps(net, timesteps, limits)
    opts = bound_options(net)
    return {n.name: node_bound(n, T, limits, **opts) for n in net.all_nodes()}


# ------------------------------------------------------------------------------------ design rules
def synapse_rules(node: str, syn, limits: Loihi2Limits) -> list[Violation]:
    """Weight / gain range and exponent per op type (Lava's Dense and Conv rules, docs/contract.md, Lava facts)."""
    op, src = syn.op, syn.source
    if isinstance(op, Conv2d):
        return (rule_integer(node, f"conv weight dtype (from {src})", op.weight)
                or rule_range(node, f"conv weight (from {src})", op.weight, limits.conv_weight_min,
                              limits.conv_weight_max)
                + rule_equal(node, f"conv exponent (from {src})", syn.exponent, limits.conv_exponent,
                             "Lava's Conv ignores weight_exp; put the exponent into the node's scale"))
    if isinstance(op, Dense):
        return (rule_integer(node, f"dense weight dtype (from {src})", op.weight)
                or rule_range(node, f"dense weight (from {src})", op.weight, limits.dense_weight_min,
                              limits.dense_weight_max)
                + rule_step(node, f"dense weight parity (from {src})", op.weight, limits.dense_weight_step,
                            "Lava's Dense truncates mixed-sign weights to even values")
                + (rule_range(node, f"dense weight in an all-non-positive matrix (from {src})", op.weight,
                              limits.dense_inhibitory_min, 0, "Lava clips inhibitory matrices to [-255, 0]")
                   if np.asarray(op.weight).size and np.max(op.weight) <= 0 else [])
                + rule_range(node, f"dense exponent (from {src})", syn.exponent, limits.dense_exponent_min,
                             limits.dense_exponent_max))
    kind = "avgpool gain" if isinstance(op, AvgPool2d) else "identity gain"
    w = op.weight
    if not float(w).is_integer():
        return [Violation(node, f"{kind} (from {src})", w, "integer")]
    v = rule_range(node, f"{kind} (from {src})", int(w), limits.gain_min, limits.gain_max)
    if isinstance(op, AvgPool2d):
        return v + rule_equal(node, f"avgpool2d exponent (from {src})", syn.exponent, limits.conv_exponent,
                              "runs as a grouped Conv, which ignores weight_exp")
    if int(w) == 0:
        v.append(Violation(node, f"identity gain (from {src})", 0, "non-zero", "a zero diagonal has no Sparse form"))
    return v + rule_range(node, f"identity exponent (from {src})", syn.exponent, limits.dense_exponent_min,
                          limits.dense_exponent_max, "runs as a diagonal Sparse with weight_exp")


def parameter_rules(node, limits: Loihi2Limits) -> list[Violation]:
    """Threshold, pre-charge, bias mantissa / exponent and neuron model of one node."""
    v = (rule_range(node.name, "bias_mant", node.bias_mant, limits.bias_mant_min, limits.bias_mant_max)
         + rule_range(node.name, "bias_exp", node.bias_exp, limits.bias_exp_min, limits.bias_exp_max))
    if isinstance(node, IntReadoutNode):
        return v
    return (v + rule_range(node.name, "threshold", node.threshold, 1, limits.state_max)
            + rule_range(node.name, "precharge", node.precharge, limits.state_min, limits.state_max)
            + rule_member(node.name, "neuron model", node.neuron.name, limits.neuron_models))


def bound_rules(node, bound: NodeBound, limits: Loihi2Limits, graded=None) -> list[Violation]:
    """The static bound inside the 24-bit signed range (per-synapse accumulators, current, membrane)."""
    lo, hi, T = limits.state_min, limits.state_max, bound.timesteps
    v: list[Violation] = []
    for s, raw, cooked in zip(node.inputs, bound.synapses_raw, bound.synapses):
        worst = max(raw + cooked, key=abs)
        v += rule_range(node.name, f"synaptic accumulator bound (from {s.source})", int(worst), lo, hi,
                        f"payload <= {payload_max(s.source, limits, graded)}")
    v += rule_range(node.name, "input current bound", int(max(bound.current, key=abs)), lo, hi)
    what = "readout potential bound" if isinstance(node, IntReadoutNode) else "membrane bound"
    v += rule_range(node.name, f"{what} (T={T})", int(max(bound.membrane, key=abs)), lo, hi,
                    "lower max_timesteps or coarsen the node's scale")
    return v


def lif_rules(node, bound: NodeBound, limits: Loihi2Limits) -> list[Violation]:
    """The stock LIF's registers for a mode "zero" node (it runs as LIF(du=4095, dv=0), v = 64 x ours)."""
    name = node.name
    v = rule_range(name, "vth (stock LIF register)", node.threshold, 1, limits.lif_vth_max,
                   "17-bit unsigned; spike when v > vth << 6")
    b = np.asarray(node.bias)
    _, _, ok = lif_bias(b, limits)
    if not ok.all():
        v.append(Violation(name, "bias_mant/bias_exp (stock LIF registers)", _int(b[~ok].flat[0]),
                           "64 x bias = bias_mant << bias_exp, bias_mant 13-bit signed, "
                           f"bias_exp 0..{limits.lif_bias_exp_max}",
                           "bias in [-4096, 4095]" + (", or even in [-8192, 8190]" if limits.lif_bias_exp_max >= 7
                                                      else " (bias_exp 6, netx's fixed choice)")))
    a_lo, a_hi = limits.lif_a_in_range
    v += rule_range(name, "a_in (stock LIF register, per-step synaptic sum)", int(max(bound.synaptic, key=abs)),
                    a_lo, a_hi, "16-bit signed")
    m = limits.state_max
    v += rule_range(name, f"v (stock LIF register, 64 x membrane bound, T={bound.timesteps})",
                    64 * int(max(bound.membrane, key=abs)), -m, m, "the LIF saturates there")
    return v


def lif_ratios(node, bound: NodeBound, limits: Loihi2Limits) -> dict[str, float]:
    """How far a mode "zero" node exceeds the stock LIF's vth, a_in and v registers (<= 1: fits; all shrink as
    the node's scale grows), for the fixed-point scale search. The bias has its own rule: an IR bias_exp <=
    lif_bias_exp_max - 6 keeps 64 x bias encodable (`limits.lif_bias`). One more ratio keeps room for the netx
    export, which folds the pre-charge into the bias (`netx/format.py` `netx_runnable`: b + round(pc / T), T >= 1):
    |b| + |pc| within the 13-bit mantissa, so the folded bias fits for every T."""
    a_lo, a_hi = limits.lif_a_in_range
    lo, hi = bound.synaptic
    m_lo, m_hi = bound.membrane
    fold = float(np.abs(np.asarray(node.bias)).max(initial=0)) + abs(float(node.precharge))
    return {"stock LIF vth": node.threshold / limits.lif_vth_max,
            "stock LIF a_in": max(hi / a_hi, lo / a_lo, 0.0),
            "stock LIF v": max(m_hi, -m_lo, 0.0) / limits.lif_membrane_max,
            "stock LIF bias + pre-charge (netx fold)": fold / limits.bias_mant_max}


def _int(x) -> int:
    return int(x.item() if isinstance(x, np.generic) else x)


def topology_rules(net: IntNet) -> list[Violation]:
    """All paths into a node must have equal hop counts (C3)."""
    d = {INPUT_NAME: 0}
    out = []
    for n in net.all_nodes():
        depths = sorted({d[s.source] for s in n.inputs})
        if len(depths) > 1:
            out.append(Violation(n.name, "input hop counts", depths, "all equal (C3)",
                                 "insert relays with na_deploy.convert.delays.balance_delays"))
        d[n.name] = 1 + depths[-1]
    return out


def check_fit(net: IntNet, limits: Loihi2Limits = LOIHI2, timesteps: int | None = None) -> list[Violation]:
    """Every Loihi 2 limit `net` breaks (empty list: it fits), for T up to `timesteps` (default: net's
    meta['max_timesteps'] or limits.max_timesteps)."""
    T = net_timesteps(net, timesteps, limits)
    out = topology_rules(net)
    opts = bound_options(net)
    for n in net.all_nodes():
        for s in n.inputs:
            out += synapse_rules(n.name, s, limits)
        out += parameter_rules(n, limits)
        bound = node_bound(n, T, limits, **opts)
        out += bound_rules(n, bound, limits, opts.get("graded"))
        if not isinstance(n, IntReadoutNode) and n.neuron.name == "zero":
            out += lif_rules(n, bound, limits)
        if not isinstance(n, IntReadoutNode) and n.neuron.graded:  # the payload within a graded spike
            lo, hi = limits.graded_spike_range
            out += rule_range(n.name, "graded payload bound", int(max(bound.membrane, key=abs)), lo, hi,
                              f"a graded spike carries {limits.graded_spike_bits} bits signed")
    return out


def format_violations(violations: list[Violation]) -> str:
    if not violations:
        return "fits Loihi 2: no violations"
    return "\n".join([f"{len(violations)} Loihi 2 limit violation(s):"] + [f"  {v}" for v in violations])
