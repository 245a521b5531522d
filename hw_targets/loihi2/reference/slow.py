"""The deliberately simple integer reference: the IntNet semantics of `na_deploy.ir` written out literally.

numpy int64 only, one sample at a time, an explicit loop over *global pipelined* time steps (C3): every
synaptic hop takes one step, node m lives in its window (pre-charged at its start, held outside it; the starts
are the IR's `na_deploy.ir.timing.window_starts`), spikes are counted over the window, and the 24-bit membrane
wraps like the hardware's (`na_deploy.integer.wrap_signed`; never reached in a net that passes `check_fit`).
An "accumulate" node integrates over its window without firing and fires in the T steps after it, so its
consumers' windows start T steps later. Two-stage offset calibration runs two pipelined passes per sample
(stage 1: rho steps; stage 2: T steps).
Used only by tests, to prove the fast vectorised reference (`reference/fast.py`, unpipelined) and the Lava
backends exact. Do not optimise this file.
"""
from __future__ import annotations

import numpy as np

from na_deploy.integer import shift, wrap_signed
from na_deploy.ir import INPUT_NAME, AvgPool2d, Conv2d, Dense, Identity, IntNet
from na_deploy.ir.offset_calibration import offset_start
from na_deploy.ir.timing import check_offset_fits, offset_steps, window_starts
from na_deploy.protocols import Trace


def int_op(op, x: np.ndarray) -> np.ndarray:
    """Apply one IR op to one sample's int64 payload x (source shape) with integer weights."""
    x = x.astype(np.int64)
    if isinstance(op, Dense):
        return op.weight.astype(np.int64) @ x.reshape(-1)
    if isinstance(op, Identity):
        return int(op.weight) * x
    if isinstance(op, AvgPool2d):
        c, h, w = x.shape
        (kh, kw), (sh, sw) = op.kernel, op.stride
        ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
        out = np.zeros((c, ho, wo), dtype=np.int64)
        for y in range(ho):
            for xx in range(wo):
                out[:, y, xx] = x[:, y * sh:y * sh + kh, xx * sw:xx * sw + kw].sum(axis=(1, 2))
        return int(op.weight) * out
    if isinstance(op, Conv2d):
        c, h, w = x.shape
        wgt = op.weight.astype(np.int64)
        cout, cin_g, kh, kw = wgt.shape
        (sh, sw), (ph, pw), g = op.stride, op.padding, op.groups
        xp = np.zeros((c, h + 2 * ph, w + 2 * pw), dtype=np.int64)
        xp[:, ph:ph + h, pw:pw + w] = x
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        out = np.zeros((cout, ho, wo), dtype=np.int64)
        cout_g = cout // g
        for o in range(cout):
            grp = o // cout_g
            xs = xp[grp * cin_g:(grp + 1) * cin_g]
            for y in range(ho):
                for xx in range(wo):
                    patch = xs[:, y * sh:y * sh + kh, xx * sw:xx * sw + kw]
                    out[o, y, xx] = int((patch * wgt[o]).sum())
        return out
    raise TypeError(f"unknown op {type(op).__name__}")


def _step_node(n, t: int, s: int, T: int, v: dict, cwin: dict, current, bits: int, pc) -> np.ndarray:
    """One global step t of neuron node n whose window starts at s; returns its spikes z (int64)."""
    zero = np.zeros(n.shape, dtype=np.int64)
    if n.neuron.windowed:  # accumulate [s, s+T-1] (no compare), then fire [s+T, s+2T-1] (no integration)
        if t == s:
            v[n.name] = np.broadcast_to(pc, n.shape).astype(np.int64).copy()
        if s <= t < s + T:
            v[n.name] = wrap_signed(v[n.name] + current(), bits)
            return zero
        if s + T <= t < s + 2 * T:
            v[n.name], z = n.neuron.fire_and_reset(v[n.name], n.threshold)
            return np.asarray(z).astype(np.int64)
        return zero
    if not (s <= t < s + T):
        return zero  # held outside its window: no bias, no integration, no spikes
    if t == s:
        v[n.name] = np.broadcast_to(pc, n.shape).astype(np.int64).copy()
        cwin[n.name] = np.zeros(n.shape, dtype=np.int64)
    vv = wrap_signed(v[n.name] + current(), bits)
    v[n.name], z = n.neuron.fire_and_reset(vv, n.threshold, cwin[n.name]) if n.neuron.stateful else \
        n.neuron.fire_and_reset(vv, n.threshold)
    z = np.asarray(z).astype(np.int64)
    cwin[n.name] = cwin[n.name] + z
    return z


