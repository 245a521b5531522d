"""`pipeline --seeds S1,S2,...`: the same run once per seed, and the statistics that separate effect from noise
(issue 20).

Layout: OUT/seed-<s>/ is a complete single-seed run (exactly what `pipeline --seed s` writes, COMPLETE included);
OUT/report.json holds `seeds`, `per_seed` (each seed's report.json, plus the binomial standard error of every
accuracy, `accuracy_se`), `stats` (mean, std, 95 % t interval over seeds: `na_deploy.evaluate.stats`) and the
paired effects (`noise_adaptor_effect` NA - no-NA with --compare-no-noise-adaptor; `variant_effect` each
variant - the first with --compare); OUT/COMPLETE is written last.

Resume: the same command re-run reuses every seed folder that has COMPLETE and whose recorded config is the one
asked for (a different config is refused, naming the field); an unfinished seed restarts from scratch. Seeds are
independent jobs: `seeds-merge` (`merge_seed_runs`) combines separately-run seed folders into the same report.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from na_deploy.atomic import atomic_write_text
from na_deploy.errors import NaDeployError
from na_deploy.evaluate.stats import accuracy_effect, accuracy_se, accuracy_stats, arm_accuracies
from na_deploy.pipeline.seeds_report import format_seeds_md, plot_seeds
from na_deploy.runlock import lock_path_for

TOP_FILES = ("report.json", "report.md", "accuracy_vs_T.png", "COMPLETE")


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2]; one-line NaDeployError for anything but distinct non-negative integers."""
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise NaDeployError(f"--seeds {text!r}: allowed: comma-separated non-negative integers, e.g. 0,1,2") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise NaDeployError(f"--seeds {text!r}: allowed: distinct non-negative integers, e.g. 0,1,2")
    return seeds


def seed_dir(out: str | Path, seed: int) -> Path:
    """OUT/seed-<seed>: that seed's complete single-seed run."""
    return Path(out) / f"seed-{seed}"


def _json_round(obj) -> dict:
    """obj as report.json stores it (tuples as lists, numbers as JSON numbers)."""
    from na_deploy.pipeline.run import _json

    return json.loads(json.dumps(obj, sort_keys=True, default=_json))


def expected_config(cfg, target, variants=None) -> dict:
    """What a finished seed folder must record: a pipeline run's report["config"] (as `run_pipeline` writes it),
    or a --compare run's command_config fields that do not depend on the data plus the variant order."""
    from na_deploy.pipeline.run import config_record

    if variants is None:
        return _json_round(config_record(cfg, target))
    cc = {"model": cfg.model, "p": cfg.p, "seed": cfg.seed, "epochs_fp": cfg.epochs_fp, "epochs_qat": cfg.epochs_qat}
    return {**cc, "order": [v.name for v in variants]}


def recorded_config(report: dict) -> dict:
    """The config a finished run recorded, in `expected_config`'s shape."""
    if "compare" not in report:
        return report["config"]
    cc = report["compare"]["command_config"]
    fields = ("model", "p", "seed", "epochs_fp", "epochs_qat")
    return {**{k: cc[k] for k in fields}, "order": report["compare"]["order"]}


def _config_difference(got: dict, want: dict) -> Optional[str]:
    """The first field (sorted) whose values differ, said as 'field: recorded vs asked', or None."""
    for k in sorted(set(got) | set(want)):
        if got.get(k) != want.get(k):
            return f"{k}: {got.get(k)!r} recorded vs {want.get(k)!r} asked"
    return None


def load_finished(run_dir: Path) -> Optional[dict]:
    """A run folder's report.json when it is finished (COMPLETE exists), else None."""
    if not (run_dir / "COMPLETE").is_file() or not (run_dir / "report.json").is_file():
        return None
    return json.loads((run_dir / "report.json").read_text())


def _reusable(run_dir: Path, want: dict) -> Optional[dict]:
    """The finished seed run in run_dir when its config is `want`; None when unfinished; refused when different."""
    report = load_finished(run_dir)
    if report is None:
        return None
    diff = _config_difference(recorded_config(report), want)
    if diff is not None:
        raise NaDeployError(f"{run_dir}: a finished seed run with another config ({diff}); pass --force to start "
                            "over or choose another --out")
    return report


def _is_seed_lock(out: Path, name: str) -> bool:
    """A seed run's lock file (`runlock.lock_path_for` of a `seed_dir`), left behind when its process was killed
    (the kernel dropped the lock itself; the file is harmless)."""
    seed = name[len(".seed-"):-len(".lock")]
    return seed.isdigit() and lock_path_for(seed_dir(out, int(seed))).name == name


