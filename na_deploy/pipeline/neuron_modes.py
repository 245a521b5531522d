"""The neuron-mode side of `na-deploy pipeline --neuron MODE`: the ANN column of a non-subtract mode, one mode's
summary in report.json, and the report.md table of the modes side by side (split from na_deploy.pipeline.run)."""
from __future__ import annotations

from pathlib import Path

from na_deploy.evaluate.accuracy import AccuracyResult


def ann_of_subtract(acc: AccuracyResult, qat_ckpt: Path, x, y, device) -> None:
    """Zero mode: thresholds alpha*p*s make `ann_forward` differ from the QAT model, so the ANN column is the
    subtract conversion's, and occasional noise (counts vs k x ANN level, a subtract identity) is left out."""
    from na_deploy.simulate.ann import ann_forward, argmax_lowest
    from na_deploy.convert import convert_checkpoint

    net, right, n = convert_checkpoint(qat_ckpt), 0, 0
    for xb, yb in (x() if callable(x) else [(x, y)]):  # arrays, or a factory of (x, y) batches (streamed data)
        logits, _ = ann_forward(net, xb, device=device, progress=False, keep_levels=False)
        right, n = right + int((argmax_lowest(logits).numpy() == yb).sum()), n + len(yb)
    acc.ann_accuracy = right / max(n, 1)
    acc.noise = {}


def mode_summary(arm) -> dict:
    """One mode's column of report["neuron_modes"]: accuracies vs T, agreement and the conversion parameters."""
    d = arm.accuracy.to_dict()
    keys = ("snn_accuracy", "ann_accuracy", "prediction_agreement_float_vs_integer")
    return {**{k: d[k] for k in keys}, "params": arm.fnet.meta.get("neuron_mode", {"mode": "subtract"})}


def format_neuron_modes(modes: dict) -> list[str]:
    """report.md lines: float / integer SNN accuracy vs T of both neuron modes on the same checkpoint."""
    Ts = sorted(modes["subtract"]["snn_accuracy"]["integer"], key=int)
    out = [f"## Neuron modes on the same checkpoint (chosen, exported and verified: {modes['chosen']})", "",
           "| mode, simulator | ANN | " + " | ".join(f"T={t}" for t in Ts) + " |",
           "|---|---:|" + "---:|" * len(Ts)]
    names = sorted(m for m in modes if m not in ("chosen", "verified"))  # subtract and the chosen mode
    for m in names:
        for kind in ("float", "integer"):
            acc = modes[m]["snn_accuracy"][kind]
            out.append(f"| {m}, {kind} SNN | {100 * modes[m]['ann_accuracy']:.2f} | "
                       + " | ".join(f"{100 * acc[t]:.2f}" for t in Ts) + " |")
    if "zero" not in modes:
        return out + [""]
    prm = {k: v for k, v in modes["zero"]["params"].items() if k != "mode"}
    return out + ["", f"Zero-mode parameters: {prm} (na_deploy.convert.neuron_modes).", ""]


__all__ = ["ann_of_subtract", "mode_summary", "format_neuron_modes"]
