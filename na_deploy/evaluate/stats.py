"""What is effect and what is noise: statistics over seeds and over test images (issue 20). Pure functions.

* `summary(values)`: mean, sample standard deviation (ddof 1) and the two-sided 95 % Student-t interval of the
  mean over n runs (seeds): mean +- t(0.975, n - 1) * std / sqrt(n). With one value there is no spread to
  measure: std and ci95 are None (never a zero-width interval that would claim certainty).
* `paired_difference(a, b)`: the same interval over the per-seed differences a_i - b_i (both arms of one seed
  start from that seed's full-precision weights, so the comparison is paired).
* `binomial_se(p, n)`: the standard error of one accuracy p measured on n test images, sqrt(p (1 - p) / n)
  (one image of 360 moves an accuracy by 0.28 pp).
* `accuracy_stats(reports)`: `summary` of every accuracy of several single-run reports ({"ann", "integer": {T},
  "float": {T}}), and `accuracy_effect(a, b)` the paired difference per T.
Accuracies are fractions in [0, 1]; T keys are strings, as in report.json.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

CONFIDENCE = 0.95


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t quantile t((1 + confidence) / 2, df), e.g. 12.706 for df = 1 at 95 %."""
    from scipy.stats import t

    if df < 1:
        raise ValueError(f"t quantile: degrees of freedom must be >= 1, got {df}")
    return float(t.ppf((1.0 + confidence) / 2.0, df))


def _interval(values: Sequence[float]) -> tuple[float, Optional[float], Optional[list[float]]]:
    """(mean, sample std or None, [lo, hi] or None) of the values (the t interval of their mean)."""
    n = len(values)
    if n == 0:
        raise ValueError("statistics of no values")
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None, None
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return mean, std, [mean - half, mean + half]


def summary(values: Sequence[float]) -> dict:
    """{"mean", "std", "ci95": [lo, hi], "n"} of values over seeds (std, ci95: None for one value)."""
    mean, std, ci = _interval([float(v) for v in values])
    return {"mean": mean, "std": std, "ci95": ci, "n": len(values)}


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """{"mean_diff", "ci95", "n"} of a_i - b_i (the same seeds, in the same order)."""
    if len(a) != len(b):
        raise ValueError(f"paired difference: {len(a)} values against {len(b)}")
    mean, _, ci = _interval([float(x) - float(y) for x, y in zip(a, b)])
    return {"mean_diff": mean, "ci95": ci, "n": len(a)}


def binomial_se(p: float, n: int) -> float:
    """Standard error sqrt(p (1 - p) / n) of an accuracy p measured on n test samples."""
    if n < 1:
        raise ValueError(f"binomial standard error: needs n >= 1 test samples, got {n}")
    return math.sqrt(max(p * (1.0 - p), 0.0) / n)


def arm_accuracies(report: dict) -> dict:
    """{"ann": acc, "integer": {T: acc}, "float": {T: acc}} of one arm of a single-run report (pipeline report,
    its no_noise_adaptor section, `simulate --json`, or a --compare variant row)."""
    snn = report.get("snn_accuracy", report)
    return {"ann": report["ann_accuracy"], "integer": dict(snn["integer"]), "float": dict(snn["float"])}


def _common_ts(arms: list[dict], kind: str) -> list[str]:
    """The T (string keys) every arm measured, in increasing order."""
    ts = set(arms[0][kind])
    for a in arms[1:]:
        ts &= set(a[kind])
    return sorted(ts, key=int)


def accuracy_stats(arms: list[dict]) -> dict:
    """{"ann": S, "integer": {T: S}, "float": {T: S}} over arms (`arm_accuracies` of each seed), S = `summary`."""
    out: dict = {"ann": summary([a["ann"] for a in arms])}
    for kind in ("integer", "float"):
        out[kind] = {T: summary([a[kind][T] for a in arms]) for T in _common_ts(arms, kind)}
    return out


def accuracy_effect(arms: list[dict], baseline: list[dict]) -> dict:
    """{"ann": D, "integer": {T: D}, "float": {T: D}}: the paired difference arm - baseline, seed by seed."""
    out: dict = {"ann": paired_difference([a["ann"] for a in arms], [b["ann"] for b in baseline])}
    for kind in ("integer", "float"):
        ts = _common_ts(arms + baseline, kind)
        out[kind] = {T: paired_difference([a[kind][T] for a in arms], [b[kind][T] for b in baseline]) for T in ts}
    return out


def accuracy_se(arm: dict, n: int) -> dict:
    """The binomial standard error of every accuracy of one arm on n test samples, in `arm_accuracies`' shape."""
    return {"ann": binomial_se(arm["ann"], n),
            **{kind: {T: binomial_se(a, n) for T, a in arm[kind].items()} for kind in ("integer", "float")}}


__all__ = ["CONFIDENCE", "t_quantile", "summary", "paired_difference", "binomial_se", "arm_accuracies",
           "accuracy_stats", "accuracy_effect", "accuracy_se"]
