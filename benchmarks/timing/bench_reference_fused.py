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
  - lava:   with --lava, seconds per sample of the Lava graph (Loihi2SimCfg fixed_pt) on 1 sample
            (bench_reference_vs_ann.lava_per_sample; slow).
Ratios ref/dense, ref/float, ref/sj (goals: ref <= 1.5x dense and <= 1.5x float) are measured in one run, the
timers alternating round by round (best of --repeats each), so that every ratio sees the same machine load: best
wall seconds and, as a second table, best CPU seconds of the process (time.process_time, all its threads; with 1
thread close to the wall time on an idle machine). The load average and the busiest other processes are printed
beside the numbers. Where a goal is missed the top entries of a cProfile of one reference run are printed
(--profile-top 0: none).

The integer engine the reference used is printed (`reference.fused.accelerator()` where that module exists:
"numba" or "numpy"; older code: "numpy"). Set NA_DEPLOY_FUSED=0 to time the numpy fallback.

    .venv/bin/python benchmarks/timing/bench_reference_fused.py [--threads 1 2] [--timesteps 8 32] [--repeats 3]
        [--nets tiny_resnet resnet20] [--batch-tiny 256] [--batch-resnet20 64] [--lava] [--lava-budget 120]
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


def engine_runs(inet, x: np.ndarray, T: int, batch: int) -> dict:
    """The reference on its other CPU engines (the candidates for the integer steps): "passes", the numpy engine
    without the fused loops (what ran before them), and "torch", the torch engine on the CPU."""
    from na_deploy.hw_targets.loihi2 import TARGET
    from na_deploy.hw_targets.loihi2.reference import fused

    def passes():
        with fused.disabled():
            TARGET.reference_simulate(inet, x, T, device="cpu", batch_size=batch)

    return {"passes": passes,
            "torch": lambda: TARGET.reference_simulate(inet, x, T, device="cpu", batch_size=batch, engine="torch")}


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
           **(engine_runs(inet, x, T, batch) if args.engines else {}),
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


def print_table(rows: list, what: str) -> None:
    has_sj, has_eng = any("sj" in r for r in rows), any("passes" in r for r in rows)
    print("\ninteger reference vs T float32 dense passes, our float SNN" + (", SpikingJelly IF" if has_sj else "")
          + f" ({what} seconds per image; goals ref/dense <= 1.5x, ref/float <= 1.5x)"
          + ("; passes / torch: the reference on its numpy passes / torch engine, as multiples of ref" if has_eng
             else ""))
    print(f"{'net':<12}{'T':>4}{'thr':>4}{'batch':>6}{'ref':>10}{'dense':>10}{'float':>10}"
          + (f"{'sj':>10}" if has_sj else "") + f"{'ref/dense':>10}{'ref/float':>10}"
          + (f"{'ref/sj':>8}" if has_sj else "") + (f"{'passes':>8}{'torch':>8}" if has_eng else "")
          + f"{'goals':>7}  load 1/5/15")
    for r in rows:
        rd, rf = r["ref"] / r["dense"], r["ref"] / r["float"]
        sj = f"{r['sj']:>10.5f}" if "sj" in r else (f"{'-':>10}" if has_sj else "")
        rsj = f"{r['ref'] / r['sj']:>7.2f}x" if "sj" in r else (f"{'-':>8}" if has_sj else "")
        eng = (f"{r['passes'] / r['ref']:>7.2f}x{r['torch'] / r['ref']:>7.2f}x" if "passes" in r
               else (f"{'-':>8}{'-':>8}" if has_eng else ""))
        ok = "met" if rd <= 1.5 and rf <= 1.5 else "no"
        print(f"{r['net']:<12}{r['T']:>4}{r['threads']:>4}{r['batch']:>6}{r['ref']:>10.5f}{r['dense']:>10.5f}"
              f"{r['float']:>10.5f}{sj}{rd:>9.2f}x{rf:>9.2f}x{rsj}{eng}{ok:>7}  {r['load']}")


def lava_table(built: dict, rows: list, budget: float) -> None:
    from na_deploy.hw_targets.loihi2 import TARGET

    print(f"\nLava (Loihi2SimCfg fixed_pt) seconds per sample, 1 sample, budget {budget:.0f} s per net and T")
    print(f"{'net':<12}{'T':>4}{'Lava s/sample':>15}{'ref s/img':>11}{'Lava/ref':>10}  detail")
    done = set()
    for r in rows:
        if (r["net"], r["T"]) in done:
            continue
        done.add((r["net"], r["T"]))
        _model, _fnet, _sj, x, _xf, inets = built[r["net"]]
        inet = inets[r["T"]]
        trace = TARGET.reference_simulate(inet, x[:1], r["T"], device="cpu")
        try:
            lv = lava_per_sample(inet, x[:1], r["T"], budget, trace)
        except Exception as e:  # noqa: BLE001 - a benchmark prints what went wrong and goes on
            print(f"{r['net']:<12}{r['T']:>4}  failed: {type(e).__name__}: {str(e).splitlines()[0][:150]}")
            continue
        how = (f"measured, bit-exact vs reference: {lv['exact']}" if lv["finished"]
               else f"estimate from {lv['steps_done']} of {lv['slot']} steps")
        print(f"{r['net']:<12}{r['T']:>4}{lv['seconds']:>15.1f}{r['ref']:>11.5f}{lv['seconds'] / r['ref']:>9.0f}x"
              f"  {how}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--timesteps", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    ap.add_argument("--batch-tiny", type=int, default=256)
    ap.add_argument("--batch-resnet20", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--p", type=int, default=2)
    ap.add_argument("--profile-top", type=int, default=12)
    ap.add_argument("--engines", action="store_true",
                    help="also the reference on its numpy passes and on the torch engine (CPU)")
    ap.add_argument("--lava", action="store_true", help="also Lava seconds per sample (slow)")
    ap.add_argument("--lava-budget", type=float, default=120.0)
    args = ap.parse_args()

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
        print("(spikingjelly not importable: no SpikingJelly column)")
    print_table(rows, "best wall")
    print_table(cpu_rows, "best CPU (process_time: all threads of this process; less sensitive to other load)")
    if notes:
        print("\nwhere a goal is missed, what the reference spends its time on:")
        for n in notes:
            print("  " + n)
    if args.lava:
        lava_table(built, rows, args.lava_budget)
    print(f"\nload at end (1/5/15 min): {load()}; busiest other processes: {busiest_others()}")


if __name__ == "__main__":
    main()
