"""Benchmark (prints, asserts nothing): the Loihi 2 reference simulator against its compute limit, T float32
forward passes of the same ANN, and against Lava (issue 13, item 5).

For tiny_resnet 28x28 (1 channel) and resnet20 32x32 (3 channels), at T = 8 and 32, in one run:
  - reference seconds per image: TARGET.reference_simulate(inet, x, T) on a batch of random pixels
    (the IntNet from TARGET.to_fixed_point(fnet, max_timesteps=T); random weights, bench_reference's
    trained-looking BN statistics and QuantReLU step 0.3 so the SNN is neither silent nor saturated);
  - ANN seconds per image: T forward passes of the quantized torch model (eval, float32, torch.no_grad)
    on the same batch and the same torch threads;
  - ratio = reference / (T-pass ANN)   (goal <= 1.5x); reference and ANN repeats alternate, best of each;
  - where the goal is missed, a cProfile breakdown of one reference run (ops = the conv / dense / pool ops
    in torch, in float32 or float64; to_int = rint + cast; the IF loop over T in numpy; the rest);
  - Lava seconds per sample on 1 sample (TARGET.backend(), Loihi2SimCfg fixed_pt), its graph run step by
    step within a time budget; past the budget the figure is an estimate from the steps measured;
  - Lava / reference speed ratio (goal >= 1000x).
The machine load (os.getloadavg()) is printed at the start and the end. Default 1 torch thread: with 2 threads
on a loaded 2-core machine the ANN's elementwise ops (BN, QuantReLU) ran ~100x slower (OpenMP threads waiting
for a core), so the ratio would say more about the load than about the simulator.

    .venv/bin/python benchmarks/timing/bench_reference_vs_ann.py [--threads 1] [--batch 128] [--repeats 3]
        [--lava-budget 120] [--no-lava] [--quick]
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # tests/helpers.py: settle_batchnorm
NETS = (("tiny_resnet", 1, 28), ("resnet20", 3, 32))


def load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def build(name: str, channels: int, size: int, p: int, seed: int = 0):
    """The quantized torch model (eval) and its FloatNet, bench_reference's recipe."""
    from na_deploy.convert import to_floatnet
    from na_deploy.models import build_model
    from na_deploy.training.surgery import quantize_model
    from helpers import settle_batchnorm

    torch.manual_seed(seed)
    model = quantize_model(build_model(name, channels, 10, size), p=p)
    settle_batchnorm(model, seed)
    fnet = to_floatnet(model, (channels, size, size), (1 / (255 * 0.3),) * channels, name=name)
    return model, fnet


def time_pair(ref_fn, ann_fn, repeats: int) -> tuple[float, float]:
    """Best of `repeats` for each, alternating the two so that both see the same load."""
    tr, ta = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ref_fn()
        tr.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ann_fn()
        ta.append(time.perf_counter() - t0)
    return min(tr), min(ta)


def ann_passes(model, xf: torch.Tensor, T: int):
    def fn():
        with torch.no_grad():
            for _ in range(T):
                model(xf)
    return fn


# cProfile categories of one reference run: (label, file suffix, function name)
_CATS = (
    ("ops (torch conv/dense/pool)", "reference.py", "apply"),
    ("to_int (rint + cast)", "reference.py", "to_int"),
    ("IF loop over T (numpy)", "reference.py", "integrate"),
    ("shift/add/bias", "reference.py", "_shift"),
    ("counts / readout", "reference.py", "_counts_at"),
    ("counts / readout", "reference.py", "_readout_potentials"),
)


def profile_reference(run) -> tuple[float, dict, int]:
    """cProfile one reference run -> (profiled total s, {category: cumulative s}, python calls in the IF loop)."""
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    run()
    pr.disable()
    total = time.perf_counter() - t0
    st = pstats.Stats(pr).stats  # (file, line, func) -> (cc, nc, tt, ct, callers)
    cats: dict[str, float] = {}
    loop_calls = 0
    for (file, _line, func), (_cc, nc, _tt, ct, _callers) in st.items():
        for label, suffix, fname in _CATS:
            if file.endswith(suffix) and func == fname:
                cats[label] = cats.get(label, 0.0) + ct
        if func == "fire_and_reset_inplace":
            loop_calls += nc
    # integrate's cumulative time contains no op time; apply's contains only the ops; shift is inside
    # _node_current beside apply / to_int, and its numpy adds are attributed to _node_current itself
    node_cur = sum(ct for (f, _l, fn), (_c, _n, _t, ct, _) in st.items()
                   if f.endswith("reference.py") and fn == "_node_current")
    cats["shift/add/bias"] = max(0.0, node_cur - cats.get("ops (torch conv/dense/pool)", 0.0)
                                 - cats.get("to_int (rint + cast)", 0.0))
    cats["other (python, plans, concat)"] = max(0.0, total - sum(cats.values()))
    return total, cats, loop_calls


