"""Benchmark (prints, asserts nothing): the integer reference against every yardstick in one run (issue 23).

For tiny_resnet 28x28 (1 channel) and resnet20 32x32 (3 channels), at T = 8 and 32, with 1 and 2 threads:
  - ref:    TARGET.reference_simulate(inet, x, T) on random pixels (the IntNet of to_fixed_point(fnet,
            max_timesteps=T); random weights with settled batchnorm: bench_reference_vs_ann.build);
  - dense:  T float32 forward passes of the quantized torch model (eval, no_grad) on the same batch: the dense
            compute limit of a T-step run;
  - float:  our float SNN, simulate_float(fnet, x, [T]) (float32, same batch);
  - sj:     SpikingJelly's float IF SNN of the same weights (the torch model with every QuantReLU replaced by
            spikingjelly.activation_based.neuron.IFNode(v_threshold = th, soft reset), T single steps), only when
            spikingjelly is importable (it is no dependency);
  - passes: with --engines passes, the reference on its numpy passes (NA_DEPLOY_FUSED=0's engine: "before" the
            fused loops), timed in the same rounds; its ratios /dense and /float are printed beside ref's;
  - lava:   seconds per sample of the Lava graph (Loihi2SimCfg fixed_pt) on 1 sample, for the --lava NET:T pairs
            (default tiny_resnet:8; --lava none: no Lava), bench_reference_vs_ann.lava_per_sample: measured
            where the run finishes within --lava-budget seconds, else estimated from the steps done; a column of
            the table beside ref (thread-independent: Lava runs one OS process per Lava process).
Ratios ref/dense, ref/float, ref/sj (goals: ref <= 1.5x dense and <= 1.5x float) are measured in one run, the
timers alternating round by round (best of --repeats each), so that every ratio sees the same machine load: best
wall seconds and, as a second table, best CPU seconds of the process (time.process_time, all its threads; with 1
thread close to the wall time on an idle machine). The load average and the busiest other processes are printed
beside the numbers. Where a goal is missed the top entries of a cProfile of one reference run are printed
(--profile-top 0: none).

The integer engine the reference used is printed (`reference.fused.accelerator()` where that module exists:
"numba" or "numpy"; older code: "numpy"). Set NA_DEPLOY_FUSED=0 to time the numpy fallback.

    .venv/bin/python benchmarks/timing/bench_reference_fused.py [--threads 1 2] [--timesteps 8 32] [--repeats 3]
        [--nets tiny_resnet resnet20] [--batch-tiny 256] [--batch-resnet20 64] [--engines passes torch]
        [--lava tiny_resnet:8 | --lava none] [--lava-budget 120]
"""
from __future__ import annotations

import argparse
import copy
import cProfile
import io
import os
import pstats
import subprocess
import time

import numpy as np
import torch

from bench_reference_vs_ann import ann_passes, build, lava_per_sample, load

NETS = {"tiny_resnet": (1, 28), "resnet20": (3, 32)}


def busiest_others(n: int = 4) -> str:
    """The n busiest other processes (ps %CPU, command cut short): what else ran beside the numbers."""
    try:
        out = subprocess.run(["ps", "-eo", "pcpu,pid,args", "--sort=-pcpu"], capture_output=True, text=True,
                             timeout=10).stdout.splitlines()[1:]
    except (OSError, subprocess.SubprocessError):
        return "?"
    rows = [r.split(None, 2) for r in out if r.split(None, 2)[1:2] != [str(os.getpid())]]
    return "; ".join(f"{r[0]}% {r[2][:60]}" for r in rows[:n] if len(r) == 3)


def engine_label() -> str:
    try:
        from na_deploy.hw_targets.loihi2.reference import fused
    except ImportError:
        return "numpy (no fused module)"
    return fused.accelerator()


def engine_runs(inet, x: np.ndarray, T: int, batch: int, engines: list) -> dict:
    """The reference on the chosen other CPU engines (the candidates for the integer steps): "passes", the numpy
    engine without the fused loops (what ran before them), and "torch", the torch engine on the CPU."""
    from na_deploy.hw_targets.loihi2 import TARGET
    from na_deploy.hw_targets.loihi2.reference import fused

    def passes():
        with fused.disabled():
            TARGET.reference_simulate(inet, x, T, device="cpu", batch_size=batch)

    runs = {"passes": passes,
            "torch": lambda: TARGET.reference_simulate(inet, x, T, device="cpu", batch_size=batch, engine="torch")}
    return {k: runs[k] for k in engines}


def sj_model(model):
    """The torch model with every QuantReLU replaced by SpikingJelly's IF neuron (threshold th = p * s, soft
    reset: v <- v - th), single-step mode; None when spikingjelly is not importable."""
    try:
        from spikingjelly.activation_based import neuron
    except ImportError:
        return None
    from na_deploy.training.quantizer import QuantReLU

    net = copy.deepcopy(model).eval()

    def swap(parent):
        for name, child in parent.named_children():
            if isinstance(child, QuantReLU):
                setattr(parent, name, neuron.IFNode(v_threshold=child.threshold, v_reset=None, step_mode="s"))
            else:
                swap(child)

    swap(net)
    return net


