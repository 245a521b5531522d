"""Occasional noise, measured (Li & Rajendran, arXiv 2312.05290: the SNN's deviations from the quantized ANN).

For a neuron layer m with p levels, ANN quantization level n (0..p, from `ann_eval.ann_forward`) and spike
count c over T = k*p steps (float SNN or an integer target's trace), the rate-coded SNN reproduces the ANN
exactly when c == k*n. Per layer (role "layer"; delay relays only copy their source and are left out):

    noise share(m, k) = #{neurons, samples : c != k*n} / #{neurons * samples}
    over / under      = the same count split into c > k*n and c < k*n
    mean |c - k*n| / k  (the mean absolute error in ANN levels)
    firing rate(m, T) = sum c / (#neurons * #samples * T)          (spikes per neuron per step)

Inputs are plain count / level arrays, so float-SNN counts and integer-SNN counts are measured the same
way. Results are small dataclasses of ints / floats / strings (JSON-serialisable via `as_json`); counts of
several batches combine with `merge_noise` (exact: they are sums).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from .errors import SimulationError


@dataclass
class LayerNoise:
    """Occasional noise of one layer at T = k*p (raw sums, so batches merge exactly)."""

    node: str
    p: int
    k: int
    T: int
    neurons: int          # per sample
    samples: int
    differ: int           # neuron-samples with count != k * level
    over: int             # count > k * level
    under: int            # count < k * level
    abs_error: int        # sum |count - k * level| (spikes)
    spikes: int           # sum of counts

    @property
    def total(self) -> int:
        return self.neurons * self.samples

    @property
    def share(self) -> float:
        return self.differ / self.total if self.total else float("nan")

    @property
    def mean_abs_error_levels(self) -> float:
        return self.abs_error / (self.k * self.total) if self.total else float("nan")

    @property
    def firing_rate(self) -> float:
        return self.spikes / (self.total * self.T) if self.total else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(total=self.total, share=self.share, mean_abs_error_levels=self.mean_abs_error_levels,
                 firing_rate=self.firing_rate)
        return d


def _layer_noise(node: str, c: np.ndarray, n: np.ndarray, p: int, T: int) -> LayerNoise:
    """Noise sums of one layer: counts c vs k * levels n, both (B, *shape)."""
    c = np.asarray(c).astype(np.int64)
    n = np.asarray(n).astype(np.int64)
    if c.shape != n.shape:
        raise SimulationError(f"node {node}: spike counts have shape {c.shape}, ANN levels {n.shape}")
    k = T // p
    d = c - k * n
    return LayerNoise(node=node, p=int(p), k=int(k), T=int(T), neurons=int(np.prod(c.shape[1:])),
                      samples=int(c.shape[0]), differ=int(np.count_nonzero(d)), over=int(np.count_nonzero(d > 0)),
                      under=int(np.count_nonzero(d < 0)), abs_error=int(np.abs(d).sum()), spikes=int(c.sum()))


def occasional_noise(counts: Mapping[str, Any], levels: Mapping[str, Any], T: int, p_by_node: Mapping[str, int],
                     roles: Optional[Mapping[str, str]] = None) -> list[LayerNoise]:
    """Per layer: share of neurons whose spike count over T steps differs from (T/p) x ANN level.

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


def merge_noise(a: Sequence[LayerNoise], b: Sequence[LayerNoise]) -> list[LayerNoise]:
    """Combine two measurements of the same layers over disjoint samples (sums add)."""
    if [(r.node, r.T) for r in a] != [(r.node, r.T) for r in b]:
        raise SimulationError("merge_noise: the two measurements cover different layers / T")
    return [dataclasses.replace(x, samples=x.samples + y.samples, differ=x.differ + y.differ, over=x.over + y.over,
                                under=x.under + y.under, abs_error=x.abs_error + y.abs_error,
                                spikes=x.spikes + y.spikes) for x, y in zip(a, b)]


def firing_rates(counts: Mapping[str, Any], T: int) -> dict[str, float]:
    """Spikes per neuron per step over T steps, per node."""
    out = {}
    for name, c in counts.items():
        c = _np(c)
        out[name] = float(c.sum()) / (c.size * T) if c.size else float("nan")
    return out


@dataclass
class NoiseReport:
    """Occasional noise at several k (T = k*p per layer) for one simulator ('float' | 'int' | ...)."""

    simulator: str
    rows: dict[int, list[LayerNoise]]    # k -> per-layer rows

    def to_dict(self) -> dict[str, Any]:
        return {"simulator": self.simulator,
                "by_k": {str(k): [r.to_dict() for r in rows] for k, rows in self.rows.items()}}

    def overall_share(self, k: int) -> float:
        """Share of all layer neuron-samples that differ at this k."""
        rows = self.rows[k]
        tot = sum(r.total for r in rows)
        return sum(r.differ for r in rows) / tot if tot else float("nan")


