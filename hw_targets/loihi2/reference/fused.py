"""Fused integer steps of the fast reference on the CPU (issue 23): the net runs chunk of steps by chunk of steps,
and in each chunk every neuron node is one compiled loop over its samples, steps and neurons.

The numpy engine runs each node over its whole window as separate numpy passes over (T, B, *shape) arrays: rint +
cast + shift of every synaptic current, their sum + bias, per step v <- wrap(v + I(t)), compare, reset, then a
sum of z per requested T. Here one loop does all of it on one row of neurons at a time (which stays in cache),
reading the float op outputs and writing the spikes straight as the float32 payload its consumers' ops read:

    I(t) = base + sum_k shift(rint(g_k y_k(t)), e_k)     base = bias (+ the constant input current, once: C4)
    v <- wrap(v + I(t)); (z, v) <- the node's model step;  c <- c + z;  ev <- ev + |z|

with the integers of `na_deploy.ir.neuron` (contract C2, "Neuron modes"): "subtract" z = [v >= th], v - z th;
"zero" z = [v > th], v <- 0 where z; "negative" +1 at v >= th (v - th), -1 at v < 0 with c > 0 (v + th), c the
window's running net count. y_k is the op's output (gain g_k = 1), or for an Identity synapse (relays, skips)
the source's payload with the op's weight as g_k. The wrap is two's complement to the state width, a no-op mask
where the static bound rules it out. The loop computes in int64 and keeps v in int32 where fit.py's bound allows
(as the numpy engine): the same integers.

Chunks of steps (C3, unpipelined): node m at steps t0..t1-1 needs only its sources' payloads at the same steps,
so each chunk runs the whole net in topological order; a payload lives for one chunk (its buffer is reused), the
state of every node (v, c, ev) for the window. Counts are read where a chunk ends at a requested T. Nets with a
windowed model ("accumulate") and unknown models keep the numpy passes (`supports`).

The loops are compiled by numba, a dependency of the core (pyproject.toml; `accelerator()` says which engine
runs): with NA_DEPLOY_FUSED=0 in the environment, inside `disabled()`, or where numba does not import, the numpy
passes run, with the same integers (tests/test_reference_fused.py). The loops release the GIL and run on slices of
the batch in `torch.get_num_threads()` threads. Their machine code is cached on disk (`_jit`): a process that
finds it loads it instead of compiling the loops again (docs/results.md, "Fused integer steps", has the seconds).
"""
from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from na_deploy.ir import INPUT_NAME, Identity

MODEL_CODES = {"subtract": 0, "zero": 1, "negative": 2}
CHUNK_BYTES = 4 << 20  # the largest node's float32 payload per chunk (steps x samples): ops and loops in cache
PIECE_BYTES = 1 << 18  # the largest node's int32 membrane per piece of samples: state buffers reused, in cache
_state: dict = {"on": os.environ.get("NA_DEPLOY_FUSED", "1") != "0", "numba": False, "kernel": None, "pool": None,
                "pool_key": (0, 0)}


def _numba():
    """The numba module, imported at the first simulation (not with this module: it takes a second), or None
    where it is not installed or does not import (e.g. built for another numpy)."""
    if _state["numba"] is False:
        try:
            import numba
        except ImportError:
            numba = None
        _state["numba"] = numba
    return _state["numba"]


def available() -> bool:
    """numba is installed and imports: the fused loops can run."""
    return _numba() is not None


def accelerator() -> str:
    """The integer engine the CPU reference uses now: "numba <version>" (fused loops) or "numpy" (passes)."""
    return f"numba {_numba().__version__}" if enabled() else "numpy"


def enabled() -> bool:
    return _state["on"] and available()


@contextlib.contextmanager
def disabled():
    """The numpy passes instead of the fused loops for the duration (tests compare both)."""
    old = _state["on"]
    _state["on"] = False
    try:
        yield
    finally:
        _state["on"] = old


