"""`simulate NET1 NET2 ... --seeds S1,S2,...`: one net per seed (each trained and evaluated with its seed's data
split), combined into the statistics `pipeline --seeds` reports (issue 20). Pure functions over `simulate --json`
results.

* `combine_simulations(results, seeds)`: {"seeds", "per_net" (each net's result with its "seed" and the binomial
  standard error of every accuracy, "accuracy_se"), "stats"}; "stats" has `na_deploy.evaluate.stats`'
  `accuracy_stats` schema: {"ann": S, "integer": {T: S}, "float": {T: S}}, S = {"mean", "std", "ci95", "n"}.
* `format_stats_table(stats)`: the mean +- the half-width of the 95 % t interval per T, in %.
* `stats_arm(stats)`: the means with their intervals as `plot_accuracy_vs_t` draws them (error bars).
"""
from __future__ import annotations

import json

from na_deploy.evaluate.stats import accuracy_se, accuracy_stats, arm_accuracies


def combine_simulations(results: list[dict], seeds: list[int]) -> dict:
    """The multi-net result of per-net `simulate --json` dicts (net i evaluated with seeds[i]'s split)."""
    if len(results) != len(seeds):
        raise ValueError(f"combine simulations: {len(results)} results for {len(seeds)} seeds")
    per_net = []
    for res, seed in zip(results, seeds):
        row = json.loads(json.dumps(res))
        row["seed"] = int(seed)
        row["accuracy_se"] = accuracy_se(arm_accuracies(row), int(row["samples"]))
        per_net.append(row)
    return {"seeds": [int(s) for s in seeds], "per_net": per_net,
            "stats": accuracy_stats([arm_accuracies(r) for r in results])}


def _pm(s: dict) -> str:
    """'97.22 ± 2.12' (%, the half-width of the 95 % t interval); the mean alone when n = 1."""
    if s["ci95"] is None:
        return f"{100 * s['mean']:.2f}"
    return f"{100 * s['mean']:.2f} ± {100 * (s['ci95'][1] - s['ci95'][0]) / 2:.2f}"


def format_stats_table(stats: dict) -> str:
    """quantized ANN, then float / integer SNN per T: mean ± 95 % t half-width over the nets, in %."""
    n = stats["ann"]["n"]
    lines = [f"mean ± 95 % t interval over {n} nets (seeds), in %",
             f"quantized ANN accuracy: {_pm(stats['ann'])}",
             f"{'T':>4}  {'float SNN':>16}  {'integer SNN':>16}"]
    for T in sorted(stats["integer"], key=int):
        lines.append(f"{T:>4}  {_pm(stats['float'][T]):>16}  {_pm(stats['integer'][T]):>16}")
    return "\n".join(lines)


def stats_arm(stats: dict) -> dict:
    """plot_accuracy_vs_t's arm: the means, and their [lo, hi] under "ci95" (None where n = 1: no bar)."""
    arm = {"ann": stats["ann"]["mean"], "ci95": {"ann": stats["ann"]["ci95"]}}
    for kind in ("float", "integer"):
        arm[kind] = {T: s["mean"] for T, s in stats[kind].items()}
        arm["ci95"][kind] = {T: s["ci95"] for T, s in stats[kind].items()}
    return arm


__all__ = ["combine_simulations", "format_stats_table", "stats_arm"]
