"""na_deploy.evaluate.stats: the t interval, the paired difference and the binomial SE against known values."""
from __future__ import annotations

import math

import pytest

from na_deploy.evaluate.stats import (accuracy_effect, accuracy_se, accuracy_stats, binomial_se, paired_difference,
                                      summary, t_quantile)


def test_t_quantile_matches_tables():
    # two-sided 95 %: df 1 -> 12.706, df 2 -> 4.303, df 4 -> 2.776, df 30 -> 2.042
    for df, want in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (30, 2.0423)):
        assert t_quantile(df) == pytest.approx(want, abs=1e-4)
    with pytest.raises(ValueError):
        t_quantile(0)


def test_summary_is_the_student_t_interval_of_the_mean():
    s = summary([0.90, 0.92, 0.94])  # mean 0.92, std 0.02, half width 4.3027 * 0.02 / sqrt(3)
    half = 4.302653 * 0.02 / math.sqrt(3)
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.92) and s["std"] == pytest.approx(0.02)
    assert s["ci95"] == pytest.approx([0.92 - half, 0.92 + half], abs=1e-6)


def test_one_value_has_no_interval():
    assert summary([0.5]) == {"mean": 0.5, "std": None, "ci95": None, "n": 1}
    with pytest.raises(ValueError):
        summary([])


def test_paired_difference_uses_the_differences_not_the_arms():
    # arms spread widely, but NA is 2 pp above no-NA on every seed: a tight interval at +0.02
    d = paired_difference([0.50, 0.80, 0.95], [0.48, 0.78, 0.93])
    assert d["n"] == 3 and d["mean_diff"] == pytest.approx(0.02) and d["ci95"] == pytest.approx([0.02, 0.02])
    d = paired_difference([0.9, 0.8], [0.8, 0.8])  # differences 0.1, 0: mean 0.05, std 0.0707, t(1) = 12.706
    half = 12.7062 * (0.1 / math.sqrt(2)) / math.sqrt(2)
    assert d["ci95"] == pytest.approx([0.05 - half, 0.05 + half], abs=1e-4)
    with pytest.raises(ValueError):
        paired_difference([0.1], [0.1, 0.2])


def test_binomial_se():
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    assert binomial_se(0.9, 360) == pytest.approx(math.sqrt(0.09 / 360))
    assert binomial_se(1.0, 10) == 0.0
    with pytest.raises(ValueError):
        binomial_se(0.5, 0)


def test_accuracy_stats_and_effect_per_T():
    a = [{"ann": 0.9, "integer": {"1": 0.5, "2": 0.8}, "float": {"1": 0.6}},
         {"ann": 0.8, "integer": {"1": 0.7, "2": 0.8}, "float": {"1": 0.6}}]
    b = [{"ann": 0.9, "integer": {"1": 0.4, "2": 0.8}, "float": {"1": 0.5}},
         {"ann": 0.8, "integer": {"1": 0.6, "2": 0.8}, "float": {"1": 0.5}}]
    s = accuracy_stats(a)
    assert s["ann"]["mean"] == pytest.approx(0.85) and s["integer"]["1"]["mean"] == pytest.approx(0.6)
    assert list(s["integer"]) == ["1", "2"] and s["float"]["1"]["std"] == pytest.approx(0.0)
    e = accuracy_effect(a, b)
    assert e["integer"]["1"]["mean_diff"] == pytest.approx(0.1) and e["ann"]["mean_diff"] == 0.0
    assert e["integer"]["1"]["ci95"] == pytest.approx([0.1, 0.1])
    assert accuracy_se(a[0], 100)["integer"]["1"] == pytest.approx(0.05)
