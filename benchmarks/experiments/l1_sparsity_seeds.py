"""Datta et al.'s L1 activation penalty over seeds (issue 20 item 4): for each lambda one
`na-deploy pipeline --seeds S --compare na,na+l1 --compare-l1 LAMBDA --verify-samples 0 --out OUT/l1-LAMBDA`
(digits_cnn, p = 2, noise adaptor; both arms of a seed from its own fp weights), then one table: the integer SNN's
mean [95 % t interval] over seeds per lambda (lambda 0 is the `na` arm, the same in every run), the paired effect
against it at T = 1 and 2, and the spikes per inference at T = 8 (mean over seeds). A finished run folder is
reused, so the command resumes.

    .venv/bin/python benchmarks/experiments/l1_sparsity_seeds.py --out runs/l1 [--lambdas 0.5,2,8] [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

TS = ("1", "2", "4", "8", "16")


def _ci(s: dict, signed: bool = False) -> str:
    fmt = "{:+.2f}" if signed else "{:.2f}"
    mean = s.get("mean", s.get("mean_diff"))
    lo, hi = s["ci95"]
    return f"{fmt.format(100 * mean)} [{fmt.format(100 * lo)}, {fmt.format(100 * hi)}]"


def run(lam: str, out: Path, seeds: str) -> dict:
    folder = out / f"l1-{lam}"
    if not (folder / "COMPLETE").is_file():
        cmd = [str(Path(sys.executable).parent / "na-deploy"), "pipeline", "--seeds", seeds, "--compare", "na,na+l1",
               "--compare-l1", lam, "--verify-samples", "0", "--out", str(folder)]
        print("$ " + " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((folder / "report.json").read_text())


def spikes_t8(report: dict, variant: str) -> float:
    per = [r["compare"]["variants"][variant]["spikes_per_inference"]["8"] for r in report["per_seed"]]
    return sum(per) / len(per)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--lambdas", default="0.5,2,8")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    out = Path(args.out)
    reports = {lam: run(lam, out, args.seeds) for lam in args.lambdas.split(",")}
    first = next(iter(reports.values()))
    n = first["stats"]["na"]["ann"]["n"]
    print(f"\ndigits_cnn, p = 2, noise adaptor, seeds {first['seeds']}: integer SNN %, mean [95 % t interval] "
          f"(n = {n}); effect = paired difference against lambda 0, pp; spikes: mean over seeds")
    print("| λ | ANN | " + " | ".join(f"T={t}" for t in TS)
          + " | effect T=1 | effect T=2 | spikes / inference, T = 8 |")
    print("|---|" + "---:|" * (len(TS) + 4))
    base = first["stats"]["na"]
    print("| 0 | " + _ci(base["ann"]) + " | " + " | ".join(_ci(base["integer"][t]) for t in TS)
          + f" | — | — | {spikes_t8(first, 'na'):.0f} |")
    for lam, rep in reports.items():
        st, eff = rep["stats"]["na+l1"], rep["variant_effect"]["variants"]["na+l1"]["integer"]
        print(f"| {lam} | " + _ci(st["ann"]) + " | " + " | ".join(_ci(st["integer"][t]) for t in TS)
              + f" | {_ci(eff['1'], True)} | {_ci(eff['2'], True)} | {spikes_t8(rep, 'na+l1'):.0f} |")


if __name__ == "__main__":
    main()
