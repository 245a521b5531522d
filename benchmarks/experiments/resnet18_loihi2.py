"""Benchmark (prints figures, asserts nothing but what it reports): CIFAR-shaped ResNet-18 (3x32x32) through
convert -> Loihi 2 fixed point -> Lava export -> verify on Lava (2 samples, T = 4), issue 13 item 7.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/experiments/resnet18_loihi2.py [--samples 2] [--timesteps 4] [--p 2]
        [--ckpt CKPT.pt] [--stock-conv-steps 1] [--stock-lava-steps 0] [--out DIR]

The net: `resnet18` from the model registry with random weights and bench_reference's trained-looking
BatchNorm statistics (QuantReLU step 0.3), so spikes reach the last stage; or --ckpt, a checkpoint of
`na-deploy train` (its FloatNet is converted the same way). Printed:
  - seconds per stage: convert (torch -> FloatNet), fixed point (-> IntNet), fit check, resources,
    export (`LavaBackend.export` bundle, its size), verify (reference, Lava build + run), wall total;
  - resources: neurons, synapses, cores, chips, and which per-core limit binds for each node
    (neurons per core or synapses per core, resources.CoreModel);
  - per-step cost of each Lava process type, measured outside Lava on one spike map (firing rate 0.2):
    Lava's stock Conv model (scipy per channel pair) vs ConvFast (numpy im2col + BLAS), the diagonal Sparse
    (identity relays), the readout Dense, one IF population update;
  - the verify result: bit-exact or the first mismatch; spikes per node (non-trivial activity);
  - with --stock-lava-steps N: N steps of the same Lava graph with Lava's stock Conv model, timed.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "timing"))  # bench_reference_vs_ann.build


def float_net(args):
    """FloatNet of ResNet-18 3x32x32: random weights (bench_reference_vs_ann.build) or a checkpoint."""
    if args.ckpt:
        from na_deploy.convert import convert_checkpoint

        return convert_checkpoint(args.ckpt)
    from bench_reference_vs_ann import build

    return build("resnet18", 3, 32, args.p, seed=args.seed)[1]


def binding(report: dict) -> tuple[str, dict]:
    """Per node: cores by neurons vs by synapses; which binds and how many cores each limit alone needs."""
    cm = report["core_model"]
    by_n = by_s = 0
    bind = {"neurons": 0, "synapses": 0}
    for r in report["nodes"]:
        cn = int(np.ceil(r["neurons"] / cm["neurons_per_core"]))
        cs = int(np.ceil(r["synapses"] / cm["synapses_per_core"]))
        by_n += cn
        by_s += cs
        bind["synapses" if cs > cn else "neurons"] += 1
    t = report["total"]
    why = (f"{t['cores']} cores = sum over nodes of max(ceil(neurons/{cm['neurons_per_core']}), "
           f"ceil(synapses/{cm['synapses_per_core']})); synapses bind for {bind['synapses']} of "
           f"{len(report['nodes'])} nodes, neurons for {bind['neurons']}; neurons alone would need "
           f"{by_n} cores, synapses alone {by_s}; {t['cores']} / {cm['cores_per_chip']} cores per chip -> "
           f"{t['chips']} chips (chip totals: {t['neurons'] / 1e6:.2f} M of 1 M neurons per chip, "
           f"{t['synapses'] / 1e6:.1f} M of 120 M synapses per chip -> at least "
           f"{int(np.ceil(t['synapses'] / 120e6))} chips on synapses alone)")
    return why, bind


def process_step_costs(inet, stock_steps: int) -> list[tuple[str, int, float, float]]:
    """(process type, count, stock s per step, ours s per step) measured outside Lava on rate-0.2 spikes."""
    import scipy.sparse as sp
    from lava.proc.conv import utils as lava_conv_utils

    from na_deploy.hw_targets.loihi2.lava.layout import conv_weights_for_lava, lava_shape
    from na_deploy.hw_targets.loihi2.lava.processes.conv_fast import conv_apply, conv_kernel
    from na_deploy.ir import Conv2d, Dense, Identity

    rng = np.random.default_rng(0)
    shapes = inet.shapes()
    rows = {"Conv (stock) vs ConvFast": [0, 0.0, 0.0], "Sparse (identity)": [0, 0.0, 0.0],
            "Dense": [0, 0.0, 0.0], "IF population": [0, 0.0, 0.0]}
    for node in inet.all_nodes():
        n = int(np.prod(node.shape))
        v = rng.integers(-100, 100, n)
        t0 = time.perf_counter()
        v = v + rng.integers(0, 3, n)
        z = v >= 50
        v = v - z * 50
        rows["IF population"][0] += 1
        rows["IF population"][2] += time.perf_counter() - t0
        for s in node.inputs:
            src = tuple(shapes[s.source])
            x = (rng.random(lava_shape(src)) < 0.2).astype(np.int64)
            if isinstance(s.op, Conv2d):
                w = conv_weights_for_lava(s.op.weight).astype(np.int32)
                kern = conv_kernel(w, s.op.groups)
                kf = kern.astype(np.float64)
                t0 = time.perf_counter()
                conv_apply(x, kern, w.shape[1:3], s.op.stride[::-1], s.op.padding[::-1], 1, kf)
                rows["Conv (stock) vs ConvFast"][2] += time.perf_counter() - t0
                if stock_steps:
                    t0 = time.perf_counter()
                    lava_conv_utils.conv(x.astype(bool), w, w.shape[1:3], s.op.stride[::-1], s.op.padding[::-1],
                                         (1, 1), s.op.groups)
                    rows["Conv (stock) vs ConvFast"][1] += time.perf_counter() - t0
                rows["Conv (stock) vs ConvFast"][0] += 1
            elif isinstance(s.op, Identity):
                m = sp.identity(x.size, dtype=np.int64, format="csr") * 2
                t0 = time.perf_counter()
                m.dot(x.reshape(-1))
                rows["Sparse (identity)"][2] += time.perf_counter() - t0
                rows["Sparse (identity)"][0] += 1
            elif isinstance(s.op, Dense):
                w = np.asarray(s.op.weight, dtype=np.int32)
                t0 = time.perf_counter()
                w.dot(x.reshape(-1))
                rows["Dense"][2] += time.perf_counter() - t0
                rows["Dense"][0] += 1
    return [(k, int(c), float(a), float(b)) for k, (c, a, b) in rows.items()]


def stock_lava_steps(inet, x1: np.ndarray, T: int, steps: int) -> tuple[float, float]:
    """(compile + first step s, mean s per later step) of the Lava graph with Lava's stock Conv model swapped
    back in (`steps` steps of one sample; the run is stopped there)."""
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.conv.process import Conv

    from na_deploy.hw_targets.loihi2.lava.graph import build_lava_graph
    from na_deploy.hw_targets.loihi2.lava.processes import conv_fast
    from na_deploy.hw_targets.loihi2.lava.runtime import RUN_TAG, run_steps_or_raise, teardown

    keep = conv_fast.ConvFast
    conv_fast.ConvFast = Conv  # what lava_graph._conv_process builds
    try:
        graph = build_lava_graph(inet, T, x1, result_buffer=1)
    finally:
        conv_fast.ConvFast = keep
    cfg, healthy = Loihi2SimCfg(select_tag=RUN_TAG), False
    try:
        t0 = time.perf_counter()
        run_steps_or_raise(graph.readout, 1, cfg, 1200.0)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_steps_or_raise(graph.readout, steps - 1, cfg, 1200.0)
        healthy = True
        return first, (time.perf_counter() - t0) / max(1, steps - 1)
    finally:
        teardown(graph, healthy)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--timesteps", type=int, default=4)
    ap.add_argument("--p", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt", default=None, help="a `na-deploy train` checkpoint instead of random weights")
    ap.add_argument("--stock-conv-steps", type=int, default=1, choices=(0, 1),
                    help="1: also time one step of Lava's stock Conv model on every conv (~10 s); 0: skip")
    ap.add_argument("--stock-lava-steps", type=int, default=0,
                    help="N > 1: also run N Lava steps of the graph with Lava's stock Conv model and time them")
    ap.add_argument("--out", default=None, help="export folder (default: a temporary one, removed)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from na_deploy.hw_targets.loihi2 import TARGET
    from na_deploy.verify.bit_exact import verify

    T, B = args.timesteps, args.samples
    t_all = time.perf_counter()
    sec = {}
    print(f"load (1/5/15 min) {'/'.join(f'{v:.2f}' for v in os.getloadavg())}; cores {os.cpu_count()}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    t0 = time.perf_counter()
    fnet = float_net(args)
    sec["convert"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    inet = TARGET.to_fixed_point(fnet, max_timesteps=T)
    sec["fixed_point"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    violations = TARGET.check_fit(inet, timesteps=T)
    sec["fit_check"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rep = TARGET.resource_report(inet)
    sec["resources"] = time.perf_counter() - t0
    why, _ = binding(rep)
    tot = rep["total"]
    print(f"net: resnet18 3x32x32 ({'ckpt ' + args.ckpt if args.ckpt else 'random weights, seed %d' % args.seed}), "
          f"p={args.p}; {len(inet.nodes)} neuron nodes, readout depth {inet.depths()[inet.readout.name]}; "
          f"fit violations: {len(violations)}")
    print(f"resources: {tot['neurons']:,} neurons, {tot['synapses']:,} synapses, {tot['cores']} cores, "
          f"{tot['chips']} chips\n  why: {why}")

    backend = TARGET.backend("lava")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "bundle"
        t0 = time.perf_counter()
        folder = backend.export(inet, out, timesteps=T, force=True, source="benchmarks/experiments/resnet18_loihi2.py")
        sec["export"] = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
    print(f"export: {sec['export']:.1f} s, bundle {size / 1e6:.1f} MB")

    costs = process_step_costs(inet, args.stock_conv_steps)
    print("per Lava step, summed over the processes of each type (outside Lava, one rate-0.2 spike map):")
    for name, count, stock, ours in costs:
        s = f"stock {stock:.3f} s, ConvFast {ours:.3f} s ({stock / max(ours, 1e-9):.0f}x)" if stock else f"{ours:.4f} s"
        print(f"  {name:<26} x{count:<3} {s}")

    x = np.random.default_rng(args.seed).integers(0, 256, size=(B, 3, 32, 32)).astype(np.int64)
    t0 = time.perf_counter()
    rep_v = verify(inet, x, T, TARGET, backend)
    sec["verify"] = time.perf_counter() - t0
    hw = rep_v.backend_trace
    sec["wall_total"] = time.perf_counter() - t_all
    print(f"verify ({B} samples, T={T}): {'BIT-EXACT' if rep_v.equal else 'MISMATCH ' + str(rep_v.first_mismatch)}; "
          f"reference {rep_v.seconds['reference']:.1f} s, Lava {rep_v.seconds['lava']:.1f} s (build "
          f"{rep_v.seconds['lava_build']:.1f} s, run {rep_v.seconds['lava_run']:.1f} s); "
          f"{hw.extra.get('lava_steps')} Lava steps, {hw.extra.get('processes')} processes; "
          f"{rep_v.seconds['lava_run'] / max(1, hw.extra.get('lava_steps', 1)):.3f} s per step")
    spikes = {k: int(v.sum()) for k, v in rep_v.reference_trace.spike_counts.items()}
    print("spikes per node (both samples): " + ", ".join(f"{k} {v}" for k, v in spikes.items()))
    print(f"readout (reference): {rep_v.reference_trace.readout.tolist()}")
    if args.stock_lava_steps > 1:
        first, per = stock_lava_steps(inet, x[:1], T, args.stock_lava_steps)
        print(f"Lava with its stock Conv model: compile + first step {first:.1f} s, then {per:.2f} s per step "
              f"({args.stock_lava_steps - 1} steps) -> {B} samples x {hw.extra.get('lava_steps') // B} steps would "
              f"take ~{per * hw.extra.get('lava_steps', 0):.0f} s of run (ConvFast: {rep_v.seconds['lava_run']:.1f} s)")
    print(f"max RSS: this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB, "
          f"largest child {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e3:.0f} MB")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in sec.items()))


if __name__ == "__main__":
    main()
