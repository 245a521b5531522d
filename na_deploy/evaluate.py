"""Evaluation of a converted network against its ANN: accuracy vs T for the quantized ANN, the float SNN and
the integer SNN (the target's reference simulator), float/integer prediction agreement, occasional noise and
firing rates. Shared by `na-deploy simulate` and `na-deploy pipeline`.
"""
from __future__ import annotations

import numpy as np


def noise_ks(p_values: list[int], Ts: list[int]) -> list[int]:
    """k with k*p among the simulated T for every layer's p (occasional noise needs counts at T = k*p)."""
    cands = sorted({T // p for T in Ts for p in p_values if T % p == 0})
    return [k for k in cands if all(k * p in Ts for p in p_values)]


def evaluate_nets(fnet, inet, target, x: np.ndarray, y: np.ndarray, Ts: list[int], device=None,
                  progress: bool = True, keep_traces: bool = False) -> dict:
    """ANN, float SNN and integer SNN accuracy vs T on (x, y); agreement; occasional noise (NoiseReport per
    simulator); firing rates. With `keep_traces`, res["traces"] holds the integer Trace at every T."""
    from na_deploy.ann_eval import ann_forward, argmax_lowest
    from na_deploy.float_sim import simulate_float
    from na_deploy.noise_report import firing_rates, noise_report

    logits, levels = ann_forward(fnet, x, device=device, progress=progress)
    ann_acc = float((argmax_lowest(logits).numpy() == y).mean())
    layers = [n for n in fnet.nodes if n.role == "layer"]
    ks = noise_ks(sorted({int(n.levels) for n in layers}), Ts) if layers else []
    keep = sorted({k * int(n.levels) for k in ks for n in layers})
    fres = simulate_float(fnet, x, Ts, labels=y, device=device, count_timesteps=keep, progress=progress)
    traces = target.reference_simulate_multi(inet, x, Ts, device=device, progress=progress)
    res = {
        "ann_accuracy": ann_acc,
        "snn_accuracy": {"float": {str(T): float(fres.accuracy[T]) for T in Ts},
                         "integer": {str(T): float((traces[T].predictions == y).mean()) for T in Ts}},
        "prediction_agreement_float_vs_integer": {str(T): float((traces[T].predictions == fres.predictions[T]).mean())
                                                  for T in Ts},
        "firing_rates": {"integer": {str(T): firing_rates(traces[T].spike_counts, T) for T in Ts}},
        "occasional_noise": {},
    }
    if keep_traces:
        res["traces"] = traces
    if ks:
        res["occasional_noise"]["integer"] = noise_report(
            inet, {T: traces[T].spike_counts for T in keep}, levels, ks, simulator="integer")
        res["occasional_noise"]["float"] = noise_report(fnet, fres.counts, levels, ks, simulator="float")
    return res


def format_accuracy_table(res: dict, Ts: list[int]) -> str:
    lines = [f"quantized ANN accuracy: {100 * res['ann_accuracy']:.2f}%",
             f"{'T':>4}  {'float SNN':>10}  {'integer SNN':>12}  {'agree float/int':>16}"]
    for T in Ts:
        k = str(T)
        lines.append(f"{T:>4}  {100 * res['snn_accuracy']['float'][k]:>9.2f}%  "
                     f"{100 * res['snn_accuracy']['integer'][k]:>11.2f}%  "
                     f"{100 * res['prediction_agreement_float_vs_integer'][k]:>15.2f}%")
    return "\n".join(lines)
