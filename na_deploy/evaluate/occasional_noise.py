"""Occasional noise, measured (Li & Rajendran, arXiv 2312.05290), and the off-grid share it is not.

For a neuron layer m (role "layer"; delay relays only copy their source and are left out) with threshold th,
pre-charge v0, p levels, T = k*p steps and spike count c of one neuron over its window (float SNN or an
integer target's trace), two figures are reported per layer and k:

**Occasional noise** (docs/contract.md "Occasional noise"): timing noise, the count minus what a *regular* IF neuron
emits for the same total input over the window. The input is what the layer actually received in this run:

    U = sum_i shift_i(op_i(P_i)) + T*b          (the synaptic current plus bias, summed over the T steps)
    P_input = T*x                               (analog input, the same x every step, C4)
    P_s = c_s * q_s                             (spiking source s: its count; q_s = th_s in a FloatNet, 1 in an IntNet)
    r = clip(floor((v0 + U) / th), 0, T)        (subtract reset, C2; v0 = th/2: r = clip(floor(T*u/th + 1/2), 0, T))
    noise share(m, k) = #{neurons, samples : c != r} / #{neurons * samples}
    spurious / missing = the same count split into c > r and c < r;  mean |c - r| (spikes per neuron-sample)

u = U/T is the mean input per step, and r is exactly the count of a subtract-reset IF neuron fed the constant
current u: v(t) = v0 + t*u - th*c(t) stays in [v0 - th, v0 + th) as long as 0 <= u <= th, so
c(t) = floor((v0 + t*u)/th); u < 0 gives 0 and u > th one spike per step. In quantized-ANN terms, with
s = th/p and v0 = th/2, r = clip(floor(k*u/s + 1/2), 0, k*p): the neuron's quantized-ANN level at the k-times
finer step s/k, of the input rate the SNN really delivered. A layer whose input is constant (the first layer,
whose only source is the image) therefore shows 0 at every k; a deviation is a spike too many (spurious) or
too few (missing) for the layer's own input, i.e. uneven arrival in time -- the paper's occasional noise.
The measure is local: errors inherited from earlier layers are in U, not counted again.
Exact in an IntNet: integer U (every Loihi 2 exponent is >= 0, shift(y, e) = y << e) and floor division. An
input synapse with e < 0 floors per step (T * (op(x) >> -e), exact); a spiking source with e < 0 enters with
its real mean op(P)*2**e. FloatNet: float64. Other neuron models (e.g. "zero"): r is the count of the node's
own model stepped T times from v0 with the constant current u.

**Off grid** (what this report called "noise share" before): the count is not k times the quantized ANN's
level n of that neuron (from `ann_eval.ann_forward`, the ANN's own inputs):

    off-grid share(m, k) = #{c != k*n} / #{neurons * samples};  over / under: c > k*n / c < k*n
    mean |c - k*n| / k  (in ANN levels);   firing rate = sum c / (#neurons * #samples * T)

At k = 1 it is the end-to-end disagreement with the quantized ANN (errors accumulate through the layers). At
k >= 2 it also counts the finer rate resolution (k*p + 1 counts vs p + 1 levels) as a difference, which is
not noise: it measures how far the SNN is off the ANN's grid, not how noisy it is.

Results are small dataclasses of ints / floats / strings (JSON-serialisable via `to_dict`); the noise fields
are None where no inputs were given. Batches combine with `merge_noise` / `merge_reports` (exact: all fields
are sums), so a report over a test set of any size is the merge of per-chunk reports.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from na_deploy.errors import SimulationError
from na_deploy.ir import INPUT_NAME, IntNet, SubtractIF

DEFINITIONS = {
    "noise": "spike count != r = clip(floor((v0 + U)/th), 0, T), U = the layer's input + bias summed over its window "
             "(the count of a regular IF neuron fed the same total input as a constant current)",
    "off_grid": "spike count != k x quantized-ANN level at T = k*p (at k >= 2 this includes the finer rate "
                "resolution, which is not noise)",
}


@dataclass
class LayerNoise:
    """Occasional noise and off-grid counts of one layer at T = k*p (raw sums, so batches merge exactly)."""

    node: str
    p: int
    k: int
    T: int
    neurons: int          # per sample
    samples: int
    off_grid: int         # neuron-samples with count != k * level
    off_grid_over: int    # count > k * level
    off_grid_under: int   # count < k * level
    off_grid_abs: int     # sum |count - k * level| (spikes)
    spikes: int           # sum of counts
    noise: Optional[int] = None          # count != r (the regular count for the layer's own input); None: not measured
    noise_spurious: Optional[int] = None  # count > r
    noise_missing: Optional[int] = None   # count < r
    noise_abs: Optional[int] = None       # sum |count - r| (spikes)

    @property
    def total(self) -> int:
        return self.neurons * self.samples

    def _per(self, v: Optional[int], scale: float = 1.0) -> Optional[float]:
        if v is None:
            return None
        return v / (scale * self.total) if self.total else float("nan")

    @property
    def noise_share(self) -> Optional[float]:
        return self._per(self.noise)

    @property
    def noise_mean_abs(self) -> Optional[float]:
        """Mean |count - r| in spikes per neuron-sample."""
        return self._per(self.noise_abs)

    @property
    def off_grid_share(self) -> float:
        return self._per(self.off_grid)

    @property
    def off_grid_mean_abs_levels(self) -> float:
        return self._per(self.off_grid_abs, self.k)

    @property
    def firing_rate(self) -> float:
        return self._per(self.spikes, self.T)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(total=self.total, noise_share=self.noise_share, noise_mean_abs=self.noise_mean_abs,
                 off_grid_share=self.off_grid_share, off_grid_mean_abs_levels=self.off_grid_mean_abs_levels,
                 firing_rate=self.firing_rate)
        return d


_SUMS = ("samples", "off_grid", "off_grid_over", "off_grid_under", "off_grid_abs", "spikes", "noise", "noise_spurious",
         "noise_missing", "noise_abs")


def _deviation_sums(d: np.ndarray) -> tuple[int, int, int, int]:
    """(#nonzero, #positive, #negative, sum |d|) of count differences d."""
    return (int(np.count_nonzero(d)), int(np.count_nonzero(d > 0)), int(np.count_nonzero(d < 0)),
            int(np.abs(d).sum()))


def _layer_noise(node: str, c: np.ndarray, n: np.ndarray, p: int, T: int) -> LayerNoise:
    """Off-grid sums of one layer: counts c vs k * levels n, both (B, *shape)."""
    c = np.asarray(c).astype(np.int64)
    n = np.asarray(n).astype(np.int64)
    if c.shape != n.shape:
        raise SimulationError(f"node {node}: spike counts have shape {c.shape}, ANN levels {n.shape}")
    k = T // p
    og, over, under, ab = _deviation_sums(c - k * n)
    return LayerNoise(node=node, p=int(p), k=int(k), T=int(T), neurons=int(np.prod(c.shape[1:])),
                      samples=int(c.shape[0]), off_grid=og, off_grid_over=over, off_grid_under=under,
                      off_grid_abs=ab, spikes=int(c.sum()))


def off_grid_rows(counts: Mapping[str, Any], levels: Mapping[str, Any], T: int, p_by_node: Mapping[str, int],
                  roles: Optional[Mapping[str, str]] = None) -> list[LayerNoise]:
    """Per layer: neurons whose spike count over T steps differs from (T/p) x ANN level (off grid; the noise
    fields stay None: `add_timing_noise` fills them).

    counts / levels: node -> (B, *shape) arrays (torch or numpy). Nodes present in both, with role "layer"
    (when `roles` is given) and with p dividing T are measured, in the order of `counts`.
    """
    if int(T) < 1:
        raise SimulationError(f"T must be >= 1, got {T}")
    rows = []
    for name, c in counts.items():
        if name not in levels or name not in p_by_node or (roles is not None and roles.get(name) != "layer"):
            continue
        p = int(p_by_node[name])
        if T % p == 0:
            rows.append(_layer_noise(name, _np(c), _np(levels[name]), p, int(T)))
    if not rows:
        raise SimulationError(f"occasional noise at T={T}: no layer with both spike counts and ANN levels whose "
                              f"p divides T (p by node: {dict(p_by_node)})")
    return rows


def _np(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def window_input(net: Any, node: Any, counts: Mapping[str, Any], inputs: Any, T: int,
                 chunk: int = 512) -> np.ndarray:
    """U: the synaptic input plus bias of `node` summed over its T-step window, (B, *shape) float64, from the
    sources' spike counts over the same T (`counts`: node -> (B, ...)) and the raw images `inputs` (module
    docstring). Ops run through `na_deploy.simulate.torch_ops` in float64 on the CPU (exact for an IntNet's
    integers)."""
    import torch

    from na_deploy.simulate.torch_ops import compile_op

    integer = isinstance(net, IntNet)
    x = _np(inputs)
    syns = []
    for s in node.inputs:
        if s.source != INPUT_NAME and s.source not in counts:
            raise SimulationError(f"occasional noise: layer {node.name} needs the spike counts of its source "
                                  f"{s.source} at T={T}")
        q = 1.0 if integer or s.source == INPUT_NAME else float(net.node(s.source).threshold)
        syns.append((s.source, compile_op(s.op, torch.float64, "cpu"), 2.0 ** s.exponent, q))
    parts = []
    for i in range(0, int(x.shape[0]), int(chunk)):
        tot = 0.0
        for src, fn, gain, q in syns:
            a = x[i:i + chunk] if src == INPUT_NAME else _np(counts[src])[i:i + chunk] * q
            y = fn(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))).numpy() * gain
            tot = tot + (T * (np.floor(y) if gain < 1 else y) if src == INPUT_NAME else y)  # C4 input: per step
        parts.append(tot)
    u = np.concatenate(parts) if parts else np.zeros((0,) + tuple(node.shape))
    bias = np.asarray(node.bias, dtype=np.float64).reshape((-1,) + (1,) * (len(node.shape) - 1))
    return u + T * bias


