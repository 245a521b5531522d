"""Accuracy of a converted network against its ANN, vs time steps T: the quantized ANN, the float SNN and the
integer SNN (the target's bit-exact reference simulator), float/integer prediction agreement, occasional noise
and firing rates. Shared by `na-deploy simulate` and `na-deploy pipeline`.

`accuracy_vs_timesteps(...)` returns an `AccuracyResult` (typed, keyed by int T); `AccuracyResult.to_dict()`
is the JSON both commands write (T as string keys).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .ir import FloatNet, IntNet
from .noise_report import NoiseReport
from .protocols import Target, Trace


@dataclass
class AccuracyResult:
    """Every number of one accuracy-vs-T measurement on one set of samples (accuracies in [0, 1]).

    float_accuracy / integer_accuracy / agreement / firing_rates are keyed by T; `noise` maps the simulator
    ("integer", "float") to its occasional-noise report (empty when no T is k*p for every layer's p);
    `traces` holds the integer reference Trace at every T.
    """

    timesteps: list[int]
    ann_accuracy: float
    float_accuracy: dict[int, float]
    integer_accuracy: dict[int, float]
    agreement: dict[int, float]  # share of samples whose float and integer SNN classes agree
    firing_rates: dict[int, dict[str, float]]  # integer SNN: T -> node -> spikes / neuron / step
    noise: dict[str, NoiseReport] = field(default_factory=dict)
    traces: dict[int, Trace] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (T as string keys), as written by `simulate --json` and in the pipeline's report."""
        return {
            "ann_accuracy": self.ann_accuracy,
            "snn_accuracy": {"float": {str(T): self.float_accuracy[T] for T in self.timesteps},
                             "integer": {str(T): self.integer_accuracy[T] for T in self.timesteps}},
            "prediction_agreement_float_vs_integer": {str(T): self.agreement[T] for T in self.timesteps},
            "firing_rates": {"integer": {str(T): self.firing_rates[T] for T in self.timesteps}},
            "occasional_noise": {sim: rep.to_dict() for sim, rep in self.noise.items()},
        }


def noise_ks(p_values: list[int], timesteps: list[int]) -> list[int]:
    """k with k*p among the simulated T for every layer's p (occasional noise needs counts at T = k*p)."""
    cands = sorted({T // p for T in timesteps for p in p_values if T % p == 0})
    return [k for k in cands if all(k * p in timesteps for p in p_values)]


def accuracy_vs_timesteps(fnet: FloatNet, inet: IntNet, target: Target, x: np.ndarray, y: np.ndarray,
                          timesteps: list[int], device: Optional[str] = None,
                          progress: bool = True) -> AccuracyResult:
    """ANN, float SNN and integer SNN accuracy at every T in `timesteps` on (x, y), from one run per simulator;
    agreement, firing rates and occasional noise (NoiseReport per simulator) from the same runs."""
    from .ann_eval import ann_forward, argmax_lowest
    from .float_sim import simulate_float
    from .noise_report import firing_rates, noise_report

    logits, activation_levels = ann_forward(fnet, x, device=device, progress=progress)
    layers = [n for n in fnet.nodes if n.role == "layer"]
    ks = noise_ks(sorted({int(n.p) for n in layers}), timesteps) if layers else []
    noise_timesteps = sorted({k * int(n.p) for k in ks for n in layers})
    fres = simulate_float(fnet, x, timesteps, labels=y, device=device, count_timesteps=noise_timesteps,
                          progress=progress)
    traces = target.reference_simulate_multi(inet, x, timesteps, device=device, progress=progress)
    res = AccuracyResult(
        timesteps=list(timesteps),
        ann_accuracy=float((argmax_lowest(logits).numpy() == y).mean()),
        float_accuracy={T: float(fres.accuracy[T]) for T in timesteps},
        integer_accuracy={T: float((traces[T].predictions == y).mean()) for T in timesteps},
        agreement={T: float((traces[T].predictions == fres.predictions[T]).mean()) for T in timesteps},
        firing_rates={T: firing_rates(traces[T].spike_counts, T) for T in timesteps},
        traces=traces)
    if ks:
        res.noise["integer"] = noise_report(inet, {T: traces[T].spike_counts for T in noise_timesteps},
                                            activation_levels, ks, simulator="integer", inputs=x)
        res.noise["float"] = noise_report(fnet, fres.counts, activation_levels, ks, simulator="float", inputs=x)
    return res


def format_accuracy_table(res: AccuracyResult) -> str:
    """The table `simulate` prints: ANN accuracy, then float / integer SNN accuracy and agreement per T."""
    lines = [f"quantized ANN accuracy: {100 * res.ann_accuracy:.2f}%",
             f"{'T':>4}  {'float SNN':>10}  {'integer SNN':>12}  {'agree float/int':>16}"]
    for T in res.timesteps:
        lines.append(f"{T:>4}  {100 * res.float_accuracy[T]:>9.2f}%  "
                     f"{100 * res.integer_accuracy[T]:>11.2f}%  "
                     f"{100 * res.agreement[T]:>15.2f}%")
    return "\n".join(lines)


__all__ = ["AccuracyResult", "accuracy_vs_timesteps", "format_accuracy_table", "noise_ks"]