def supports(plans: list) -> bool:
    """True when the fused loops can run this net: every neuron model known here and none windowed (an
    "accumulate" net, whose consumers need a node's whole window first, keeps the numpy passes)."""
    neurons = [p.node.neuron for p in plans if not p.is_readout]
    return bool(neurons) and all(m.name in MODEL_CODES and not m.windowed for m in neurons)


def _kernel() -> Callable:
    """`_steps` compiled by numba at its first use, with the row loops it calls (`_jit`)."""
    if _state["kernel"] is None:
        numba = _numba()
        for name in ("_row_rest", "_row_step"):  # _steps finds its callees compiled, as module globals
            fn = globals()[name]
            globals()[name] = _jit(numba, getattr(fn, "py_func", fn))  # py_func: already compiled once
        _state["kernel"] = _jit(numba, _steps)
    return _state["kernel"]


def _jit(numba, fn: Callable) -> Callable:
    """fn compiled by numba without the GIL, its machine code cached on disk where numba finds a writable place
    (NUMBA_CACHE_DIR, else __pycache__ beside this file, else the user's cache folder), so that only the first
    process compiles each signature; where none is writable, compiled in every process (same code, no error)."""
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available for file ..."
        return numba.njit(nogil=True)(fn)


def _row_rest(cur, base_row, ys, nsyn, gains, lsh, rsh, t, b):
    """cur <- base + the current of synapses 1..nsyn-1 for one row of neurons (nodes with several inputs)."""
    for n in range(cur.shape[0]):
        cur[n] = base_row[n]
    for k in range(1, nsyn):
        y, g, lk, rk = ys[k][t, b], gains[k], lsh[k], rsh[k]
        for n in range(cur.shape[0]):
            cur[n] += (np.int64(np.rint(y[n] * g)) << lk) >> rk


def _row_step(model, y, g, lk, rk, add, v, c, ev, z, th, half, mask):
    """One step of one row of neurons: I = shift(rint(y g)) + add; v <- wrap(v + I); the model's fire and
    reset; z, c (net count) and ev (messages, "negative" only) updated. shift(i, e) = (i << lk) >> rk with
    lk = max(e, 0), rk = max(-e, 0): i << e or the arithmetic (floor) i >> -e."""
    if model == 0:  # subtract: z = [v >= th], v - z th
        for n in range(v.shape[0]):
            w = ((v[n] + add[n] + ((np.int64(np.rint(y[n] * g)) << lk) >> rk) + half) & mask) - half
            s = np.int64(w >= th)
            v[n] = w - s * th
            z[n] = s
            c[n] += s
    elif model == 1:  # zero: z = [v > th], v <- 0 where z
        for n in range(v.shape[0]):
            w = ((v[n] + add[n] + ((np.int64(np.rint(y[n] * g)) << lk) >> rk) + half) & mask) - half
            s = np.int64(w > th)
            v[n] = w * (1 - s)
            z[n] = s
            c[n] += s
    elif model == 2:  # negative: +1 at v >= th (v - th), -1 at v < 0 with c > 0 (v + th)
        for n in range(v.shape[0]):
            w = ((v[n] + add[n] + ((np.int64(np.rint(y[n] * g)) << lk) >> rk) + half) & mask) - half
            pos = np.int64(w >= th)
            neg = np.int64(w < 0) * np.int64(c[n] > 0)
            v[n] = w - pos * th + neg * th
            z[n] = pos - neg
            c[n] += pos - neg
            ev[n] += pos + neg