def prepare_seeds_out(out: str | Path, force: bool) -> Path:
    """OUT for a multi-seed run: new, or holding only seed folders and this command's own files (resume), or
    emptied with `force`. The top-level COMPLETE is removed: the run is unfinished until every seed is."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NaDeployError(f"--out {out}: exists and is not a directory")
    if out.exists() and force:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    other = sorted(p.name for p in out.iterdir() if not p.name.startswith("seed-") and p.name not in TOP_FILES
                   and not _is_seed_lock(out, p.name))
    if other:
        raise NaDeployError(f"--out {out}: holds {other[0]!r}, not a multi-seed run folder; choose another --out or "
                            "pass --force")
    (out / "COMPLETE").unlink(missing_ok=True)
    return out


def _run_seed(cfg, seed: int, target, out: Path, log: Callable, variants, backend) -> dict:
    """One seed's run folder (reused when finished with this config, else run from scratch) -> its report."""
    cfg_s = replace(cfg, seed=seed)
    run_dir = seed_dir(out, seed)
    report = _reusable(run_dir, expected_config(cfg_s, target, variants))
    if report is not None:
        log(f"[seeds] seed {seed}: reusing the finished run {run_dir}")
        return report
    log(f"[seeds] seed {seed}: running into {run_dir}")
    if run_dir.is_dir() and not run_dir.is_symlink():  # unfinished (no COMPLETE): restarts from scratch
        shutil.rmtree(run_dir)
    try:
        if variants is None:
            from na_deploy.pipeline.run import run_pipeline

            run_pipeline(cfg_s, target, run_dir, force=True, log=log, backend=backend)
        else:
            from na_deploy.pipeline.compare import run_compare

            run_compare(cfg_s, variants, target, run_dir, force=True, log=log)
    except Exception as e:  # one line naming the seed; the traceback's cause is kept (`raise from`)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise NaDeployError(f"seed {seed}: {msg}") from e
    return load_finished(run_dir)


def run_seeds(cfg, seeds: list[int], target, out: str | Path, force: bool = False, log: Callable = print,
              variants=None, backend=None) -> dict:
    """Every seed's run (`run_pipeline`, or `run_compare` with variants) in OUT/seed-<s>/, then OUT/report.json,
    report.md, accuracy_vs_T.png and COMPLETE; return the combined report."""
    cfg.validate()
    from na_deploy.pipeline.fp_start import check_start
    from na_deploy.pipeline.run import load_run_data

    if cfg.from_nir is None:
        check_start(cfg, load_run_data(cfg, log))  # model, builder, weights, ops: refused before OUT is made
    out = prepare_seeds_out(out, force)
    t0 = time.perf_counter()
    reports = [_run_seed(cfg, s, target, out, log, variants, backend) for s in seeds]
    report = combine_reports(reports)
    report["timings_s"] = {**{f"seed-{s}": r["timings_s"]["total"] for s, r in zip(seeds, reports)},
                           "total": round(time.perf_counter() - t0, 3)}
    write_seeds_report(out, report)
    return report


def _seed_of(report: dict) -> int:
    return int(recorded_config(report)["seed"])


def _with_se(report: dict) -> dict:
    """A copy of a single-seed report with `accuracy_se` beside every arm's accuracies (n = evaluated samples)."""
    out = json.loads(json.dumps(report))
    if "compare" in out:
        n = int(out["compare"]["command_config"]["eval_samples"])
        for row in out["compare"]["variants"].values():
            row["accuracy_se"] = accuracy_se(arm_accuracies(row), n)
        return out
    n = int(out["data"]["evaluated"])
    for arm in [out] + ([out["no_noise_adaptor"]] if "no_noise_adaptor" in out else []):
        arm["accuracy_se"] = accuracy_se(arm_accuracies(arm), n)
    return out


def _common_environment(reports: list[dict]) -> Optional[dict]:
    """The seeds' shared environment, or {"differs": true, "per_seed": [...]} when they ran in different ones."""
    envs = [r.get("environment") for r in reports]
    return envs[0] if all(e == envs[0] for e in envs) else {"differs": True, "per_seed": envs}


