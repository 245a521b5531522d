"""`pipeline --seeds` (issue 20): per-seed run folders, statistics over seeds, resume, seeds-merge, a failing seed.

Small settings (1 + 1 epochs on digits, 60 test samples, no Lava) keep each test short; one multi-seed run is
shared by the module.
"""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from na_deploy.cli.main import cli

SMALL = ["--epochs-fp", "1", "--epochs-qat", "1", "--timesteps", "1,2", "--eval-samples", "60",
         "--verify-samples", "0"]
S_KEYS = {"mean", "std", "ci95", "n"}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def untimed(obj):
    """The report without its wall-clock timings (the only numbers that differ between equal runs)."""
    if isinstance(obj, dict):
        return {k: untimed(v) for k, v in obj.items() if k != "timings_s"}
    if isinstance(obj, list):
        return [untimed(v) for v in obj]
    return obj


def without_se(report: dict) -> dict:
    out = json.loads(json.dumps(report))
    out.pop("accuracy_se", None)
    if "no_noise_adaptor" in out:
        out["no_noise_adaptor"].pop("accuracy_se", None)
    return out


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds") / "run"
    res = run("pipeline", "--seeds", "0,1", "--compare-no-noise-adaptor", *SMALL, "--out", out)
    assert res.exit_code == 0, res.output
    return out, json.loads((out / "report.json").read_text())


def test_seeds_report_has_per_seed_stats_and_paired_effect(two_seeds):
    out, rep = two_seeds
    assert rep["seeds"] == [0, 1] and len(rep["per_seed"]) == 2 and (out / "COMPLETE").is_file()
    assert set(rep["stats"]) == {"ann", "integer", "float"} and set(rep["stats"]["ann"]) == S_KEYS
    assert set(rep["stats"]["integer"]) == {"1", "2"} and rep["stats"]["integer"]["1"]["n"] == 2
    lo, hi = rep["stats"]["integer"]["1"]["ci95"]
    assert lo <= rep["stats"]["integer"]["1"]["mean"] <= hi
    eff = rep["noise_adaptor_effect"]["integer"]["1"]
    assert set(eff) == {"mean_diff", "ci95", "n"} and eff["n"] == 2
    pairs = [(r["snn_accuracy"]["integer"]["1"], r["no_noise_adaptor"]["snn_accuracy"]["integer"]["1"])
             for r in rep["per_seed"]]
    assert eff["mean_diff"] == pytest.approx(sum(a - b for a, b in pairs) / 2)
    assert rep["environment"]["torch_threads"] >= 1 and rep["environment"]["torch"]
    for s, r in zip((0, 1), rep["per_seed"]):  # each seed's folder is a complete single-seed run
        assert (out / f"seed-{s}" / "COMPLETE").is_file() and r["config"]["seed"] == s
        assert without_se(r) == json.loads((out / f"seed-{s}" / "report.json").read_text())
        assert r["accuracy_se"]["integer"]["1"] >= 0 and "accuracy_se" in r["no_noise_adaptor"]
    assert "95 % Student-t interval" in (out / "report.md").read_text() and (out / "accuracy_vs_T.png").is_file()


def test_per_seed_reports_equal_single_seed_runs(two_seeds, tmp_path):
    _, rep = two_seeds
    res = run("pipeline", "--seed", "1", "--compare-no-noise-adaptor", *SMALL, "--out", tmp_path / "one")
    assert res.exit_code == 0, res.output
    single = json.loads((tmp_path / "one" / "report.json").read_text())
    assert untimed(without_se(rep["per_seed"][1])) == untimed(single)


def test_interrupted_run_resumes_and_gives_the_same_report(two_seeds, tmp_path):
    out, rep = two_seeds
    again = tmp_path / "run"
    shutil.copytree(out, again)
    (again / "seed-1" / "COMPLETE").unlink()  # as if the process died during seed 1
    (again / "COMPLETE").unlink()
    (again / ".seed-1.lock").write_text("999999\n")  # what a kill -9 during seed 1 leaves (refused before)
    res = run("pipeline", "--seeds", "0,1", "--compare-no-noise-adaptor", *SMALL, "--out", again)
    assert res.exit_code == 0, res.output
    assert "seed 0: reusing the finished run" in res.output and "seed 1: running" in res.output
    assert untimed(json.loads((again / "report.json").read_text())) == untimed(rep)


def test_a_finished_seed_with_another_config_is_refused(two_seeds, tmp_path):
    out, _ = two_seeds
    shutil.copytree(out, tmp_path / "run")
    args = [a if a != "1" or i != 3 else "2" for i, a in enumerate(SMALL)]  # --epochs-qat 2
    res = run("pipeline", "--seeds", "0,1", "--compare-no-noise-adaptor", *args, "--out", tmp_path / "run")
    assert res.exit_code == 2 and "epochs_qat: 1 recorded vs 2 asked" in res.output, res.output


def test_seeds_merge_equals_the_one_process_report(two_seeds, tmp_path):
    out, rep = two_seeds
    res = run("seeds-merge", out / "seed-0", out / "seed-1", "--out", tmp_path / "merged")
    assert res.exit_code == 0, res.output
    assert untimed(json.loads((tmp_path / "merged" / "report.json").read_text())) == untimed(rep)
    res = run("seeds-merge", out / "seed-0", out / "seed-0", "--out", tmp_path / "twice")
    assert res.exit_code == 2 and "seed 0 given twice" in res.output


def test_a_failing_seed_is_named(two_seeds, tmp_path, monkeypatch):
    import na_deploy.pipeline.run as run_module
    from na_deploy.errors import NaDeployError

    out, _ = two_seeds
    shutil.copytree(out, tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "seed-1")

    def broken(cfg, *a, **k):
        raise NaDeployError("--data: a problem found late")

    monkeypatch.setattr(run_module, "run_pipeline", broken)
    res = run("pipeline", "--seeds", "0,1", "--compare-no-noise-adaptor", *SMALL, "--out", tmp_path / "run")
    assert res.exit_code == 2 and "error: seed 1: --data: a problem found late" in res.output, res.output
    assert not (tmp_path / "run" / "COMPLETE").exists()


def test_bad_seeds_are_refused():
    for bad in ("0,0", "a", "-1", ","):
        res = run("pipeline", "--seeds", bad, *SMALL, "--out", "/nonexistent/never")
        assert res.exit_code == 2 and "--seeds" in res.output, (bad, res.output)


def test_compare_variants_over_seeds(tmp_path):
    out = tmp_path / "cmp"
    res = run("pipeline", "--seeds", "0,1", "--compare", "na,no-na", *SMALL, "--out", out)
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["kind"] == "compare" and set(rep["stats"]) == {"na", "no-na"}
    assert set(rep["stats"]["na"]["integer"]["1"]) == S_KEYS
    eff = rep["variant_effect"]
    assert eff["baseline"] == "na" and set(eff["variants"]["no-na"]["integer"]["2"]) == {"mean_diff", "ci95", "n"}
    assert "accuracy_se" in rep["per_seed"][0]["compare"]["variants"]["na"]
