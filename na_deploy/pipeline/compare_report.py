"""The tables and the plot of `pipeline --compare` (na_deploy.pipeline.compare): accuracy vs T, spikes per
inference vs T, steps per inference, and the Lava verify of each variant."""
from __future__ import annotations

from pathlib import Path

from na_deploy.evaluate.plots import _save, plt

MISSING = "—"


def _cell(d: dict, T, fmt) -> str:
    v = d.get(T, d.get(str(T)))
    return MISSING if v is None else fmt(v)


def _table(comp: dict, title: str, key: str, fmt, ann: bool = False) -> list[str]:
    Ts = comp["timesteps"]
    head = "| variant |" + (" ANN |" if ann else "") + "".join(f" T={T} |" for T in Ts)
    out = [f"### {title}", "", head, "|---|" + ("---:|" if ann else "") + "---:|" * len(Ts)]
    for name in comp["order"]:
        r = comp["variants"][name]
        out.append(f"| {name} |" + (f" {100 * r['ann_accuracy']:.2f} |" if ann else "")
                   + "".join(f" {_cell(r[key], T, fmt)} |" for T in Ts))
    return out + [""]


def _verify_lines(comp: dict) -> list[str]:
    out = ["### Lava verify (reference vs the target's backend, every layer and the readout)", "",
           "| variant | neuron | offset rho | bias shift | samples | T | result |",
           "|---|---|---:|:---:|---:|---:|---|"]
    for name in comp["order"]:
        r = comp["variants"][name]
        v, inf = r["verify"], r["inference"]
        if v["bit_exact"] is None:
            res = "not run" + (f": {v['reason']}" if v.get("reason") else "")
        else:
            res = "BIT-EXACT" if v["bit_exact"] else f"{v['mismatches']} mismatching samples"
            res += f" ({v.get('backend')})"
        out.append(f"| {name} | {inf['neuron']} | {inf['offset_steps']} | {'yes' if inf['bias_shift'] else 'no'} | "
                   f"{v['samples']} | {v['timesteps']} | {res} |")
    return out + [""]


def format_compare_md(comp: dict) -> str:
    """compare.md: the three tables and the verify table, with the legend of the variant names."""
    c = comp.get("command_config", {})
    out = [f"# Variants compared: {c.get('model')} on {c.get('data')}, p={c.get('p')}, seed {c.get('seed')}, "
           f"{c.get('eval_samples')} test images", "",
           "Same full-precision weights and seed for every QAT run; variants that differ only at inference share "
           "one QAT checkpoint. ANN = that checkpoint's quantized ANN. `—`: not run (offset calibration needs "
           "T >= rho).", ""]
    out += _table(comp, "Integer SNN accuracy (%) vs T (Loihi 2 fixed point, reference simulator)", "integer",
                  lambda a: f"{100 * a:.2f}", ann=True)
    out += _table(comp, "Float SNN accuracy (%) vs T", "float", lambda a: f"{100 * a:.2f}", ann=True)
    out += _table(comp, "Spikes per inference (integer SNN; every message, offset calibration's first stage and "
                        "negative spikes included)", "spikes_per_inference", lambda s: f"{s:.0f}")
    out += _table(comp, "Time steps per inference (one sample's slot: first stage, accumulation phases and "
                        "layer depth included)", "steps_per_inference", lambda s: f"{int(s)}")
    out += _verify_lines(comp)
    return "\n".join(out)


def plot_compare(comp: dict, path: str | Path, title: str = "") -> None:
    """compare_accuracy.png: integer-SNN accuracy vs T per variant (left), spikes per inference vs T (right)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(comp["order"]):
        r = comp["variants"][name]
        pts = sorted((int(T), a) for T, a in r["integer"].items())
        sp = sorted((int(T), s) for T, s in r["spikes_per_inference"].items())
        if pts:
            a1.plot([t for t, _ in pts], [100 * a for _, a in pts], "-o", color=cmap(i % 10), label=name)
            a2.plot([t for t, _ in sp], [s for _, s in sp], "-o", color=cmap(i % 10), label=name)
    for ax, yl in ((a1, "integer SNN accuracy (%)"), (a2, "spikes per inference")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(comp["timesteps"], [str(t) for t in comp["timesteps"]])
        ax.set_xlabel("time steps T")
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    a1.legend(fontsize=8)
    fig.suptitle(title or "Variants compared")
    _save(fig, path)


__all__ = ["format_compare_md", "plot_compare"]
