"""Benchmark (prints, asserts nothing): peak memory of an accuracy-vs-T evaluation (issue 13 item 4), streamed
(`accuracy_vs_timesteps(..., batch_size=256)`: tallies, one chunk's traces at a time) vs the old all-traces path
(`batch_size=None`: one chunk, every integer Trace at every T of every image, as before the change).

Net: the digits net of a pipeline run (`--run DIR`: its net.nad.h5 + net.float.nad.h5), or by default
`ridge_digits_cnn(0, widths=(16, 32))` of tests/helpers.py (no SGD; the pipeline's digits_cnn shapes), made fixed
point for T = 32. Images: `--images` (default 10,000) drawn with replacement from the embedded digits test split
(seed `--seed`) and perturbed by uniform integer noise in [-8, 8] (clipped to 0..255). T list: 1..32 (`--tmax`).

Each variant runs in a fresh subprocess (`--child`), which prints its peak RSS (resource.getrusage ru_maxrss:
the whole process, torch included), its RSS after loading the net and images (baseline), and its wall time.
An old-path size whose estimated peak (2.2 x its integer traces) would exceed half of MemAvailable is skipped;
with two or more old-path sizes measured, the old path at `--images` is extrapolated linearly (a + b * images).
Also printed: the integer-trace bytes per image of the old path (sum over T of (neurons + classes) x 8 bytes)
for this net and for a CIFAR-10 ResNet-18 (32x32, relays included) at T list 1..32.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/experiments/measure_eval_memory.py [--images 10000] [--tmax 32]
        [--batch-size auto] [--old-images 1000,2000,3000,10000] [--run runs/DIR] [--seed 0] [--no-resnet]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from na_deploy.evaluate.accuracy import auto_batch_size, trace_bytes_per_image

ROOT = Path(__file__).resolve().parents[2]  # the repository
sys.path.insert(0, str(ROOT / "tests"))  # tests/helpers.py: ridge_digits_cnn
OLD_PEAK_OVER_TRACES = 2.2  # the old path's evaluation memory / its integer traces (measured: 1111 MiB / 527 MiB)


def load_nets(run: str | None, tmax: int):
    """(FloatNet, IntNet): a pipeline run's pair, or the ridge digits net made fixed point for T = tmax."""
    from na_deploy.hw_targets.loihi2 import TARGET

    if run:
        from na_deploy.io import load_net

        fnet, inet = load_net(str(Path(run) / "net.float.nad.h5")), load_net(str(Path(run) / "net.nad.h5"))
        if int(inet.meta.get("max_timesteps", tmax)) < tmax:
            inet = TARGET.to_fixed_point(fnet, max_timesteps=tmax)
        return fnet, inet
    from na_deploy.convert import to_floatnet
    from helpers import ridge_digits_cnn

    model, d = ridge_digits_cnn(0, widths=(16, 32))
    fnet = to_floatnet(model, d.input_shape, d.normalization.channel_scale, name="digits_cnn")
    return fnet, TARGET.to_fixed_point(fnet, max_timesteps=tmax)


