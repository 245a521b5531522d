"""The multi-seed run's report.md and accuracy_vs_T.png: means over seeds with their 95 % t intervals, the paired
effects, and every seed's numbers (`na_deploy.pipeline.seeds` builds the report dict)."""
from __future__ import annotations

from pathlib import Path


def _cell(s: dict) -> str:
    """'97.22 [95.10, 99.34]' (in %) of a summary; the mean alone for one seed."""
    if s["ci95"] is None:
        return f"{100 * s['mean']:.2f}"
    return f"{100 * s['mean']:.2f} [{100 * s['ci95'][0]:.2f}, {100 * s['ci95'][1]:.2f}]"


def _diff_cell(d: dict) -> str:
    """'+3.06 [-1.20, +7.32]' (in pp) of a paired difference."""
    if d["ci95"] is None:
        return f"{100 * d['mean_diff']:+.2f}"
    return f"{100 * d['mean_diff']:+.2f} [{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}]"


def _stats_rows(label: str, stats: dict, Ts: list[str], kinds=("integer", "float")) -> list[str]:
    return [f"| {label}, {kind} SNN | {_cell(stats['ann'])} | "
            + " | ".join(_cell(stats[kind][T]) if T in stats[kind] else "-" for T in Ts) + " |" for kind in kinds]


def _effect_rows(label: str, effect: dict, Ts: list[str], kinds=("integer", "float")) -> list[str]:
    return [f"| {label}, {kind} SNN | {_diff_cell(effect['ann'])} | "
            + " | ".join(_diff_cell(effect[kind][T]) if T in effect[kind] else "-" for T in Ts) + " |"
            for kind in kinds]


def _timesteps(report: dict) -> list[str]:
    stats = report["stats"] if report["kind"] == "pipeline" else next(iter(report["stats"].values()))
    return sorted(stats["integer"], key=int)


def seeds_tables(report: dict) -> list[str]:
    """The means table and the effect table (markdown lines); printed by `pipeline --seeds` too."""
    Ts = _timesteps(report)
    head = ["| setting | ANN | " + " | ".join(f"T={T}" for T in Ts) + " |", "|---|" + "---:|" * (len(Ts) + 1)]
    lines = head[:]
    if report["kind"] == "pipeline":
        lines += _stats_rows("w/ NA", report["stats"], Ts)
        if "stats_no_noise_adaptor" in report:
            lines += _stats_rows("w/o NA", report["stats_no_noise_adaptor"], Ts)
            lines += ["", "Paired noise-adaptor effect, NA - no-NA, in pp (mean [95 % t interval] over seeds):", ""]
            lines += head + _effect_rows("NA - no-NA", report["noise_adaptor_effect"], Ts)
        return lines
    for name, stats in report["stats"].items():
        lines += _stats_rows(name, stats, Ts, kinds=("integer",))
    base = report["variant_effect"]["baseline"]
    if report["variant_effect"]["variants"]:
        lines += ["", f"Paired effect against {base}, in pp (mean [95 % t interval] over seeds):", ""]
        for name, eff in report["variant_effect"]["variants"].items():
            lines += _effect_rows(f"{name} - {base}", eff, Ts, kinds=("integer",))
    return lines


def _se_line(report: dict) -> str:
    """The binomial standard error of one accuracy at 50 % and at the mean integer accuracy of the largest T."""
    from na_deploy.evaluate.stats import binomial_se

    n = min(int(v) for v in report["data"]["evaluated"])
    return (f"One seed's accuracy on {n} test images has a binomial standard error of at most "
            f"{100 * binomial_se(0.5, n):.2f} pp (one image = {100 / n:.2f} pp); per-seed values: "
            "per_seed[i].accuracy_se in report.json.")


def format_seeds_md(report: dict) -> str:
    """report.md of a multi-seed run."""
    c = report["config"]
    seeds = ", ".join(str(s) for s in report["seeds"])
    out = [f"# na-deploy multi-seed run: {c.get('model')} on {report['data'].get('name', c.get('data'))}, "
           f"p={c.get('p')}, seeds {seeds}", "",
           f"Accuracies in %: mean over {len(report['seeds'])} seeds, [95 % Student-t interval of the mean]. Each "
           "seed trains every arm from its own full-precision weights; seed folders: seed-<s>/.", "",
           _se_line(report), ""]
    out += seeds_tables(report)
    out += ["", "## Verify per seed", ""]
    for row in report["verify"]:
        flags = {k: v for k, v in row.items() if k not in ("seed", "samples", "timesteps", "mismatches")}
        out.append(f"- seed {row['seed']}: " + ", ".join(
            f"{k}: {'bit-exact' if v else 'not run' if v is None else 'MISMATCH'}" for k, v in flags.items()))
    env = report.get("environment") or {}
    out += ["", "## Environment", "", ", ".join(f"{k} {v}" for k, v in sorted(env.items())) or "not recorded", ""]
    out += ["## Timings (s)", "", "| run | seconds |", "|---|---:|"]
    out += [f"| {k} | {v:.2f} |" for k, v in report.get("timings_s", {}).items()]
    return "\n".join(out) + "\n"


def _arm(stats: dict, kinds=("integer", "float")) -> dict:
    """plot_accuracy_vs_t's arm of a stats dict: the means, and their intervals under "ci95"."""
    arm = {"ann": stats["ann"]["mean"], "ci95": {"ann": stats["ann"]["ci95"]}}
    for kind in kinds:
        arm[kind] = {T: s["mean"] for T, s in stats[kind].items()}
        arm["ci95"][kind] = {T: s["ci95"] for T, s in stats[kind].items()}
    return arm


def plot_seeds(report: dict, path: str | Path) -> None:
    """accuracy_vs_T.png: the mean of every arm (or variant: integer SNN) with its 95 % interval as bars."""
    from na_deploy.evaluate.plots import plot_accuracy_vs_t

    n = len(report["seeds"])
    if report["kind"] == "pipeline":
        arms = {"with noise adaptor": _arm(report["stats"])}
        if "stats_no_noise_adaptor" in report:
            arms["without noise adaptor"] = _arm(report["stats_no_noise_adaptor"])
    else:
        arms = {name: _arm(s, kinds=("integer",)) for name, s in report["stats"].items()}
    c = report["config"]
    plot_accuracy_vs_t(arms, path, title=f"{c.get('model')}, p={c.get('p')}: mean of {n} seeds, 95 % t interval")