def _steps(model, ys, nsyn, gains, lsh, rsh, base, v, c, ev, z, th, half, mask, b0, b1):
    """Steps 0..len(z)-1 of a chunk for samples b0..b1-1: ys (steps, B, N) float op outputs (or payloads, times
    gains), z (steps, B, N) float32 payload out, v / c / ev (B, N); nsyn = 0: a zero row stands for y."""
    cur = np.empty(v.shape[1], np.int64)
    zero = np.zeros(v.shape[1], ys[0].dtype)
    for b in range(b0, b1):
        base_row = base[0] if base.shape[0] == 1 else base[b]
        add = cur if nsyn > 1 else base_row
        for t in range(z.shape[0]):
            if nsyn > 1:
                _row_rest(cur, base_row, ys, nsyn, gains, lsh, rsh, t, b)
            y = ys[0][t, b] if nsyn > 0 else zero
            _row_step(model, y, gains[0], lsh[0], rsh[0], add, v[b], c[b], ev[b], z[t, b], th, half, mask)


def _pool(workers: int) -> Optional[ThreadPoolExecutor]:
    """The process's worker threads for the loops (made again when the count changes, and in a forked child,
    which has none of its parent's threads); None for none."""
    if workers < 1:
        return None
    if _state["pool_key"] != (workers, os.getpid()):
        if _state["pool"] is not None and _state["pool_key"][1] == os.getpid():
            _state["pool"].shutdown(wait=True)
        _state["pool"] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="na-deploy-fused")
        _state["pool_key"] = (workers, os.getpid())
    return _state["pool"]


