"""Benchmark (prints figures, asserts nothing): wall time of the default `na-deploy pipeline` on digits,
per stage. Goal: < 3 minutes on 2 cores.

    .venv/bin/python benchmarks/timing/bench_pipeline.py [--verify-samples 100] [--compare-no-noise-adaptor]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--verify-samples", type=int, default=100)
    ap.add_argument("--compare-no-noise-adaptor", action="store_true")
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="na-bench-")) / "run"
    cmd = [sys.executable, "-m", "na_deploy.cli.main", "pipeline", "--out", str(out),
           "--verify-samples", str(args.verify_samples)]
    if args.compare_no_noise_adaptor:
        cmd.append("--compare-no-noise-adaptor")
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    wall = time.perf_counter() - t0
    print(f"exit code {rc}; wall time {wall:.1f} s (goal < 180 s on 2 cores)")
    rep = out / "report.json"
    if rep.exists():
        r = json.loads(rep.read_text())
        for stage, s in r["timings_s"].items():
            print(f"  {stage:<28}{s:>9.2f} s")
        seconds = r["verify"].get("seconds")  # absent when --verify-samples 0
        if seconds:
            print(f"  Lava s/sample {seconds['lava_per_sample']:.3f}, reference s/sample "
                  f"{seconds['reference_per_sample']:.5f}")
    print(f"run folder: {out}")


if __name__ == "__main__":
    main()