def _pipeline_sections(reports: list[dict]) -> dict:
    main = [arm_accuracies(r) for r in reports]
    out = {"stats": accuracy_stats(main), "config": {k: v for k, v in reports[0]["config"].items() if k != "seed"},
           "data": {"name": reports[0]["data"]["name"], "evaluated": [r["data"]["evaluated"] for r in reports]},
           "verify": [{"seed": _seed_of(r), **{k: r["verify"].get(k) for k in ("samples", "timesteps", "bit_exact",
                                                                                 "mismatches")}} for r in reports]}
    if all("no_noise_adaptor" in r for r in reports):
        other = [arm_accuracies(r["no_noise_adaptor"]) for r in reports]
        out["stats_no_noise_adaptor"] = accuracy_stats(other)
        out["noise_adaptor_effect"] = accuracy_effect(main, other)
    return out


def _compare_sections(reports: list[dict]) -> dict:
    order = reports[0]["compare"]["order"]
    arms = {name: [arm_accuracies(r["compare"]["variants"][name]) for r in reports] for name in order}
    cc = {k: v for k, v in reports[0]["compare"]["command_config"].items() if k not in ("seed", "eval_samples")}
    return {"order": order, "config": cc, "stats": {name: accuracy_stats(a) for name, a in arms.items()},
            "variant_effect": {"baseline": order[0], "variants": {
                name: accuracy_effect(arms[name], arms[order[0]]) for name in order[1:]}},
            "data": {"evaluated": [r["compare"]["command_config"]["eval_samples"] for r in reports]},
            "verify": [{"seed": _seed_of(r), **{name: row["verify"].get("bit_exact") for name, row in
                                                r["compare"]["variants"].items()}} for r in reports]}


def combine_reports(reports: list[dict]) -> dict:
    """The multi-seed report of finished single-seed reports (in the order given): seeds, per_seed, stats, effects."""
    kinds = {"compare" if "compare" in r else "pipeline" for r in reports}
    if len(kinds) != 1:
        raise NaDeployError("seed runs: mixes --compare runs and pipeline runs; merge runs of one command")
    kind = kinds.pop()
    sections = _compare_sections(reports) if kind == "compare" else _pipeline_sections(reports)
    return {"kind": kind, "seeds": [_seed_of(r) for r in reports], "per_seed": [_with_se(r) for r in reports],
            "environment": _common_environment(reports), **sections}


def failed_verifies(report: dict) -> list[str]:
    """'seed S' (pipeline) or 'seed S variant V' (compare) for every verify that ran and was not bit-exact."""
    bad = []
    for row in report["verify"]:
        flags = {"": row.get("bit_exact")} if report["kind"] == "pipeline" else {
            f" variant {k}": v for k, v in row.items() if k != "seed"}
        bad += [f"seed {row['seed']}{name}" for name, ok in flags.items() if ok is False]
    return bad


def write_seeds_report(out: Path, report: dict) -> None:
    """OUT/report.json (sorted keys), report.md, accuracy_vs_T.png, then COMPLETE (last)."""
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, sort_keys=True))
    atomic_write_text(out / "report.md", format_seeds_md(report))
    plot_seeds(report, out / "accuracy_vs_T.png")
    atomic_write_text(out / "COMPLETE", "finished\n")


def merge_seed_runs(run_dirs: list[str | Path], out: str | Path, force: bool = False) -> dict:
    """`seeds-merge`: finished single-seed runs (separate jobs, the same config but the seed) -> the multi-seed
    report in OUT, equal to the one-process `--seeds` report but for timings."""
    reports = []
    for d in map(Path, run_dirs):
        report = load_finished(d)
        if report is None:
            raise NaDeployError(f"{d}: not a finished run (no COMPLETE / report.json)")
        reports.append(report)
    want = {k: v for k, v in recorded_config(reports[0]).items() if k != "seed"}
    for d, r in zip(run_dirs, reports):
        diff = _config_difference({k: v for k, v in recorded_config(r).items() if k != "seed"}, want)
        if diff is not None:
            raise NaDeployError(f"{d}: another config than {run_dirs[0]} ({diff}); merge runs of one command")
    seeds = [_seed_of(r) for r in reports]
    if len(set(seeds)) != len(seeds):
        raise NaDeployError(f"seeds-merge: seed {next(s for s in seeds if seeds.count(s) > 1)} given twice")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise NaDeployError(f"--out {out}: directory exists and is not empty; choose another --out or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    report = combine_reports(reports)
    report["timings_s"] = {**{f"seed-{s}": r["timings_s"]["total"] for s, r in zip(seeds, reports)},
                           "total": round(sum(r["timings_s"]["total"] for r in reports), 3)}
    write_seeds_report(out, report)
    return report


__all__ = ["parse_seeds", "seed_dir", "run_seeds", "merge_seed_runs", "combine_reports", "failed_verifies",
           "expected_config", "load_finished"]