def _run_sample(net: IntNet, x: np.ndarray, T: int, bits: int, pcs: dict | None = None):
    """One sample, pipelined: (counts, events, readout, final membranes) per node."""
    start = {name: s + 1 for name, s in window_starts(net, T).items()}  # each window's first global step (1-based)
    R = net.readout
    end = start[R.name] + T - 1
    prev = {INPUT_NAME: np.zeros(net.input.shape, dtype=np.int64)}
    for n in net.all_nodes():
        prev[n.name] = np.zeros(n.shape, dtype=np.int64)
    v = {n.name: np.zeros(n.shape, dtype=np.int64) for n in net.all_nodes()}
    counts = {n.name: np.zeros(n.shape, dtype=np.int64) for n in net.nodes}
    events = {n.name: np.zeros(n.shape, dtype=np.int64) for n in net.nodes}
    cwin: dict = {}
    for t in range(1, end + 1):
        # payload emitted by each node at the previous global step (what its targets receive now)
        now = {INPUT_NAME: x if 1 <= t <= T else np.zeros_like(x)}
        for n in net.all_nodes():
            def current(n=n):
                cur = np.zeros(n.shape, dtype=np.int64)
                for syn in n.inputs:
                    cur += shift(int_op(syn.op, prev[syn.source]), syn.exponent)
                return cur + n.bias.reshape((-1,) + (1,) * (len(n.shape) - 1))

            s = start[n.name]
            if n is R:
                now[n.name] = np.zeros(n.shape, dtype=np.int64)
                if s <= t < s + T:
                    v[n.name] = wrap_signed((v[n.name] if t > s else 0) + current(), bits)
                continue
            pc = n.precharge if pcs is None else pcs[n.name]
            now[n.name] = _step_node(n, t, s, T, v, cwin, current, bits, pc)
            counts[n.name] += now[n.name]
            events[n.name] += np.abs(now[n.name])
        prev = now
    return counts, events, v[R.name], v


def slow_reference_simulate(net: IntNet, inputs: np.ndarray, timesteps: int, membrane_bits: int = 24) -> Trace:
    """Simulate `net` on integer `inputs` (B, *input_shape) for T = `timesteps`, pipelined, one sample at a time.
    Signed models: spike_counts is the net count, event_counts the messages (|z|). Offset calibration (meta
    offset_steps = rho > 0): stage 1 is a pipelined rho-step run from the pre-charges; each neuron's residual
    membrane at its window end gives o = clip(floor(v / th), -1, 1); stage 2 is the T-step run from pc + o*th
    (its counts and readout are the result; event_counts add stage 1's spikes)."""
    T = int(timesteps)
    rho = offset_steps(net)
    check_offset_fits(rho, T)
    inputs = np.asarray(inputs).astype(np.int64)
    counts = {n.name: np.zeros((len(inputs), *n.shape), dtype=np.int64) for n in net.nodes}
    events = {n.name: np.zeros((len(inputs), *n.shape), dtype=np.int64) for n in net.nodes}
    readout = np.zeros((len(inputs), *net.readout.shape), dtype=np.int64)
    for b, x in enumerate(inputs):
        pcs, first = None, None
        if rho:
            _, first, _, v1 = _run_sample(net, x, rho, membrane_bits)
            pcs = {n.name: offset_start(v1[n.name], n.precharge, n.threshold) for n in net.nodes}
        c, e, readout[b], _ = _run_sample(net, x, T, membrane_bits, pcs)
        for k in counts:
            counts[k][b] = c[k]
            events[k][b] = e[k] + (first[k] if first else 0)
    signed = any(n.neuron.signed for n in net.nodes)
    return Trace(timesteps=T, spike_counts=counts, readout=readout,
                 event_counts=events if (rho or signed) else None)