def op_breakdown(run) -> dict:
    """Seconds of one reference run inside each IR op type (spike -> float cast + the torch op), by wrapping the
    numpy engine's `apply` for the duration of this call (restored after; nothing in the package changes)."""
    from na_deploy.hw_targets.loihi2.reference import fast as R

    spent: dict[str, list] = {}
    orig_apply, orig_init = R._NumpyBackend.apply, R._SynapsePlan.__init__

    def init(self, syn, *a, **k):
        orig_init(self, syn, *a, **k)
        self.bench_op = type(syn.op).__name__

    def apply(self, syn, a):
        t0 = time.perf_counter()
        y = orig_apply(self, syn, a)
        e = spent.setdefault(getattr(syn, "bench_op", "?"), [0, 0.0])
        e[0] += 1
        e[1] += time.perf_counter() - t0
        return y

    R._NumpyBackend.apply, R._SynapsePlan.__init__ = apply, init
    try:
        run()
    finally:
        R._NumpyBackend.apply, R._SynapsePlan.__init__ = orig_apply, orig_init
    return spent


def locality_probe(inet, T: int, B: int, repeats: int) -> tuple[str, float, float]:
    """The net's largest spike-fed conv synapse as the reference runs it (one op on the whole (T*B) batch) vs the
    same op on T chunks of B samples (what the ANN's T passes do): the same FLOPs, a smaller working set."""
    from na_deploy.ir import INPUT_NAME, Conv2d
    from na_deploy.simulate.torch_ops import compile_op

    syns = [(int(np.prod(n.shape)), n, s) for n in inet.all_nodes() for s in n.inputs
            if isinstance(s.op, Conv2d) and s.source != INPUT_NAME]
    _, node, syn = max(syns, key=lambda t: t[0])
    src_shape = next(m.shape for m in inet.all_nodes() if m.name == syn.source)
    fn = compile_op(syn.op, torch.float32, torch.device("cpu"))
    spikes = torch.from_numpy((np.random.default_rng(1).random((T * B, *src_shape)) < 0.3).astype(np.float32))

    def best(f):
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return min(ts)

    with torch.no_grad():
        whole = best(lambda: fn(spikes))
        chunked = best(lambda: [fn(spikes[i * B:(i + 1) * B]) for i in range(T)])
    return f"{syn.source}->{node.name} {tuple(src_shape)}", whole, chunked


def plan_dtypes(inet, T: int) -> tuple[int, int, int, int]:
    """(float32 synapses, float64 synapses, int32 nodes, int64 nodes) as the reference plans them on the CPU."""
    from na_deploy.hw_targets.loihi2 import LOIHI2
    from na_deploy.hw_targets.loihi2.reference.fast import _NodePlan

    plans = [_NodePlan(n, T, torch.device("cpu"), LOIHI2) for n in inet.all_nodes()]
    syn = [s.dtype for p in plans for s in p.synapses]
    return (sum(d == torch.float32 for d in syn), sum(d == torch.float64 for d in syn),
            sum(p.small for p in plans), sum(not p.small for p in plans))


def ann_ops_floor(model, xf: torch.Tensor, T: int) -> float:
    """Seconds of T passes spent in the ANN's conv / linear / pool modules alone (forward hooks + timers)."""
    spent = [0.0]
    start = {}

    def pre(mod, _inp):
        start[id(mod)] = time.perf_counter()

    def post(mod, _inp, _out):
        spent[0] += time.perf_counter() - start.pop(id(mod))

    hs = []
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.AvgPool2d, torch.nn.AdaptiveAvgPool2d)):
            hs += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        ann_passes(model, xf, T)()
    finally:
        for h in hs:
            h.remove()
    return spent[0]