def images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n digits test images drawn with replacement and perturbed (integer noise in [-8, 8]), with labels."""
    from na_deploy.data.arrays import load_digits_dataset

    d = load_digits_dataset(seed)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d.x_test), size=n)
    x = np.clip(d.x_test[idx].astype(np.int16) + rng.integers(-8, 9, size=(n, *d.x_test.shape[1:])), 0, 255)
    return x.astype(np.uint8), d.y_test[idx]


def child(args) -> None:
    """One variant in this process: prints one JSON line."""
    import torch

    from na_deploy.evaluate.accuracy import accuracy_vs_timesteps
    from na_deploy.hw_targets.loihi2 import TARGET

    torch.set_num_threads(1)
    fnet, inet = load_nets(args.run, args.tmax)
    x, y = images(args.images, args.seed)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bs = None if args.child == "old" else (args.batch_size if args.batch_size == "auto" else int(args.batch_size))
    t0 = time.perf_counter()
    res = accuracy_vs_timesteps(fnet, inet, TARGET, x, y, list(range(1, args.tmax + 1)), device="cpu",
                                progress=False, batch_size=bs)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"variant": args.child, "images": args.images, "batch_size": bs, "peak_mib": peak / 1024,
                      "baseline_mib": base / 1024, "wall_s": wall, "ann": res.ann_accuracy,
                      "integer_T32": res.integer_accuracy[args.tmax]}))


def run_child(variant: str, n: int, args) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--images", str(n), "--tmax", str(args.tmax),
           "--batch-size", str(args.batch_size), "--seed", str(args.seed)] + (["--run", args.run] if args.run else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{variant} {n}: child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 40


def resnet18_bytes(tmax: int) -> tuple[int, int]:
    import torch

    from na_deploy.models import build_model
    from na_deploy.convert import to_floatnet
    from na_deploy.training.surgery import quantize_model

    torch.manual_seed(0)
    model = quantize_model(build_model("resnet18", 3, 10, 32), 2, True, step_size=0.5).eval()
    fnet = to_floatnet(model, (3, 32, 32), [1 / 255] * 3)
    return trace_bytes_per_image(fnet, tmax), auto_batch_size(fnet, tmax)


def show(r: dict, tmax: int) -> None:
    print(f"  {r['variant']:>6} images={r['images']:>6} batch={str(r['batch_size']):>5}: peak RSS "
          f"{r['peak_mib']:8.1f} MiB (baseline {r['baseline_mib']:.1f} MiB, evaluation +"
          f"{r['peak_mib'] - r['baseline_mib']:.1f} MiB), wall {r['wall_s']:.1f} s, ANN {r['ann']:.4f}, "
          f"integer T={tmax} {r['integer_T32']:.4f}", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--tmax", type=int, default=32)
    ap.add_argument("--batch-size", default="auto", help='samples per chunk of the streamed run, or "auto"')
    ap.add_argument("--old-images", default="1000,2000,3000,10000")
    ap.add_argument("--run", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-resnet", action="store_true")
    ap.add_argument("--child", choices=("stream", "old"), default=None)
    args = ap.parse_args()
    if args.child:
        child(args)
        raise SystemExit(0)
    fnet, _ = load_nets(args.run, args.tmax)
    per = trace_bytes_per_image(fnet, args.tmax)
    print(f"load average {'/'.join(f'{v:.2f}' for v in os.getloadavg())}, {os.cpu_count()} CPUs", flush=True)
    print(f"net: {fnet.meta.get('model', 'digits_cnn')}, {sum(int(np.prod(n.shape)) for n in fnet.nodes)} neurons "
          f"per image; T = 1..{args.tmax}; old-path integer traces: {per / 1024:.1f} KiB per image, "
          f"{per * args.images / 2**30:.2f} GiB for {args.images} images", flush=True)
    print(f"streamed chunk: --batch-size {args.batch_size}"
          + (f" = {auto_batch_size(fnet, args.tmax)} images" if args.batch_size == "auto" else ""), flush=True)
    show(run_child("stream", args.images, args), args.tmax)
    measured = []
    for n in sorted(int(v) for v in args.old_images.split(",") if v):
        if OLD_PEAK_OVER_TRACES * per * n > mem_available() / 2:
            print(f"     old images={n:>6}: skipped (~{OLD_PEAK_OVER_TRACES} x traces = "
                  f"{OLD_PEAK_OVER_TRACES * per * n / 2**30:.1f} GiB > half of MemAvailable "
                  f"{mem_available() / 2**30:.1f} GiB)", flush=True)
            continue
        r = run_child("old", n, args)
        show(r, args.tmax)
        measured.append((n, r["peak_mib"], r["wall_s"]))
    if len(measured) >= 2 and args.images not in [m[0] for m in measured]:
        n_, p_, w_ = (np.array(v, dtype=float) for v in zip(*measured))
        b, a = np.polyfit(n_, p_, 1)
        bw, aw = np.polyfit(n_, w_, 1)
        print(f"     old images={args.images:>6}: extrapolated peak RSS {a + b * args.images:8.1f} MiB "
              f"({b * 1024:.1f} KiB per image measured), wall ~{aw + bw * args.images:.0f} s", flush=True)
    if not args.no_resnet:
        rb, auto = resnet18_bytes(args.tmax)
        print(f"CIFAR-10 ResNet-18 (32x32, relays included), T = 1..{args.tmax}: old-path integer traces "
              f"{rb / 2**20:.1f} MiB per image, {rb * 10_000 / 2**30:.0f} GiB for 10,000 images; streamed, one "
              f"chunk's traces: " + ", ".join(f"{b} images {rb * b / 2**30:.2f} GiB" for b in (auto, 16, 256))
              + f" (auto: {auto})", flush=True)
