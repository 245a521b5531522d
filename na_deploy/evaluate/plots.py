"""Plots people would rather look at than read: accuracy vs T, spikes / firing rate per layer, occasional noise.

matplotlib with the Agg backend; every figure is written atomically (temp file + rename).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from na_deploy.atomic import atomic_path  # noqa: E402


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_accuracy_vs_t(arms: dict[str, dict], path: str | Path, title: str = "Accuracy vs time steps") -> None:
    """arms: label -> {"ann": float, "float": {T: acc}, "integer": {T: acc}} (accuracies in [0, 1]). An arm with
    "ci95": {"ann": [lo, hi], "float": {T: [lo, hi]}, ...} (means over seeds) gets its intervals as error bars
    and a band around the ANN line; without it the figure is as before."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for i, (label, arm) in enumerate(arms.items()):
        c = colors[i % len(colors)]
        for kind, style in (("float", "--"), ("integer", "-")):
            pts = sorted((int(t), a) for t, a in arm.get(kind, {}).items())
            if pts:
                ax.plot([t for t, _ in pts], [100 * a for _, a in pts], style, marker="o", color=c,
                        label=f"{label}: {kind} SNN")
                _interval_bars(ax, pts, arm.get("ci95", {}).get(kind), c)
        if arm.get("ann") is not None:
            ax.axhline(100 * arm["ann"], color=c, linestyle=":", label=f"{label}: quantized ANN")
            band = arm.get("ci95", {}).get("ann")
            if band is not None:
                ax.axhspan(100 * band[0], 100 * band[1], color=c, alpha=0.12)
    ax.set_xscale("log", base=2)
    ts = sorted({int(t) for arm in arms.values() for kind in ("float", "integer") for t in arm.get(kind, {})})
    if ts:
        ax.set_xticks(ts, [str(t) for t in ts])
    ax.set_xlabel("time steps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def _interval_bars(ax, pts: list[tuple[int, float]], ci: Optional[dict], color: str) -> None:
    """Error bars from each mean to its [lo, hi] (ci: T -> [lo, hi] or None; T keys as in the arm)."""
    if not ci:
        return
    bars = [(t, a, ci.get(str(t), ci.get(t))) for t, a in pts]
    bars = [(t, a, b) for t, a, b in bars if b is not None]
    if bars:
        ax.errorbar([t for t, _, _ in bars], [100 * a for _, a, _ in bars], fmt="none", ecolor=color, capsize=3,
                    yerr=[[100 * (a - b[0]) for _, a, b in bars], [100 * (b[1] - a) for _, a, b in bars]])


def plot_layer_activity(rows: list[dict], path: str | Path, title: Optional[str] = None) -> None:
    """rows: [{"node", "spikes_per_inference", "firing_rate"}] in network order."""
    rows = [r for r in rows if "firing_rate" in r]
    names = [r["node"] for r in rows]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(6.4, 0.5 * len(names) + 2), 6), sharex=True)
    a1.bar(names, [r["spikes_per_inference"] for r in rows], color="tab:blue")
    a1.set_ylabel("spikes / inference")
    a2.bar(names, [r["firing_rate"] for r in rows], color="tab:orange")
    a2.set_ylabel("firing rate (spikes/neuron/step)")
    a2.tick_params(axis="x", rotation=60)
    a1.set_title(title or "Spiking activity per layer")
    for a in (a1, a2):
        a.grid(True, axis="y", alpha=0.3)
    _save(fig, path)


def plot_occasional_noise(section: dict, path: str | Path, title: Optional[str] = None) -> None:
    """section: one simulator's `NoiseReport.to_dict()` (report.json's occasional_noise.<simulator>). Top: occasional
    noise (count != the regular IF count for the layer's own input); bottom: off grid (count != k x ANN level),
    per layer, one bar per k (T = k*p). The top panel is left out when the noise was not measured."""
    by_k = sorted(section["by_k"].items(), key=lambda kv: int(kv[0]))
    nodes = [r["node"] for r in by_k[0][1]] if by_k else []
    panels = [(m, lab) for m, lab in (("noise_share", "occasional noise (%)\ncount != regular count"),
                                      ("off_grid_share", "off grid (%)\ncount != k x ANN level"))
              if by_k and all(r.get(m) is not None for _, rows in by_k for r in rows)]
    fig, axes = plt.subplots(max(len(panels), 1), 1, figsize=(max(7, 0.6 * len(nodes) + 3), 3.2 * max(len(panels), 1)),
                             sharex=True, squeeze=False)
    width = 0.8 / max(len(by_k), 1)
    for ax, (metric, ylabel) in zip(axes[:, 0], panels):
        for i, (k, rows) in enumerate(by_k):
            vals = {r["node"]: r[metric] for r in rows}
            ax.bar([j + i * width for j in range(len(nodes))], [100 * vals.get(n, 0.0) for n in nodes], width=width,
                   label=f"k={k}" + (f", T={rows[0]['T']}" if len({r["T"] for r in rows}) == 1 else ""))
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1, 0].set_xticks([j + 0.4 - width / 2 for j in range(len(nodes))], nodes, rotation=60)
    axes[0, 0].set_title(title or f"Occasional noise and off grid per layer ({section.get('simulator', '')} SNN, "
                                  "T = k*p)")
    _save(fig, path)