def regular_counts(node: Any, U: np.ndarray, T: int) -> np.ndarray:
    """r: the spike count of a regular neuron of `node` whose window input U arrives as a constant current U/T
    (module docstring): closed form for subtract reset, else the node's own neuron model stepped T times."""
    th, v0 = node.threshold, node.precharge
    if isinstance(node.neuron, SubtractIF):
        if isinstance(th, (int, np.integer)) and np.array_equal(U, np.rint(U)):  # IntNet: exact integers
            r = (U.astype(np.int64) + int(v0)) // int(th)
        else:
            r = np.floor((v0 + U) / th)
        return np.clip(r, 0, T).astype(np.int64)
    u = U / T
    v = np.full(U.shape, float(v0))
    r = np.zeros(U.shape, dtype=np.int64)
    for _ in range(int(T)):
        v += u
        r += np.asarray(node.neuron.fire_and_reset_inplace(v, th)).astype(np.int64)
    return r


def merge_noise(a: Sequence[LayerNoise], b: Sequence[LayerNoise]) -> list[LayerNoise]:
    """Combine two measurements of the same layers over disjoint samples (sums add; None stays None)."""
    if [(r.node, r.T) for r in a] != [(r.node, r.T) for r in b]:
        raise SimulationError("merge_noise: the two measurements cover different layers / T")
    add = (lambda u, v: None if u is None or v is None else u + v)
    return [dataclasses.replace(x, **{f: add(getattr(x, f), getattr(y, f)) for f in _SUMS}) for x, y in zip(a, b)]


