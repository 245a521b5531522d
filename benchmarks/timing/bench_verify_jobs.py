"""Benchmark (prints figures, asserts only bit-exactness): samples/s of `na-deploy verify --jobs J` for J = 1, 2, 4.

    .venv/bin/python benchmarks/timing/bench_verify_jobs.py [--net NET.nad.h5] [--samples 64] [--timesteps 8]
                                                     [--jobs 1,2,4]

Default net: the digits net of `na-deploy pipeline --out /tmp/jobs_run --verify-samples 0` (run once when
/tmp/jobs_run/net.nad.h5 is missing). Each J runs `na_deploy.cli.verify_jobs.run_verify_jobs`: J processes
`python -m na_deploy.cli.main verify NET --shard k/J --skip-fidelity`, the same N samples split J ways, merged.
Measured per J: wall time (process start-up included), samples/s, the slowest shard's own verify seconds,
and the CPU seconds of all children (getrusage; Lava's processes are waited for by their runtime, so they
count) -> how many cores a job keeps busy. From these it predicts samples/s on more cores: each job is one
Lava runtime whose Lava processes (one OS process each: every node, the source, the readout, plus the
runtime service) pass messages every time step, so one job keeps about `cpu / wall` cores busy and J jobs
scale until J * that reaches the core count; past it, jobs only share cores. The fixed start-up per job
(interpreter, torch and Lava imports, the runtime's compile and process start) does not shrink with J.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_RUN = Path("/tmp/jobs_run")


def _net(path: str | None) -> str:
    if path:
        return path
    net = DEFAULT_RUN / "net.nad.h5"
    if not net.is_file():
        print(f"building the digits net once: na-deploy pipeline --out {DEFAULT_RUN} --verify-samples 0")
        subprocess.run([sys.executable, "-m", "na_deploy.cli.main", "pipeline", "--out", str(DEFAULT_RUN),
                        "--verify-samples", "0", "--timesteps", "8", "--force"], check=True)
    return str(net)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def measure(net: str, samples: int, timesteps: int, jobs: int) -> dict:
    from na_deploy.verify.jobs import run_verify_jobs

    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    merged = run_verify_jobs([net, "--samples", str(samples), "--timesteps", str(timesteps), "--skip-fidelity"],
                             jobs)
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    assert merged["passed"], f"not bit-exact with {jobs} jobs: {merged['first_mismatch']}"
    s = merged["seconds"]
    return {"jobs": jobs, "wall": wall, "rate": samples / wall, "cpu": cpu, "busy": cpu / wall,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "shard_max": s["shard_max"], "verify_sum": s["reference"] + s["lava"],
            "lava_per_sample": s["lava_per_sample"]}


def _predict(rows: list[dict], samples: int, cores: int) -> list[str]:
    """Samples/s on more cores from the 1-job figures: per-job start-up, per-sample cost, cores per job."""
    one = next(r for r in rows if r["jobs"] == 1)
    per_sample = one["shard_max"] / samples  # one job's verify seconds per sample (Lava dominates)
    startup = one["wall"] - one["shard_max"]  # interpreter + imports + runtime start, per job, not split by J
    busy = max(one["busy"], 1e-3)  # cores one job keeps busy
    lines = [f"prediction (assumes otherwise idle cores; from the 1-job run: start-up {startup:.1f} s per job, "
             f"{per_sample * 1e3:.0f} ms/sample of verify, {busy:.2f} cores busy per job):"]
    for c in sorted({cores, 4, 8, 16, 32, 64}):
        best = None
        for j in (1, 2, 4, 8, 16, 32, 64):
            if j > samples:
                break
            share = min(1.0, c / (j * busy))  # each job's share of the cores it would use
            wall = startup / min(1.0, c / j) + (samples / j) * per_sample / share
            if best is None or samples / wall > best[1]:
                best = (j, samples / wall)
        lines.append(f"  {c:>3} cores: best about {best[1]:.1f} samples/s with {best[0]} jobs")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", default=None, help="IntNet .nad.h5 with the digits' 1x8x8 input [default: built once]")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--timesteps", type=int, default=8)
    ap.add_argument("--jobs", default="1,2,4")
    args = ap.parse_args()
    net = _net(args.net)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    print(f"net {net}; N={args.samples}, T={args.timesteps}; {cores} cores; load average before {_load()}")
    rows = []
    for j in [int(v) for v in args.jobs.split(",")]:
        r = measure(net, args.samples, args.timesteps, j)
        rows.append(r)
        print(f"jobs {j}: wall {r['wall']:6.1f} s  {r['rate']:6.2f} samples/s  slowest shard {r['shard_max']:5.1f} s  "
              f"all shards {r['verify_sum']:5.1f} s  children CPU {r['cpu']:6.1f} s = {r['busy']:.2f} cores busy  "
              f"(load average now {_load()})")
    if any(r["jobs"] == 1 for r in rows):
        base = next(r for r in rows if r["jobs"] == 1)["rate"]
        print("speed-up over 1 job: " + ", ".join(f"{r['jobs']} jobs {r['rate'] / base:.2f}x" for r in rows))
        for line in _predict(rows, args.samples, cores):
            print(line)
    print(f"all merged reports bit-exact; largest process {max(r['max_rss_mb'] for r in rows):.0f} MB RSS "
          "(each job holds one such verify process plus its Lava processes)")


if __name__ == "__main__":
    main()