def sj_run(net, xf: torch.Tensor, T: int):
    from spikingjelly.activation_based import functional

    def fn():
        with torch.no_grad():
            for _ in range(T):
                net(xf)
            functional.reset_net(net)
    return fn


def best_rounds(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Best wall seconds and best CPU seconds (this process, all its threads) of each function, the functions
    alternating round by round (the same load for all)."""
    wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: min(v) for k, v in wall.items()}, {k: min(v) for k, v in cpu.items()}


def profile_top(run, top: int) -> str:
    pr = cProfile.Profile()
    pr.enable()
    run()
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(top)
    lines = [ln for ln in s.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return "\n".join("      " + ln[:150] for ln in lines[start:start + top + 1])


def measure(name: str, T: int, threads: int, batch: int, args, built: dict, rows: list, cpu_rows: list,
            notes: list) -> None:
    from na_deploy.hw_targets.loihi2 import TARGET
    from na_deploy.simulate.float_snn import simulate_float

    model, fnet, sj, x, xf, inets = built[name]
    inet = inets[T]
    torch.set_num_threads(threads)  # the fused loops split the batch over as many threads
    fns = {"ref": lambda: TARGET.reference_simulate(inet, x, T, device="cpu", batch_size=batch),
           **engine_runs(inet, x, T, batch, args.engines),
           "dense": ann_passes(model, xf, T),
           "float": lambda: simulate_float(fnet, x, [T], device="cpu", batch_size=batch, progress=False)}
    if sj is not None:
        fns["sj"] = sj_run(sj, xf, T)
    for fn in fns.values():  # warm-up (JIT, allocator, caches)
        fn()
    t, cpu = best_rounds(fns, args.repeats)
    per = {k: v / batch for k, v in t.items()}
    row = dict(net=name, T=T, threads=threads, batch=batch, load=load(), **per)
    rows.append(row)
    cpu_rows.append(dict(row, **{k: v / batch for k, v in cpu.items()}))
    print(f"  measured {name} T={T} threads={threads}: wall " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items())
          + "; cpu " + ", ".join(f"{k} {v:.2f} s" for k, v in cpu.items())
          + f" per batch of {batch} (load {row['load']}; busiest: {busiest_others(3)})", flush=True)
    missed = per["ref"] > 1.5 * per["dense"] or per["ref"] > 1.5 * per["float"]
    if missed and args.profile_top:
        notes.append(f"{name} T={T} threads={threads}: ref/dense {per['ref'] / per['dense']:.2f}x, ref/float "
                     f"{per['ref'] / per['float']:.2f}x; cProfile of one reference run (by own time):\n"
                     + profile_top(fns["ref"], args.profile_top))


def print_table(rows: list, what: str, lava: dict) -> None:
    """One line per net, T and thread count: seconds per image, then every ratio (before = the numpy passes)."""
    has = {k: any(k in r for r in rows) for k in ("sj", "passes", "torch")}
    has["lava"] = any(isinstance(v, dict) for v in lava.values())
    print(f"\n{what} seconds per image; ref = the integer reference (engine above), dense = T float32 passes, float ="
          " our float SNN; goals ref/dense <= 1.5x, ref/float <= 1.5x" + ("; before = passes, the numpy engine"
                                                                        if has["passes"] else ""))
    cols = ["ref", "dense", "float"] + [k for k in ("sj", "lava") if has[k]]
    ratios = (["ref/dense", "ref/float"] + (["ref/sj"] if has["sj"] else [])
              + (["before/dense", "before/float", "before/ref"] if has["passes"] else [])
              + (["torch/ref"] if has["torch"] else []) + (["lava/ref"] if has["lava"] else []))
    print(f"{'net':<12}{'T':>4}{'thr':>4}{'batch':>6}" + "".join(f"{c:>10}" for c in cols)
          + "".join(f"{c:>13}" for c in ratios) + f"{'goals':>7}  load 1/5/15")
    for r in rows:
        lv = lava.get((r["net"], r["T"]))
        vals = dict(r, lava=lv["seconds"]) if isinstance(lv, dict) else r
        cells = "".join(f"{vals[c]:>10.5f}" if c in vals else f"{'-':>10}" for c in cols)
        pairs = {"ref/dense": ("ref", "dense"), "ref/float": ("ref", "float"), "ref/sj": ("ref", "sj"),
                 "before/dense": ("passes", "dense"), "before/float": ("passes", "float"),
                 "before/ref": ("passes", "ref"), "torch/ref": ("torch", "ref"), "lava/ref": ("lava", "ref")}
        cells += "".join(f"{vals[pairs[c][0]] / vals[pairs[c][1]]:>12.2f}x" if pairs[c][0] in vals else f"{'-':>13}"
                         for c in ratios)
        ok = "met" if r["ref"] <= 1.5 * r["dense"] and r["ref"] <= 1.5 * r["float"] else "no"
        print(f"{r['net']:<12}{r['T']:>4}{r['threads']:>4}{r['batch']:>6}{cells}{ok:>7}  {r['load']}")


def lava_runs(built: dict, pairs: list, budget: float) -> dict:
    """{(net, T): lava_per_sample's dict, or why there is none}: one sample of each pair through the Lava graph."""
    import importlib.util

    if not pairs:
        return {}
    if importlib.util.find_spec("lava") is None:
        print("\nLava is not importable here (the core env without Lava): no Lava column")
        return {p: "Lava not importable" for p in pairs}
    from na_deploy.hw_targets.loihi2 import TARGET

    out = {}
    for name, T in pairs:
        if name not in built or T not in built[name][5]:
            out[(name, T)] = f"{name} at T={T} was not benchmarked"
            continue
        x, inet = built[name][3], built[name][5][T]
        trace = TARGET.reference_simulate(inet, x[:1], T, device="cpu")
        try:
            lv = lava_per_sample(inet, x[:1], T, budget, trace)
        except Exception as e:  # noqa: BLE001 - a benchmark prints what went wrong and goes on
            out[(name, T)] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:150]}"
        else:
            out[(name, T)] = lv
            how = (f"measured, bit-exact vs reference: {lv['exact']}" if lv["finished"]
                   else f"estimate from {lv['steps_done']} of {lv['slot']} steps")
            print(f"  Lava {name} T={T}: {lv['seconds']:.1f} s per sample (build {lv['build_s']:.1f} s, compile + "
                  f"first step {lv['first_s']:.1f} s, {lv['per_step_s']:.3f} s per step; {how})", flush=True)
    for k, v in out.items():
        if isinstance(v, str):
            print(f"  Lava {k[0]} T={k[1]}: {v}")
    return out


