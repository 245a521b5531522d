"""FloatNet -> IntNet for Loihi 2 (contract C5): integer weights, thresholds, biases, pre-charges and one real
scale per node, plus a per-node quantization report and the static 24-bit bound.

Scale (sigma_m): one integer unit of node m's membrane is worth sigma_m (real). All inputs of m share it
(residual adds), so one spike of source s through float weight W contributes the integer
        q = round(W * v_s / (sigma_m * 2**e)) * 2**e,     v_s = threshold_s (a spike carries th_s, C2),
                                                         v_input = 1 (the payload is the raw pixel, C4),
with e the synapse's exponent (Dense and Identity, whose Lava processes -- Dense, diagonal Sparse -- honour
weight_exp; conv2d / avgpool synapses have e = 0 because Lava's Conv ignores weight_exp). Dense mantissas are
additionally even (Lava's Dense truncation): q = 2 * round(x / 2).

Choice of sigma_m (the finest scale every rule allows):
  1. weights: conv2d / avgpool inputs use their whole mantissa range: sigma_w = max |W v_s| / 127; Dense
     (mantissa <= 254) and Identity (gain <= 127) inputs then take the smallest exponent e >= 0 whose mantissas
     fit. A node without conv2d / avgpool inputs uses e = 0 for its largest input, which sets sigma_w (so a
     delay relay gets gain == threshold exactly).
  2. the static bound (see fit.py) over T = max_timesteps steps, the threshold's 24-bit range and the bias's
     mantissa/exponent range all scale like 1/sigma: if any is exceeded, sigma is raised by the worst ratio
     (repeated until everything fits), and the report says which quantity limited the scale.
  3. saturation (`saturation_scale`): where rule 1 would leave a spiking node's threshold below
     SATURATE_BELOW_UNITS integer units because a few output channels carry conv weights far above the others (a
     BN-folded channel with a vanishing running variance: MobileNetV2's depthwise convs fed by a dead channel), those
     channels -- at most MAX_SATURATED_SHARE of the node's channels -- are left out of rule 1 and their conv-like
     mantissas saturate at the op's range; the report (`NodeQuant.saturated`) and the IntNet's
     meta["saturated_channels"] name them. With more such channels the node keeps rule 1 (and may be refused).
Then threshold_int = round_half_up(th / sigma) (must be >= 1), precharge_int = threshold_int // 2 (floor:
for integer currents v0 = floor(th/2) gives exactly the spikes of v0 = th/2, since v0 + S >= th <=> S >=
ceil(th/2) either way; this is C1's round-half-up in the SNN), bias_int = round_half_away(b / sigma) split
into mantissa << exponent with the smallest exponent whose mantissa fits 13 bits.
The readout gets its own scale by the same rules (its potential, not a membrane, is bounded).
A graded node (contract C2, "Graded nodes") has threshold 1 and pre-charge 0 and its scale comes from
`graded_scale.py` (exact where its input weights allow); one payload unit of it is worth its scale, so the
synapses out of it carry W * sigma_g (`source_value`), and its payload interval is what its consumers' bounds take.

Rounding modes (every cast from real to integer in this module):
  * weights, gains, bias mantissas: round half away from zero, `round_half_away(x) = sign(x) floor(|x| + 1/2)`
    (symmetric: a weight and its negation quantize to negated integers);
  * thresholds and a pre-charge that is not th/2: round half up, `floor(x + 1/2)` (positive quantities; C1);
  * pre-charge th/2: floor division of the integer threshold (exact, see above).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

import numpy as np

from na_deploy.convert.delays import balance_delays
from na_deploy.errors import FitError
from na_deploy.rounding import round_half_away, round_half_up
from na_deploy.ir import (INPUT_NAME, AvgPool2d, Conv2d, Dense, FloatNet, Identity, IntNet, IntNeuronNode,
                          IntReadoutNode, NeuronNode, ReadoutNode, Synapse)

from na_deploy.hw_targets.loihi2.fit import NodeBound, bound_options, check_fit, lif_ratios, node_bound
from na_deploy.hw_targets.loihi2.graded_scale import (balance_ratio, check_graded_modes, consumer_load, exact_unit,
                                                     integer_gain_scale, spiking_consumers)
from na_deploy.hw_targets.loihi2.limits import LOIHI2, Loihi2Limits
from na_deploy.hw_targets.loihi2.quant_report import ROUNDING, NodeQuant, QuantReport, SynapseQuant

_MAX_REFINE = 40
SATURATE_BELOW_UNITS = 8  # rule 3: a threshold below this many integer units triggers channel saturation
MAX_SATURATED_SHARE = 0.125  # rule 3: at most this share of a node's output channels may saturate


# ------------------------------------------------------------------------------------- quantizers
def source_value(net: FloatNet, source: str, scales: Optional[dict] = None) -> float:
    """Real value of one payload unit of `source`: 1 for a pixel (C4), the source threshold for a spike (C2),
    the integer scale of a graded node (`scales`: the scales of the nodes quantized so far)."""
    if source == INPUT_NAME:
        return 1.0
    node = net.node(source)
    if node.neuron.graded:
        if scales is None or source not in scales:
            raise FitError(f"graded node {source}: its integer scale is needed before its consumers are quantized")
        return float(scales[source])
    return float(node.threshold)


def _real_weights(syn: Synapse, v: float) -> np.ndarray:
    return np.asarray(syn.op.weight, dtype=np.float64) * v


def _is_dense(syn: Synapse) -> bool:
    return isinstance(syn.op, Dense)


def _shiftable(syn: Synapse) -> bool:
    """Ops whose Lava process honours weight_exp: Dense, and Identity (a diagonal Sparse)."""
    return isinstance(syn.op, (Dense, Identity))


def mantissa_max(syn: Synapse, limits: Loihi2Limits) -> int:
    """Largest |integer mantissa| the quantizer uses for this op (symmetric ranges)."""
    if isinstance(syn.op, Dense):
        return limits.dense_weight_max
    if isinstance(syn.op, Conv2d):
        return limits.conv_weight_max
    return limits.gain_max


def weight_scale(peaks: list[float], shiftable: list[bool], limits: Loihi2Limits) -> Optional[float]:
    """The finest sigma at which every mantissa fits (module docstring, rule 1); None if all weights are 0.

    peaks[i] = max |W_i v_s| / mantissa_max_i. Conv-like inputs (exponent 0) fix sigma >= peak; shiftable inputs
    (Dense, Identity) may take an exponent up to e_max, so they only need sigma >= peak / 2**e_max, unless the
    node has no conv-like input, when the largest of them sets sigma with exponent 0."""
    fixed = [m for m, sh in zip(peaks, shiftable) if not sh]
    shift = [m for m, sh in zip(peaks, shiftable) if sh]
    if any(m > 0 for m in fixed):
        return max([max(fixed)] + [m / 2.0 ** limits.dense_exponent_max for m in shift])
    if any(m > 0 for m in shift):
        return max(shift)
    return None


def _mantissas(real: np.ndarray, unit: float, dense: bool) -> np.ndarray:
    """Integer mantissas of real / unit: round half away from zero; Dense: even (2 * round(x / 2))."""
    x = real / unit
    return (2 * round_half_away(x / 2) if dense else round_half_away(x)).astype(np.int64)


def synapse_exponent(syn: Synapse, real: np.ndarray, sigma: float, limits: Loihi2Limits, graded: bool = False) -> int:
    """0 for conv-like ops; for Dense / Identity the smallest e >= 0 whose mantissas fit the op's range. From a
    graded source (`graded`), whose payload is a sum of many units, an e = 0 that is inexact goes negative while
    the mantissas fit (Loihi's weight_exp floors y >> -e): finer gains, an error below one unit per step."""
    if not _shiftable(syn):
        return 0
    top, dense = mantissa_max(syn, limits), _is_dense(syn)
    e = 0
    while e < limits.dense_exponent_max and int(np.abs(_mantissas(real, sigma * 2.0 ** e, dense)).max()) > top:
        e += 1
    if graded and e == 0 and not np.allclose(_mantissas(real, sigma, dense) * sigma, real, rtol=1e-9, atol=0.0):
        while (e > limits.dense_exponent_min
               and int(np.abs(_mantissas(real, sigma * 2.0 ** (e - 1), dense)).max()) <= top):
            e -= 1
    return e


def quantize_synapse(syn: Synapse, v: float, sigma: float, limits: Loihi2Limits,
                     graded: bool = False, saturate: bool = False) -> tuple[Synapse, SynapseQuant]:
    """Integer synapse at node scale sigma (+ its report row). Dense mantissas even; conv-like exponent 0;
    `graded`: the source is a graded node (negative exponents allowed, `synapse_exponent`); `saturate`: conv-like
    mantissas beyond the op's range are clipped to it (rule 3)."""
    real = _real_weights(syn, v)
    e = synapse_exponent(syn, real, sigma, limits, graded)
    unit = sigma * 2.0 ** e
    q = _mantissas(real, unit, _is_dense(syn))
    saturated_share = 0.0
    if saturate and not _shiftable(syn) and np.size(q):
        top = mantissa_max(syn, limits)
        saturated_share = float(np.mean(np.abs(q) > top))
        q = np.clip(q, -top, top)
    op = syn.op
    if isinstance(op, Conv2d):
        new = Conv2d(q, op.stride, op.padding, op.groups)
    elif isinstance(op, Dense):
        new = Dense(q)
    elif isinstance(op, AvgPool2d):
        new = AvgPool2d(op.kernel, op.stride, int(q))
    elif isinstance(op, Identity):
        new = Identity(int(q))
    else:
        raise TypeError(f"unknown op {type(op).__name__}")
    err = np.abs(q * unit - real)
    peak = np.abs(real).max(initial=0.0)
    nz = real != 0
    rep = SynapseQuant(syn.source, op.kind, e, int(np.abs(q).max(initial=0)),
                       float(err.max(initial=0.0) / peak) if peak > 0 else 0.0,
                       float(((q == 0) & nz).sum() / nz.sum()) if nz.any() else 0.0, saturated_share)
    return Synapse(syn.source, new, e), rep


def quantize_bias(b_scaled: np.ndarray, limits: Loihi2Limits) -> tuple[np.ndarray, int, float]:
    """(mantissa, exponent, needed ratio): smallest exponent in [0, 7] whose mantissa
    round_half_away(b / 2**exp) fits 13 bits; ratio > 1 says how much coarser the scale must be."""
    m = np.abs(b_scaled).max(initial=0.0)
    for e in range(limits.bias_exp_min, limits.bias_exp_max + 1):
        mant = round_half_away(b_scaled / 2.0 ** e)
        if mant.min(initial=0) >= limits.bias_mant_min and mant.max(initial=0) <= limits.bias_mant_max:
            return mant.astype(np.int64), e, 0.0
    return np.zeros(len(b_scaled), dtype=np.int64), limits.bias_exp_max, m / (limits.bias_mant_max *
                                                                             2.0 ** limits.bias_exp_max)


def _bound_ratio(b: NodeBound, limits: Loihi2Limits) -> float:
    """How far the static bound exceeds the 24-bit range (<= 1: fits)."""
    worst = 0.0
    for lo, hi in (*b.synapses, *b.synapses_raw, b.current, b.membrane):
        worst = max(worst, hi / limits.state_max, -lo / -limits.state_min)
    return worst


def _precharge_int(node: NeuronNode, th_int: int, sigma: float) -> int:
    if math.isclose(node.precharge, node.threshold / 2, rel_tol=1e-12, abs_tol=0.0):
        return th_int // 2
    return int(round_half_up(node.precharge / sigma))


def _on_stock_lif(node) -> bool:
    """A mode "zero" neuron node: it runs on Lava's stock LIF (lava-lif), whose registers add limits."""
    return isinstance(node, NeuronNode) and node.neuron.name == "zero"


def _is_graded(node) -> bool:
    return isinstance(node, NeuronNode) and node.neuron.graded


def _build(node, net: FloatNet, sigma: float, T: int, limits: Loihi2Limits, scales: Optional[dict] = None,
           graded: Optional[dict] = None, saturate: bool = False):
    """Integer node at scale sigma, its report pieces, and the ratio by which sigma must grow (<= 1: ok)."""
    syns, reps = [], []
    for s in node.inputs:
        src_graded = s.source != INPUT_NAME and net.node(s.source).neuron.graded
        q, r = quantize_synapse(s, source_value(net, s.source, scales), sigma, limits, src_graded, saturate)
        syns.append(q)
        reps.append(r)
    b_scaled = node.bias / sigma
    lif = _on_stock_lif(node)
    # the LIF's bias is 64 x ours = bias_mant << (bias_exp + 6) with its bias_exp <= lif_bias_exp_max (6): ours 0
    mant, bexp, bias_ratio = quantize_bias(
        b_scaled, replace(limits, bias_exp_max=limits.lif_bias_exp_max - limits.lif_shift) if lif else limits)
    ratios = {"bias mantissa/exponent range": bias_ratio}
    if isinstance(node, ReadoutNode):
        inode = IntReadoutNode(name=node.name, shape=node.shape, inputs=syns, bias_mant=mant, bias_exp=bexp,
                               scale=sigma)
        th_int = pc = None
    else:
        if _is_graded(node):  # no threshold: z is the sum itself (C2 graded nodes)
            th_int, pc = 1, 0
        else:
            th_int = int(round_half_up(node.threshold / sigma))
            ratios["threshold range"] = th_int / limits.state_max
            if th_int < 1:
                return None, reps, th_int, ratios
            pc = _precharge_int(node, th_int, sigma)
        inode = IntNeuronNode(name=node.name, shape=node.shape, inputs=syns, threshold=th_int, bias_mant=mant,
                              bias_exp=bexp, precharge=pc, scale=sigma, p=node.p, neuron=node.neuron,
                              role=node.role)
    opts = {**bound_options(net), "graded": graded or {}}  # signed sources, offset calibration, graded sources
    bound = node_bound(inode, T, limits, **opts)
    ratios[f"24-bit bound over T={T}"] = _bound_ratio(bound, limits)
    if lif:
        ratios.update(lif_ratios(inode, bound, limits))  # the stock LIF's vth, a_in and v registers
    return (inode, bound), reps, th_int, ratios


def graded_sigma(node, net: FloatNet, scales: dict, limits: Loihi2Limits) -> Optional[float]:
    """A graded node's weight scale (`graded_scale.py`): an exact unit of its input weights, else the ordinary
    rule made coarser for integer gains from graded identity sources."""
    reals = [_real_weights(s, source_value(net, s.source, scales)) for s in node.inputs]
    if not any(_is_dense(s) for s in node.inputs):
        u = exact_unit(reals, [mantissa_max(s, limits) for s in node.inputs])
        if u is not None:
            return u
    peaks = [np.abs(r).max(initial=0.0) / mantissa_max(s, limits) for r, s in zip(reals, node.inputs)]
    sigma = weight_scale(peaks, [_shiftable(s) for s in node.inputs], limits)
    if sigma is None:
        return None
    srcs = [scales[s.source] for s in node.inputs if isinstance(s.op, Identity) and s.source != INPUT_NAME
            and net.node(s.source).neuron.graded]
    return integer_gain_scale(sigma, srcs, limits)


def channel_peaks(node, net: FloatNet, scales: dict, limits: Loihi2Limits) -> Optional[np.ndarray]:
    """Per output channel, the largest max |W v_s| / mantissa_max over the node's conv-like inputs (the sigma each
    channel alone would need, rule 1); shiftable inputs (Dense, Identity) count with their largest exponent. None
    when a conv's output channels are not the node's."""
    peaks = np.zeros(node.shape[0])
    for s in node.inputs:
        real = np.abs(_real_weights(s, source_value(net, s.source, scales))) / mantissa_max(s, limits)
        if _shiftable(s):
            real = real / 2.0 ** limits.dense_exponent_max
        if isinstance(s.op, Conv2d):
            per = real.reshape(real.shape[0], -1).max(axis=1, initial=0.0)
            if per.shape[0] != peaks.shape[0]:
                return None
        else:  # a pool, an identity or a dense synapse reaches every channel alike
            per = np.full_like(peaks, real.max(initial=0.0))
        peaks = np.maximum(peaks, per)
    return peaks


def saturation_scale(node, net: FloatNet, sigma: Optional[float], scales: dict,
                     limits: Loihi2Limits) -> Optional[tuple[float, list[int]]]:
    """Rule 3: (sigma, the saturating output channels) when rule 1's `sigma` leaves a spiking node's threshold
    below SATURATE_BELOW_UNITS units, because of channels that alone would, and those are at most
    MAX_SATURATED_SHARE of the channels; else None (rule 1's sigma stands)."""
    if (sigma is None or not isinstance(node, NeuronNode) or node.neuron.graded or node.role == "relay"
            or len(node.shape) != 3 or node.threshold / sigma >= SATURATE_BELOW_UNITS):
        return None
    peaks = channel_peaks(node, net, scales, limits)
    if peaks is None:
        return None
    out = peaks * SATURATE_BELOW_UNITS > node.threshold
    n_out = int(out.sum())
    rest = peaks[~out]
    if n_out == 0 or n_out > MAX_SATURATED_SHARE * len(peaks) or rest.max(initial=0.0) <= 0:
        return None
    return float(rest.max()), [int(c) for c in np.flatnonzero(out)]


def quantize_node(node, net: FloatNet, T: int, limits: Loihi2Limits = LOIHI2, scales: Optional[dict] = None,
                  graded: Optional[dict] = None):
    """(IntNeuronNode | IntReadoutNode, NodeQuant) at the finest scale that satisfies every rule. scales: the
    integer scales of the nodes quantized so far, graded: their graded payload intervals (graded sources)."""
    scales = {} if scales is None else scales
    if _is_graded(node):
        sigma = graded_sigma(node, net, scales, limits)
        built = _build(node, net, sigma, T, limits, scales, graded)[0] if sigma else None
        if built is not None:  # rule 3 of graded_scale.py: share the consumers' 24-bit budget
            loads = [consumer_load(s, mantissa_max(s, limits)) for _, s in spiking_consumers(net, node.name)]
            top = max(float(np.abs(np.asarray(s.op.weight)).max(initial=0)) for s in built[0].inputs)
            sigma *= min(balance_ratio(max(map(abs, built[1].membrane)), loads, T, limits), max(top, 1.0))
    else:
        peaks = [np.abs(_real_weights(s, source_value(net, s.source, scales))).max(initial=0.0)
                 / mantissa_max(s, limits) for s in node.inputs]
        sigma = weight_scale(peaks, [_shiftable(s) for s in node.inputs], limits)
    saturated: list[int] = []
    sat = saturation_scale(node, net, sigma, scales, limits)
    if sat is not None:
        sigma, saturated = sat
    if sigma is None:  # all weights zero: any scale works; keep thresholds / biases well resolved
        sigma = (node.threshold / limits.conv_weight_max if isinstance(node, NeuronNode)
                 else max(np.abs(node.bias).max(initial=0.0) / limits.bias_mant_max, 1e-12))
    limited_by = "weights" if not saturated else "weights (channels saturated)"
    for _ in range(_MAX_REFINE):
        built, reps, th_int, ratios = _build(node, net, sigma, T, limits, scales, graded, bool(saturated))
        if built is None:
            break
        what, ratio = max(ratios.items(), key=lambda kv: kv[1])
        if ratio <= 1.0:
            break
        # zero-mode nodes: the stock LIF's v bound moves in whole integer steps as weights round, so a
        # ratio just above 1 could repeat; step at least 0.1 % (subtract nodes keep their exact search)
        sigma *= (max(ratio, 1.001) if _on_stock_lif(node) else ratio) * (1 + 1e-9)
        limited_by = what
    else:
        raise FitError(f"node {node.name}: no scale satisfies {limited_by} (ratio {ratio:.4g} after "
                       f"{_MAX_REFINE} refinements); limit: 24-bit signed state, 13-bit bias mantissa")
    if built is None:
        raise FitError(f"node {node.name}: threshold = {th_int} at scale {sigma:.4g} exceeds limit integer "
                       f"threshold >= 1 (scale raised to fit the {limited_by}; lower --max-timesteps "
                       f"(now {T}) or reduce the node's input weights / bias)")
    inode, bound = built
    b_err = float(np.abs(inode.bias - node.bias / sigma).max(initial=0.0))
    kind = "readout" if isinstance(node, ReadoutNode) else ("relay" if node.role == "relay" else "neuron")
    if _is_graded(node):  # no threshold (the IntNeuronNode's 1 is a placeholder the compare never reads)
        kind, th_int = "graded", None
    th_err = None if th_int is None else abs(th_int * sigma - node.threshold) / node.threshold
    rep = NodeQuant(node.name, kind, float(sigma), limited_by, th_int, th_err,
                    None if th_int is None else inode.precharge, inode.bias_exp, b_err, reps,
                    bound.max_abs(), bound.headroom_bits(limits), saturated)
    return inode, rep


# --------------------------------------------------------------------------------------- convert
def to_fixed_point_with_report(net: FloatNet, limits: Loihi2Limits = LOIHI2,
                               max_timesteps: Optional[int] = None) -> tuple[IntNet, QuantReport]:
    """FloatNet -> (IntNet, QuantReport). Pure. Unbalanced nets get relays first (C3).

    Raises FitError naming node, quantity and limit when no integer version fits Loihi 2."""
    if not isinstance(net, FloatNet):
        raise FitError(f"to_fixed_point needs a FloatNet, got {type(net).__name__}")
    T = int(max_timesteps if max_timesteps is not None else limits.max_timesteps)
    if T < 1:
        raise FitError(f"max_timesteps = {T} exceeds limit >= 1")
    if not net.is_balanced():
        net = balance_delays(net)
    check_graded_modes(net)
    report = QuantReport(max_timesteps=T)
    nodes, scales, graded = [], {}, {}
    opts = bound_options(net)
    for n in net.all_nodes():
        inode, rep = quantize_node(n, net, T, limits, scales, graded)
        nodes.append(inode)
        report.nodes.append(rep)
        scales[n.name] = inode.scale
        if _is_graded(n):
            graded[n.name] = node_bound(inode, T, limits, **{**opts, "graded": graded}).membrane
    meta = {**net.meta, "target": "loihi2", "max_timesteps": T, "rounding": dict(ROUNDING)}
    saturated = {r.node: r.saturated for r in report.nodes if r.saturated}
    if saturated:  # rule 3 changed these channels' weights: the artifact says so (C5)
        meta["saturated_channels"] = saturated
    inet = IntNet(input=net.input, nodes=nodes[:-1], readout=nodes[-1], meta=meta)
    violations = check_fit(inet, limits, T)
    if violations:
        raise FitError(f"{len(violations)} Loihi 2 limit violation(s); first: {violations[0]}")
    return inet, report


def to_fixed_point(net: FloatNet, limits: Loihi2Limits = LOIHI2, max_timesteps: Optional[int] = None) -> IntNet:
    """FloatNet -> IntNet (see module docstring); the report goes to `to_fixed_point_with_report`."""
    return to_fixed_point_with_report(net, limits, max_timesteps)[0]