def merge_reports(a: Optional["NoiseReport"], b: "NoiseReport") -> "NoiseReport":
    """Two reports of the same net, simulator and k over disjoint samples as one (a None: b); exact (sums)."""
    if a is None:
        return b
    if a.simulator != b.simulator or list(a.rows) != list(b.rows):
        raise SimulationError(f"merge_reports: {a.simulator} k={list(a.rows)} vs {b.simulator} k={list(b.rows)}")
    return NoiseReport(a.simulator, {k: merge_noise(a.rows[k], b.rows[k]) for k in a.rows})


def firing_rates(counts: Mapping[str, Any], T: int) -> dict[str, float]:
    """Spikes per neuron per step over T steps, per node."""
    out = {}
    for name, c in counts.items():
        c = _np(c)
        out[name] = float(c.sum()) / (c.size * T) if c.size else float("nan")
    return out


@dataclass
class NoiseReport:
    """Occasional noise and off grid at several k (T = k*p per layer) for one simulator ('float' | 'int' | ...)."""

    simulator: str
    rows: dict[int, list[LayerNoise]]    # k -> per-layer rows

    def to_dict(self) -> dict[str, Any]:
        return {"simulator": self.simulator, "definitions": dict(DEFINITIONS),
                "by_k": {str(k): [r.to_dict() for r in rows] for k, rows in self.rows.items()}}

    def overall(self, k: int, metric: str = "noise") -> Optional[float]:
        """Share of all layer neuron-samples with occasional noise (metric "noise") or off grid ("off_grid") at
        this k; None when the noise was not measured."""
        if metric not in DEFINITIONS:
            raise SimulationError(f"unknown metric {metric!r}; known: {', '.join(DEFINITIONS)}")
        rows = self.rows[k]
        vals = [getattr(r, metric) for r in rows]
        if any(v is None for v in vals):
            return None
        tot = sum(r.total for r in rows)
        return sum(vals) / tot if tot else float("nan")