def lava_per_sample(inet, x1: np.ndarray, T: int, budget_s: float, ref_trace=None) -> dict:
    """Run the Lava graph of one sample step by step until it finishes or `budget_s` is spent.

    Returns build_s, first_s (compile + first step), steps_done, slot (steps per sample), per_step_s,
    seconds (measured total when finished, else build + first + per_step * remaining), finished, exact."""
    from lava.magma.core.run_configs import Loihi2SimCfg

    from na_deploy.hw_targets.loihi2.lava.graph import build_lava_graph
    from na_deploy.hw_targets.loihi2.lava.runtime import RUN_TAG, run_steps_or_raise, teardown

    t0 = time.perf_counter()
    graph = build_lava_graph(inet, T, x1, result_buffer=1)
    build_s = time.perf_counter() - t0
    cfg = Loihi2SimCfg(select_tag=RUN_TAG)
    slot = graph.num_steps
    healthy = False
    out = {"slot": slot, "build_s": build_s, "finished": False, "exact": None}
    try:
        t1 = time.perf_counter()
        run_steps_or_raise(graph.readout, 1, cfg, max(600.0, budget_s))
        healthy = True
        out["first_s"] = time.perf_counter() - t1
        done, t_steps, chunk = 1, 0.0, 1
        while done < slot and (time.perf_counter() - t0) < budget_s:
            n = min(chunk, slot - done)
            healthy = False
            t2 = time.perf_counter()
            run_steps_or_raise(graph.readout, n, cfg, max(600.0, budget_s))
            t_steps += time.perf_counter() - t2
            healthy = True
            done += n
            chunk = min(chunk * 2, 64)
        out["steps_done"] = done
        out["per_step_s"] = t_steps / max(1, done - 1) if done > 1 else out["first_s"]
        if done == slot:
            out["finished"] = True
            out["seconds"] = time.perf_counter() - t0
            if ref_trace is not None:
                graph.drain(samples=1)
                tr = graph.collect()
                out["exact"] = bool(np.array_equal(tr.readout, ref_trace.readout[:1]) and all(
                    np.array_equal(tr.spike_counts[k], ref_trace.spike_counts[k][:1]) for k in tr.spike_counts))
        else:
            out["seconds"] = build_s + out["first_s"] + out["per_step_s"] * (slot - 1)
    finally:
        teardown(graph, healthy)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads, both sides (default 1: on a busy 2-core machine torch's OpenMP elementwise "
                         "kernels with 2 threads run ~100x slower, which would flatter the reference)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timesteps", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--p", type=int, default=2)
    ap.add_argument("--lava-budget", type=float, default=120.0, help="seconds of Lava per net and T")
    ap.add_argument("--no-lava", action="store_true")
    ap.add_argument("--quick", action="store_true", help="batch 32, 1 repeat, Lava budget 30 s")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.repeats, args.lava_budget = min(args.batch, 32), 1, min(args.lava_budget, 30.0)
    torch.set_num_threads(args.threads)

    from na_deploy.hw_targets.loihi2 import TARGET

    print(f"load at start (1/5/15 min): {load()}  cores {os.cpu_count()}  torch threads {torch.get_num_threads()}"
          f"  batch {args.batch}  repeats {args.repeats}  p {args.p}  torch {torch.__version__}")
    rows, notes, refs = [], [], []
    rng = np.random.default_rng(0)
    for name, ch, size in NETS:
        model, fnet = build(name, ch, size, args.p)
        x = rng.integers(0, 256, size=(args.batch, ch, size, size)).astype(np.uint8)
        xf = torch.from_numpy(x.astype(np.float32) / 255.0)
        for T in args.timesteps:
            inet = TARGET.to_fixed_point(fnet, max_timesteps=T)
            run_ref = lambda: TARGET.reference_simulate(inet, x, T, device="cpu", batch_size=args.batch)  # noqa: E731
            trace = run_ref()  # warm-up
            ann_passes(model, xf, 1)()
            t_ref, t_ann = time_pair(run_ref, ann_passes(model, xf, T), args.repeats)
            B = args.batch
            ratio = t_ref / t_ann
            rate = np.mean([float(v.mean()) for v in trace.spike_counts.values()]) / T
            rows.append((name, size, T, t_ref / B, t_ann / B, ratio, rate))
            refs.append((name, T, inet, x, trace, t_ref / B))
            f32, f64, i32, i64 = plan_dtypes(inet, T)
            tot, cats, loop_calls = profile_reference(run_ref)
            t_ann_ops = ann_ops_floor(model, xf, T)
            by_op = op_breakdown(run_ref)
            probe, p_whole, p_chunk = locality_probe(inet, T, args.batch, max(2, args.repeats))
            n_ann_mods = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())
            parts = ", ".join(f"{k} {v / tot:.0%}" for k, v in sorted(cats.items(), key=lambda kv: -kv[1]))
            op_times = ", ".join(f"{k} x{n} {v:.2f} s" for k, (n, v) in sorted(by_op.items(), key=lambda kv: -kv[1][1]))
            notes.append(f"{name} T={T}: ratio {ratio:.2f}x {'(goal met)' if ratio <= 1.5 else '(goal NOT met)'}; "
                         f"profiled reference {tot:.2f} s = {parts}.\n"
                         f"    ref ops {cats.get('ops (torch conv/dense/pool)', 0):.2f} s vs ANN conv/linear/pool "
                         f"modules {t_ann_ops:.2f} s (of {t_ann:.2f} s for T passes); synapse ops in float32 {f32}, "
                         f"float64 {f64}; integer state int32 {i32} nodes, int64 {i64}; IF loop "
                         f"{len(inet.nodes)} nodes x T={T} = {loop_calls} fire_and_reset calls\n"
                         f"    ref ops by IR op type (cast + op, one unprofiled run): "
                         + op_times
                         + f"; the ANN has {n_ann_mods} conv/linear modules and no relay/skip Identity synapses\n"
                         f"    locality: conv {probe} on one (T*B = {T * args.batch}) batch {p_whole:.3f} s vs in {T} "
                         f"chunks of {args.batch} {p_chunk:.3f} s ({p_whole / p_chunk:.2f}x)")
            print(f"  measured {name} T={T}: reference {t_ref:.2f} s, ANN x{T} {t_ann:.2f} s per batch of {B} "
                  f"(load {load()})", flush=True)

    print("\nreference vs T float32 ANN passes (same batch, same threads; goal ratio <= 1.5x)")
    print(f"{'net':<12}{'input':>7}{'T':>4}{'ref s/img':>12}{'ANN xT s/img':>14}{'ratio':>8}{'goal':>6}{'rate':>7}")
    for name, size, T, r, a, ratio, rate in rows:
        print(f"{name:<12}{f'{size}x{size}':>7}{T:>4}{r:>12.5f}{a:>14.5f}{ratio:>7.2f}x"
              f"{'met' if ratio <= 1.5 else 'no':>6}{rate:>7.3f}")
    print("(rate: mean spikes per neuron per step)")
    print("\nwhat the reference spends its time on (cProfile of one run, shares of its wall time):")
    for n in notes:
        print("  " + n)

    if not args.no_lava:
        print(f"\nLava (Loihi2SimCfg fixed_pt) seconds per sample, 1 sample, budget {args.lava_budget:.0f} s "
              "per net and T; goal: reference >= 1000x faster")
        print(f"{'net':<12}{'T':>4}{'Lava s/sample':>15}{'steady s':>10}{'ref s/img':>11}{'Lava/ref':>10}"
              f"{'steady/ref':>12}  detail")
        backend_name = None
        for name, T, inet, x, trace, ref_s in refs:
            try:
                if backend_name is None:
                    backend_name = type(TARGET.backend(net=inet)).__name__
                r = lava_per_sample(inet, x[:1], T, args.lava_budget, trace)
            except Exception as e:  # noqa: BLE001 - a benchmark prints what went wrong and goes on
                print(f"{name:<12}{T:>4}  failed: {type(e).__name__}: {str(e).splitlines()[0][:150]}")
                continue
            if r["finished"]:
                detail = (f"measured: build {r['build_s']:.1f} s, compile+1st step {r['first_s']:.1f} s, "
                          f"{r['slot']} steps at {r['per_step_s'] * 1e3:.0f} ms; bit-exact vs reference: {r['exact']}")
            else:
                detail = (f"skipped: estimate from {r['steps_done']} of {r['slot']} steps (build {r['build_s']:.1f} s, "
                          f"compile+1st step {r['first_s']:.1f} s, {r['per_step_s']:.2f} s/step)")
            steady = r["per_step_s"] * r["slot"]  # one sample's steps in a long runtime (no build / compile)
            print(f"{name:<12}{T:>4}{r['seconds']:>15.1f}{steady:>10.2f}{ref_s:>11.5f}{r['seconds'] / ref_s:>9.0f}x"
                  f"{steady / ref_s:>11.0f}x  {detail}", flush=True)
        print(f"(backend {backend_name}; Lava time per sample includes building and compiling the graph for that "
              "sample, as `backend.run` on 1 sample does; steady = steps per sample x measured s/step, i.e. a sample "
              "in a long multi-sample runtime)")
    print(f"\nload at end (1/5/15 min): {load()}")


if __name__ == "__main__":
    main()
