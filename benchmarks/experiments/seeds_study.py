"""What lifts T = 1 and T = 2 on the larger nets (issue 20, item 3): a paired multi-seed study, one job per seed.

Studies (each: one data set, one model, its own epochs):
  digits28   `tiny_resnet` on the digits upscaled to 28x28 (benchmarks/data/make_digits28_npz.py)
  cifar32    `resnet20` on the generated 32x32 coloured shapes (benchmarks/data/make_cifar_like_npz.py)
Arms of a study, every one trained from the same seed's full-precision weights (same seed, same fp epochs):
  compare    `pipeline --compare na,no-na,na+noise=0.5,na+noise=2,na+negative,na+offset,datta,datta+l1`
  qat2x      `pipeline` (plain NA) with twice the QAT epochs
Every (study, arm, seed) is one `na-deploy pipeline --seeds S` process; `--jobs` of them run at once, each with
`--threads` torch threads; a finished seed folder is reused when the command is run again (pipeline's resume). Then
`seeds-merge` combines each arm's seeds, and the table gives per arm the integer SNN's mean [95 % t interval] over
seeds and the paired difference against plain NA (`na` of the compare arm), seed by seed.

    python benchmarks/experiments/seeds_study.py --out runs/study [--seeds 0,1,2] [--jobs 2] [--threads 1]
        [--studies digits28,cifar32] [--device auto] [--quick]

`--quick` shrinks epochs and data to check the script itself (minutes on a 2-core CPU); its numbers mean nothing.
Prints the table and writes OUT/study.md and OUT/study.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from na_deploy.evaluate.stats import accuracy_effect, arm_accuracies

ROOT = Path(__file__).resolve().parents[2]
COMPARE = "na,no-na,na+noise=0.5,na+noise=2,na+negative,na+offset,datta,datta+l1"
TIMESTEPS = "1,2,4,8,16,32"
STUDIES = {
    "digits28": dict(model="tiny_resnet", data="digits28.npz", epochs_fp=10, epochs_qat=10),
    "cifar32": dict(model="resnet20", data="cifar32.npz", epochs_fp=15, epochs_qat=8),
}


def make_data(out: Path, quick: bool) -> None:
    """The two data sets, generated (seeded) unless already there."""
    py = sys.executable
    if not (out / "digits28.npz").exists():
        subprocess.run([py, str(ROOT / "benchmarks/data/make_digits28_npz.py"), str(out / "digits28.npz")], check=True)
    if not (out / "cifar32.npz").exists():
        n = ["--train", "300", "--test", "100"] if quick else ["--train", "1000", "--test", "500"]
        subprocess.run([py, str(ROOT / "benchmarks/data/make_cifar_like_npz.py"), str(out / "cifar32.npz"), *n,
                        "--seed", "0"], check=True)


def arm_args(study: dict, arm: str, quick: bool) -> list[str]:
    """The pipeline options of one arm (all but --seeds/--out)."""
    fp, qat = (1, 1) if quick else (study["epochs_fp"], study["epochs_qat"])
    args = ["--model", study["model"], "--epochs-fp", str(fp), "--timesteps", TIMESTEPS, "--verify-samples", "0"]
    if arm == "compare":
        return args + ["--epochs-qat", str(qat), "--compare", COMPARE]
    return args + ["--epochs-qat", str(2 * qat)]


def run_job(cmd: list[str], log: Path) -> tuple[int, float]:
    t0 = time.time()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    return rc, time.time() - t0


def _row(name: str, stats: dict, effect: dict | None) -> str:
    def ci(s, scale=100.0, signed=False):
        fmt = "{:+.2f}" if signed else "{:.2f}"
        lo, hi = s.get("ci95") or (float("nan"), float("nan"))
        mean = s.get("mean", s.get("mean_diff"))
        return f"{fmt.format(scale * mean)} [{fmt.format(scale * lo)}, {fmt.format(scale * hi)}]"

    ts = TIMESTEPS.split(",")
    cells = [ci(stats["ann"])] + [ci(stats["integer"][t]) if t in stats["integer"] else "—" for t in ts]
    eff = [ci(effect["integer"][t], signed=True) if effect and t in effect["integer"] else "—" for t in ts[:3]]
    return f"| {name} (n = {stats['ann']['n']}) | " + " | ".join(cells + eff) + " |"


def table(out: Path, studies: list[str]) -> tuple[str, dict]:
    """The markdown table of every study's merged arms, and the numbers behind it."""
    ts = TIMESTEPS.split(",")
    head = ("| setting | ANN | " + " | ".join(f"T={t}" for t in ts) + " | "
            + " | ".join(f"effect T={t} (pp)" for t in ts[:3]) + " |\n|---|" + "---:|" * (1 + len(ts) + 3))
    lines, numbers = [], {}
    for name in studies:
        cmp_report = json.loads((out / name / "compare" / "merged" / "report.json").read_text())
        base = [arm_accuracies(r["compare"]["variants"]["na"]) for r in cmp_report["per_seed"]]
        lines += [f"\n**{name}** ({STUDIES[name]['model']}; seeds {cmp_report['seeds']})\n", head]
        numbers[name] = {"seeds": cmp_report["seeds"], "arms": {}}
        for v in cmp_report["order"]:
            eff = None if v == "na" else cmp_report["variant_effect"]["variants"][v]
            lines.append(_row(v, cmp_report["stats"][v], eff))
            numbers[name]["arms"][v] = {"stats": cmp_report["stats"][v], "effect_vs_na": eff}
        qat_dir = out / name / "qat2x" / "merged" / "report.json"
        if qat_dir.exists():
            q = json.loads(qat_dir.read_text())
            if q["seeds"] != cmp_report["seeds"]:
                raise SystemExit(f"{qat_dir}: seeds {q['seeds']} differ from the compare arm's {cmp_report['seeds']}")
            eff = accuracy_effect([arm_accuracies(r) for r in q["per_seed"]], base)
            lines.append(_row("na, 2x QAT epochs", q["stats"], eff))
            numbers[name]["arms"]["na_qat2x"] = {"stats": q["stats"], "effect_vs_na": eff}
    return "\n".join(lines) + "\n", numbers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--studies", default="digits28,cifar32")
    ap.add_argument("--arms", default="compare,qat2x")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    make_data(out, a.quick)
    studies, seeds, arms = a.studies.split(","), a.seeds.split(","), a.arms.split(",")
    cli = [sys.executable, "-m", "na_deploy.cli.main"]
    jobs = []
    for name in studies:
        st = STUDIES[name]
        for arm in arms:
            for s in seeds:
                run = out / name / arm / f"run-{s}"
                run.parent.mkdir(parents=True, exist_ok=True)
                cmd = cli + ["pipeline", "--data", str(out / st["data"]), *arm_args(st, arm, a.quick), "--seeds", s,
                             "--threads", str(a.threads), "--device", a.device, "--out", str(run)]
                jobs.append((f"{name}/{arm}/seed {s}", cmd, run.parent / f"run-{s}.log"))
    t0 = time.time()
    with ThreadPoolExecutor(a.jobs) as pool:
        for (label, _, log), (rc, dt) in zip(jobs, pool.map(lambda j: run_job(j[1], j[2]), jobs)):
            print(f"[study] {label}: exit {rc}, {dt:.0f} s" + (f" (see {log})" if rc else ""), flush=True)
    print(f"[study] all jobs: {time.time() - t0:.0f} s wall", flush=True)
    for name in studies:
        for arm in arms:
            runs = [str(out / name / arm / f"run-{s}" / f"seed-{s}") for s in seeds]
            subprocess.run(cli + ["seeds-merge", *runs, "--out", str(out / name / arm / "merged"), "--force"],
                           check=True, stdout=subprocess.DEVNULL)
    md, numbers = table(out, studies)
    (out / "study.md").write_text(md)
    (out / "study.json").write_text(json.dumps(numbers, indent=2, sort_keys=True))
    print(md)


if __name__ == "__main__":
    main()