def noise_layers(net: Any) -> list:
    """The nodes occasional noise measures: role "layer" and spiking (a graded node sends sums, not spikes: it
    has no ANN level and no off-grid count)."""
    return [n for n in net.nodes if n.role == "layer" and not getattr(getattr(n, "neuron", None), "graded", False)]


def noise_report(net: Any, counts_by_T: Mapping[int, Mapping[str, Any]], levels: Mapping[str, Any],
                 ks: Iterable[int], simulator: str = "float", inputs: Any = None) -> NoiseReport:
    """Off grid of every layer of `net` (FloatNet or IntNet: p = node.p, role = node.role) at each k in `ks`,
    reading each layer's counts at T = k*p from `counts_by_T` (T -> node -> (B, *shape)), and, given the raw
    images `inputs` the counts were simulated on, occasional noise (`add_timing_noise`)."""
    p_by_node = {n.name: int(n.p) for n in net.nodes}
    roles = {n.name: n.role for n in net.nodes}
    measured = [n.name for n in noise_layers(net)]
    rows: dict[int, list[LayerNoise]] = {}
    for k in sorted({int(k) for k in ks}):
        if k < 1:
            raise SimulationError(f"k must be >= 1 (T = k*p), got {k}")
        per_k = []
        for name in measured:
            p = p_by_node[name]
            T = k * p
            if T not in counts_by_T or name not in counts_by_T[T]:
                raise SimulationError(f"occasional noise: no spike counts for layer {name} at T={T} (k={k}, p={p}); "
                                      f"counts kept at T in {sorted(counts_by_T)}")
            per_k += off_grid_rows({name: counts_by_T[T][name]}, levels, T, p_by_node, roles)
        rows[k] = per_k
    rep = NoiseReport(simulator, rows)
    return rep if inputs is None else add_timing_noise(rep, net, counts_by_T, inputs)


def add_timing_noise(report: NoiseReport, net: Any, counts_by_T: Mapping[int, Mapping[str, Any]],
                     inputs: Any) -> NoiseReport:
    """`report` with the occasional-noise fields of every row filled: each layer's counts at its T against the
    regular count r for the input it received (module docstring), from every node's counts at that T
    (`counts_by_T`: T -> node -> (B, *shape), sources included) and the raw images `inputs` (B, *input_shape)."""
    b = int(_np(inputs).shape[0])
    rows: dict[int, list[LayerNoise]] = {}
    for k, per_k in report.rows.items():
        rows[k] = []
        for row in per_k:
            counts = counts_by_T[row.T]
            c = _np(counts[row.node]).astype(np.int64)
            if c.shape[0] != b:
                raise SimulationError(f"occasional noise: layer {row.node} has counts of {c.shape[0]} samples at "
                                      f"T={row.T}, inputs has {b}")
            node = net.node(row.node)
            r = regular_counts(node, window_input(net, node, counts, inputs, row.T), row.T)
            n, spurious, missing, ab = _deviation_sums(c - r)
            rows[k].append(dataclasses.replace(row, noise=n, noise_spurious=spurious, noise_missing=missing,
                                               noise_abs=ab))
    return NoiseReport(report.simulator, rows)