def lava_pairs(specs: list) -> list:
    """["tiny_resnet:8", ...] -> [("tiny_resnet", 8), ...]; ["none"] -> []."""
    if specs == ["none"]:
        return []
    pairs = []
    for spec in specs:
        name, _, t = spec.partition(":")
        if name not in NETS or not t.isdigit():
            raise SystemExit(f"--lava {spec!r}: expected NET:T with NET in {sorted(NETS)}, or none")
        pairs.append((name, int(t)))
    return pairs


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--timesteps", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    ap.add_argument("--batch-tiny", type=int, default=256)
    ap.add_argument("--batch-resnet20", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--p", type=int, default=2)
    ap.add_argument("--profile-top", type=int, default=12)
    ap.add_argument("--engines", nargs="*", default=[], choices=["passes", "torch"],
                    help="also the reference on its numpy passes (before the fused loops) and/or the torch engine")
    ap.add_argument("--lava", nargs="+", default=["tiny_resnet:8"],
                    help="NET:T pairs timed on Lava, one sample each (slow), or none")
    ap.add_argument("--lava-budget", type=float, default=120.0)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    pairs = lava_pairs(args.lava)
    from na_deploy.hw_targets.loihi2 import TARGET

    print(f"load at start (1/5/15 min): {load()}  cores {os.cpu_count()}  torch {torch.__version__}  numpy "
          f"{np.__version__}  integer engine: {engine_label()}  repeats {args.repeats}  p {args.p}")
    print(f"busiest other processes: {busiest_others()}")
    rng = np.random.default_rng(0)
    built, rows, cpu_rows, notes = {}, [], [], []
    for name in args.nets:
        ch, size = NETS[name]
        batch = args.batch_tiny if name == "tiny_resnet" else args.batch_resnet20
        model, fnet = build(name, ch, size, args.p)
        x = rng.integers(0, 256, size=(batch, ch, size, size)).astype(np.uint8)
        xf = torch.from_numpy(x.astype(np.float32) / 255.0)
        inets = {T: TARGET.to_fixed_point(fnet, max_timesteps=T) for T in args.timesteps}
        built[name] = (model, fnet, sj_model(model), x, xf, inets)
        for T in args.timesteps:
            for threads in args.threads:
                measure(name, T, threads, batch, args, built, rows, cpu_rows, notes)
    if not any(b[2] is not None for b in built.values()):
        print("(spikingjelly not importable: it is optional, not installed here: no SpikingJelly column)")
    lava = lava_runs(built, pairs, args.lava_budget)
    print_table(rows, "best wall", lava)
    print_table(cpu_rows, "best CPU (process_time: all threads of this process; less sensitive to other load)", {})
    if notes:
        print("\nwhere a goal is missed, what the reference spends its time on:")
        for n in notes:
            print("  " + n)
    print(f"\nload at end (1/5/15 min): {load()}; busiest other processes: {busiest_others()}")


if __name__ == "__main__":
    main()