def _run_split(fn: Callable, args: tuple, batch: int) -> None:
    """fn(*args, b0, b1) on slices of the batch, one per torch thread (the loops release the GIL): the calling
    thread runs the first slice, worker threads the others."""
    threads = max(1, min(torch.get_num_threads(), batch))
    pool = _pool(threads - 1)
    if pool is None:
        fn(*args, 0, batch)
        return
    edges = [batch * i // threads for i in range(threads + 1)]
    futures = [pool.submit(fn, *args, edges[i], edges[i + 1]) for i in range(1, threads)]
    fn(*args, edges[0], edges[1])
    for f in futures:
        f.result()


def _chunks(T: int, Ts: Sequence[int], width: int):
    """[t0, t1) chunks of at most `width` steps covering 0..T-1, each ending at the latest at the next T in Ts
    (counts are read there); `read` says that t1 is one of Ts."""
    t0 = 0
    for end in sorted(set(Ts) | {T}):
        while t0 < end:
            t1 = min(end, t0 + width)
            yield t0, t1, t1 == end and t1 in Ts
            t0 = t1


def _base(plan, x: np.ndarray, apply: Callable, B: int, N: int) -> np.ndarray:
    """bias + the shifted currents of the constant input synapses: (1, N) or (B, N) int64, once per window (C4)."""
    base = np.asarray(plan.bias, dtype=np.int64).reshape(-1, 1)
    base = np.broadcast_to(base, (base.shape[0], N // base.shape[0])).reshape(1, N)
    for s in plan.synapses:
        if s.source == INPUT_NAME:
            base = base + _shifted(apply(s, x), s.exponent).reshape(B, N)
    return np.ascontiguousarray(base)


def _shifted(y: np.ndarray, e: int) -> np.ndarray:
    """shift(rint(y), e) in int64: y << e, or the arithmetic (floor) y >> -e."""
    i = np.rint(y).astype(np.int64)
    return i << e if e >= 0 else i >> -e


def _chunk_inputs(varying: list, payloads: dict, apply: Callable, steps: int, B: int, N: int) -> tuple:
    """(ys, gains) of one chunk of steps for the loop: per time-varying synapse a (steps, B, N) float array and a
    gain. An Identity synapse (relays, skips) passes its source's payload and its weight as the gain (y * g is
    the op itself, exact: z in {-1, 0, 1}, |g| within the plan dtype's exact range); any other op runs in torch
    (gain 1). One dtype for all (float64 if any synapse's plan needs it: exact either way); with no
    time-varying synapse a dummy (nsyn = 0)."""
    if not varying:
        return (np.zeros((1, 1, 1), np.float32),), np.ones(1, np.float32)
    dtype = np.float64 if any(s.dtype == torch.float64 for s, _ in varying) else np.float32
    ys, gains = [], []
    for s, op in varying:
        p = payloads[s.source]
        if isinstance(op, Identity):
            ys.append(np.ascontiguousarray(p, dtype=dtype).reshape(steps, B, N))
            gains.append(float(op.weight))
        else:
            y = apply(s, p.reshape(steps * B, *p.shape[2:]))
            ys.append(np.ascontiguousarray(y, dtype=dtype).reshape(steps, B, N))
            gains.append(1.0)
    return tuple(ys), np.array(gains, dtype=dtype)


class _Neuron:
    """One neuron node's state in a lockstep run: membrane v (int32 where fit.py's bound allows, like the numpy
    engine), net count c and messages ev (int32), its constant current `base` and its time-varying synapses."""

    def __init__(self, plan, x: np.ndarray, apply: Callable, bits: int, v0=None):
        node = plan.node
        B = x.shape[0]
        self.plan, self.shape, self.N = plan, tuple(node.shape), int(np.prod(node.shape))
        self.model, self.th = MODEL_CODES[node.neuron.name], int(node.threshold)
        self.half, self.mask = (1 << (bits - 1), (1 << bits) - 1) if plan.wrap_needed else (0, -1)
        self.base = _base(plan, x, apply, B, self.N)
        vtype = np.int32 if plan.small else np.int64
        self.v = (np.full((B, self.N), node.precharge, dtype=vtype) if v0 is None
                  else np.array(v0, dtype=vtype).reshape(B, self.N))
        self.c = np.zeros((B, self.N), np.int32)
        self.ev = np.zeros((B, self.N if node.neuron.signed else 0), np.int32)
        self.varying = [(s, syn.op) for s, syn in zip(plan.synapses, node.inputs) if s.source != INPUT_NAME]
        e = np.array([s.exponent for s, _ in self.varying] or [0], dtype=np.int64)
        self.lsh, self.rsh = np.maximum(e, 0), np.maximum(-e, 0)

    def run(self, payloads: dict, apply: Callable, z: np.ndarray) -> None:
        """The steps of one chunk: z (steps, B, *shape) float32 receives the spikes."""
        steps, B = z.shape[:2]
        ys, gains = _chunk_inputs(self.varying, payloads, apply, steps, B, self.N)
        _run_split(_kernel(), (self.model, ys, len(self.varying), gains, self.lsh, self.rsh, self.base, self.v, self.c,
                            self.ev, z.reshape(steps, B, self.N), self.th, self.half, self.mask), B)


class Lockstep:
    """What a lockstep run produced: counts[T][node], events[T][node] (signed nodes: sum |z|), readout[T]
    (B, classes) and, with keep_v, final_v[node]: int64 arrays (final_v: the state dtype), filled piece by piece
    of samples."""

    def __init__(self, Ts: Sequence[int], batch: int):
        self.batch = batch
        self.counts: dict = {t: {} for t in Ts}
        self.events: dict = {t: {} for t in Ts}
        self.readout: dict = {}
        self.final_v: dict = {}

    def put(self, table: dict, key, rows: slice, value: np.ndarray, dtype=np.int64) -> None:
        """table[key][rows] = value, into the (batch, ...) array made at the first piece."""
        if key not in table:
            table[key] = np.empty((self.batch, *value.shape[1:]), dtype)
        table[key][rows] = value


def _last_uses(plans: list) -> dict[int, list]:
    """{plan index: sources whose payload nobody after it reads}."""
    last = {}
    for i, plan in enumerate(plans):
        for s in plan.synapses:
            last[s.source] = i
    out: dict[int, list] = {}
    for src, i in last.items():
        if src != INPUT_NAME:
            out.setdefault(i, []).append(src)
    return out


def lockstep(plans: list, x: np.ndarray, Ts: Sequence[int], bits: int, apply: Callable, v0=None,
             keep_v: bool = False) -> Lockstep:
    """Every node of a per-step net (no windowed model), piece of samples by piece of samples and, in each, chunk
    of steps by chunk of steps: a chunk runs the whole net (sources first: the unpipelined dynamics of C3 only
    need the same steps of the sources). Pieces and chunks keep the largest node's payload per chunk within
    CHUNK_BYTES, so ops and loops work in cache and reuse their buffers (module doc)."""
    B = x.shape[0]
    widest = max(int(np.prod(p.node.shape)) for p in plans if not p.is_readout)
    piece = max(1, min(B, PIECE_BYTES // (4 * widest)))
    width = max(1, CHUNK_BYTES // (4 * piece * widest))
    out = Lockstep(Ts, B)
    for b0 in range(0, B, piece):
        rows = slice(b0, min(B, b0 + piece))
        _run_piece(plans, x[rows], Ts, bits, apply, None if v0 is None else {k: v[rows] for k, v in v0.items()},
                   width, out, rows, keep_v)
    return out


def _run_piece(plans: list, x: np.ndarray, Ts: Sequence[int], bits: int, apply: Callable, v0, width: int,
               out: Lockstep, rows: slice, keep_v: bool) -> None:
    """The samples `rows` of a lockstep run: every node from its start over chunks of `width` steps."""
    T, B = max(Ts), x.shape[0]
    neurons = {p.name: _Neuron(p, x, apply, bits, None if v0 is None else v0[p.name])
               for p in plans if not p.is_readout}
    (rplan,) = [p for p in plans if p.is_readout]
    rbase, rsum = _base(rplan, x, apply, B, int(np.prod(rplan.node.shape))), 0
    rvarying = [s for s in rplan.synapses if s.source != INPUT_NAME]
    release, free = _last_uses(plans), {}
    for t0, t1, read in _chunks(T, Ts, width):
        payloads = {}
        for i, plan in enumerate(plans):
            if plan.is_readout:
                rsum = rsum + rbase * (t1 - t0) + sum(_readout_current(s, payloads[s.source], apply) for s in rvarying)
            else:
                n = neurons[plan.name]
                shape = (t1 - t0, B, *n.shape)
                z = free[shape].pop() if free.get(shape) else np.empty(shape, np.float32)
                n.run(payloads, apply, z)
                payloads[plan.name] = z
            for src in release.get(i, ()):
                buf = payloads.pop(src)
                free.setdefault(buf.shape, []).append(buf)
        if read:
            _read(out, rows, neurons, rplan, rsum, t1, bits)
    for k, n in neurons.items() if keep_v else ():
        out.put(out.final_v, k, rows, n.v.reshape(B, *n.shape), n.v.dtype)


def _readout_current(s, p: np.ndarray, apply: Callable) -> np.ndarray:
    """The readout's integer current from one synapse, summed over the steps of a chunk: (B, classes) int64."""
    steps, B = p.shape[:2]
    return _shifted(apply(s, p.reshape(steps * B, *p.shape[2:])), s.exponent).reshape(steps, B, -1).sum(axis=0)


def _read(out: Lockstep, rows: slice, neurons: dict, rplan, rsum, t: int, bits: int) -> None:
    """Counts, events and the readout potential after step t (V = wrap(sum of the readout's currents))."""
    for k, n in neurons.items():
        B = n.c.shape[0]
        out.put(out.counts[t], k, rows, n.c.reshape(B, *n.shape))
        if n.ev.shape[1]:
            out.put(out.events[t], k, rows, n.ev.reshape(B, *n.shape))
    v = np.asarray(rsum, dtype=np.int64)
    if rplan.wrap_needed:
        half = 1 << (bits - 1)
        v = ((v + half) & ((1 << bits) - 1)) - half
    out.put(out.readout, t, rows, np.broadcast_to(v, (rows.stop - rows.start, v.shape[-1])))