def measure_float_noise(net: Any, x_uint8: Any, ks: Iterable[int] = (1, 2, 4), batch_size: int = 256,
                        device: Any = None, progress: bool = True) -> NoiseReport:
    """Occasional noise and off grid of the float SNN (off grid: against the FloatNet's ANN levels), streamed
    batch by batch (memory bounded by one batch's counts): ANN levels (float64) and one float-SNN run to
    max(k*p) per batch."""
    import torch
    from tqdm.auto import tqdm

    from na_deploy.simulate.ann import ann_forward
    from na_deploy.simulate.float_snn import simulate_float

    ks = sorted({int(k) for k in ks})
    ts = sorted({k * int(n.p) for k in ks for n in noise_layers(net)})
    x_all = x_uint8 if isinstance(x_uint8, torch.Tensor) else torch.as_tensor(np.asarray(x_uint8))
    total: Optional[NoiseReport] = None
    for i in tqdm(range(0, int(x_all.shape[0]), int(batch_size)), desc="occasional noise", unit="batch",
                  disable=not progress, leave=False):
        xb = x_all[i:i + int(batch_size)]
        _, levels = ann_forward(net, xb, device=device)
        r = simulate_float(net, xb, ts, batch_size=int(batch_size), device=device, count_timesteps=ts,
                           progress=False)
        part = noise_report(net, r.counts, levels, ks, simulator="float", inputs=xb)
        total = merge_reports(total, part)
    if total is None:
        raise SimulationError("occasional noise: no samples given")
    return total


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def format_noise_table(report: NoiseReport, max_rows: Optional[int] = None) -> str:
    """Plain-text table: one row per layer; per k: occasional noise (%), off grid (%) and firing rate."""
    ks = sorted(report.rows)
    if not ks:
        return f"occasional noise ({report.simulator} SNN): nothing measured"
    first = report.rows[ks[0]]
    name_w = max([len("layer")] + [len(r.node) for r in first])
    head = f"{'layer':<{name_w}}  {'p':>3} {'neurons':>8}" + "".join(
        f"  {'noise@k=' + str(k):>11} {'offgrid@k=' + str(k):>12} {'rate@k=' + str(k):>9}" for k in ks)
    lines = [f"occasional noise ({report.simulator} SNN), T = k*p: noise = count != regular IF count for the "
             f"layer's own input; offgrid = count != k x ANN level (not noise at k >= 2)", head, "-" * len(head)]
    by_k = {k: {r.node: r for r in report.rows[k]} for k in ks}
    shown = first if max_rows is None else first[:max_rows]
    for r0 in shown:
        cells = "".join(f"  {_pct(by_k[k][r0.node].noise_share):>11} {_pct(by_k[k][r0.node].off_grid_share):>12}"
                        f" {by_k[k][r0.node].firing_rate:>9.4f}" for k in ks)
        lines.append(f"{r0.node:<{name_w}}  {r0.p:>3} {r0.neurons:>8}{cells}")
    if max_rows is not None and len(first) > max_rows:
        lines.append(f"... {len(first) - max_rows} more layers")
    lines.append(f"{'all layers':<{name_w}}  {'':>3} {sum(r.neurons for r in first):>8}" + "".join(
        f"  {_pct(report.overall(k)):>11} {_pct(report.overall(k, 'off_grid')):>12} {'':>9}" for k in ks))
    return "\n".join(lines)


def format_noise_md(section: Mapping[str, Any]) -> list[str]:
    """report.md lines for one simulator's `NoiseReport.to_dict()` (as in report.json)."""
    def cell(r: Mapping[str, Any]) -> str:
        nz = "n/a" if r.get("noise_share") is None else f"{100 * r['noise_share']:.2f}%"
        return f"{r['node']} {nz} (off grid {100 * r['off_grid_share']:.1f}%)"
    out = [f"## Occasional noise, {section['simulator']} SNN (T = k*p)", "",
           f"Noise: {DEFINITIONS['noise']}. Off grid: {DEFINITIONS['off_grid']}.", ""]
    for k, rows in sorted(section["by_k"].items(), key=lambda kv: int(kv[0])):
        out.append(f"- k={k}: " + ", ".join(cell(r) for r in rows))
    return out + [""]


__all__ = ["LayerNoise", "NoiseReport", "DEFINITIONS", "noise_layers", "off_grid_rows", "window_input",
           "regular_counts", "add_timing_noise", "merge_noise", "merge_reports", "firing_rates", "noise_report",
           "measure_float_noise", "format_noise_table", "format_noise_md"]