def noise_report(net: Any, counts_by_T: Mapping[int, Mapping[str, Any]], levels: Mapping[str, Any],
                 ks: Iterable[int], simulator: str = "float") -> NoiseReport:
    """Occasional noise of every layer of `net` (FloatNet or IntNet: p = node.p, role = node.role) at each
    k in `ks`, reading each layer's counts at T = k*p from `counts_by_T` (T -> node -> (B, *shape))."""
    p_by_node = {n.name: int(n.p) for n in net.nodes}
    roles = {n.name: n.role for n in net.nodes}
    rows: dict[int, list[LayerNoise]] = {}
    for k in sorted({int(k) for k in ks}):
        if k < 1:
            raise SimulationError(f"k must be >= 1 (T = k*p), got {k}")
        per_k = []
        for name, p in p_by_node.items():
            if roles[name] != "layer":
                continue
            T = k * p
            if T not in counts_by_T or name not in counts_by_T[T]:
                raise SimulationError(f"occasional noise: no spike counts for layer {name} at T={T} (k={k}, p={p}); "
                                      f"counts kept at T in {sorted(counts_by_T)}")
            per_k += occasional_noise({name: counts_by_T[T][name]}, levels, T, p_by_node, roles)
        rows[k] = per_k
    return NoiseReport(simulator, rows)


def measure_float_noise(net: Any, x_uint8: Any, ks: Iterable[int] = (1, 2, 4), batch_size: int = 256,
                        device: Any = None, progress: bool = True) -> NoiseReport:
    """Occasional noise of the float SNN against the FloatNet's ANN levels, streamed batch by batch (memory
    bounded by one batch's counts): ANN levels (float64) and one float-SNN run to max(k*p) per batch."""
    import torch
    from tqdm.auto import tqdm

    from .ann_eval import ann_forward
    from .float_sim import simulate_float

    ks = sorted({int(k) for k in ks})
    ts = sorted({k * int(n.p) for k in ks for n in net.nodes if n.role == "layer"})
    x_all = x_uint8 if isinstance(x_uint8, torch.Tensor) else torch.as_tensor(np.asarray(x_uint8))
    total: Optional[NoiseReport] = None
    for i in tqdm(range(0, int(x_all.shape[0]), int(batch_size)), desc="occasional noise", unit="batch",
                  disable=not progress, leave=False):
        xb = x_all[i:i + int(batch_size)]
        _, levels = ann_forward(net, xb, device=device)
        r = simulate_float(net, xb, ts, batch_size=int(batch_size), device=device, count_timesteps=ts,
                           progress=False)
        part = noise_report(net, r.counts, levels, ks, simulator="float")
        total = part if total is None else NoiseReport("float", {k: merge_noise(total.rows[k], part.rows[k])
                                                                 for k in ks})
    if total is None:
        raise SimulationError("occasional noise: no samples given")
    return total


def format_noise_table(report: NoiseReport, max_rows: Optional[int] = None) -> str:
    """Plain-text table: one row per layer; per k: noise share (%) and firing rate (spikes/neuron/step)."""
    ks = sorted(report.rows)
    if not ks:
        return f"occasional noise ({report.simulator} SNN): nothing measured"
    first = report.rows[ks[0]]
    name_w = max([len("layer")] + [len(r.node) for r in first])
    head = f"{'layer':<{name_w}}  {'p':>3} {'neurons':>8}" + "".join(
        f"  {'noise@k=' + str(k):>12} {'rate@k=' + str(k):>10}" for k in ks)
    lines = [f"occasional noise ({report.simulator} SNN): share of neurons with count != k x ANN level, "
             f"T = k*p", head, "-" * len(head)]
    by_k = {k: {r.node: r for r in report.rows[k]} for k in ks}
    shown = first if max_rows is None else first[:max_rows]
    for r0 in shown:
        cells = "".join(f"  {100 * by_k[k][r0.node].share:>11.2f}% {by_k[k][r0.node].firing_rate:>10.4f}"
                        for k in ks)
        lines.append(f"{r0.node:<{name_w}}  {r0.p:>3} {r0.neurons:>8}{cells}")
    if max_rows is not None and len(first) > max_rows:
        lines.append(f"... {len(first) - max_rows} more layers")
    lines.append(f"{'all layers':<{name_w}}  {'':>3} {sum(r.neurons for r in first):>8}" + "".join(
        f"  {100 * report.overall_share(k):>11.2f}% {'':>10}" for k in ks))
    return "\n".join(lines)


__all__ = ["LayerNoise", "NoiseReport", "occasional_noise", "merge_noise", "firing_rates", "noise_report",
           "measure_float_noise", "format_noise_table"]
