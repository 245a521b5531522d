"""Benchmark (prints, asserts nothing): Loihi 2 reference simulator images/s at T=8 for tiny_resnet 28x28,
batch 256, beside the float SNN simulator's images/s.

The net is the real path: registry model -> quantize_model (QuantReLU, p) with random BN statistics and step
sizes -> na_deploy.convert.to_floatnet -> hw_targets.loihi2 to_fixed_point. Random pixels as input.

    .venv/bin/python benchmarks/timing/bench_reference.py [--batch 256] [--timesteps 8] [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # tests/helpers.py: settle_batchnorm


def build_nets(p: int, seed: int, input_size: int):
    from na_deploy.convert import to_floatnet
    from na_deploy.hw_targets.loihi2 import TARGET
    from na_deploy.models import build_model
    from helpers import settle_batchnorm
    from na_deploy.training.surgery import quantize_model

    torch.manual_seed(seed)
    model = quantize_model(build_model("tiny_resnet", 1, 10, input_size), p, True)
    settle_batchnorm(model, seed)  # trained-looking statistics so the SNN is neither silent nor saturated
    fnet = to_floatnet(model, (1, input_size, input_size), (1 / (255 * 0.3),), name="tiny_resnet")
    inet, report = TARGET.to_fixed_point_with_report(fnet)
    return fnet, inet, report


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--timesteps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--p", type=int, default=2)
    ap.add_argument("--input-size", type=int, default=28)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from na_deploy.simulate.float_snn import simulate_float
    from na_deploy.hw_targets.loihi2 import TARGET

    fnet, inet, report = build_nets(args.p, 0, args.input_size)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(args.batch, *inet.input.shape)).astype(np.uint8)
    T = args.timesteps
    print(f"tiny_resnet {args.input_size}x{args.input_size}, p={args.p}: {len(inet.nodes)} neuron nodes "
          f"({sum(n.role == 'relay' for n in inet.nodes)} relays), batch {args.batch}, T={T}, "
          f"device {args.device}, torch threads {torch.get_num_threads()}")
    print(report.format())

    trace = TARGET.reference_simulate(inet, x, T, device=args.device)  # warm-up (+ activity numbers)
    rates = {k: float(v.mean()) / T for k, v in trace.spike_counts.items()}
    print("integer SNN firing rates (spikes/neuron/step): "
          + ", ".join(f"{k} {r:.3f}" for k, r in rates.items()))
    t_ref = best_of(lambda: TARGET.reference_simulate(inet, x, T, device=args.device), args.repeats)
    simulate_float(fnet, x, [T], device=args.device, progress=False)  # warm-up
    t_flt = best_of(lambda: simulate_float(fnet, x, [T], device=args.device, batch_size=args.batch,
                                           progress=False), args.repeats)
    fres = simulate_float(fnet, x, [T], device=args.device, batch_size=args.batch, progress=False)
    agree = float((fres.predictions[T] == trace.predictions).mean())
    print(f"reference simulator (integer, bit-exact): {args.batch / t_ref:8.1f} images/s  ({t_ref:.3f} s / batch)")
    print(f"float SNN simulator (float32):            {args.batch / t_flt:8.1f} images/s  ({t_flt:.3f} s / batch)")
    print(f"prediction agreement float vs integer on random pixels: {agree:.3f}")
    print("goal: >= 300 images/s on 2 cores")


if __name__ == "__main__":
    main()
