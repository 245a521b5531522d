"""The deliberately simple integer reference: the IntNet semantics of `na_deploy.ir` written out literally.

numpy int64 only, one sample at a time, an explicit loop over *global pipelined* time steps (C3): every
synaptic hop takes one step, node m lives in its window [d_m + 1, d_m + T] (pre-charged at its start,
held outside it), spikes are counted over the window, and the 24-bit membrane wraps like the hardware's
(never reached in a net that passes `check_fit`). Used only by tests, to prove the fast vectorised
reference (`reference.py`, unpipelined) and the Lava backend exact. Do not optimise this file.
"""
from __future__ import annotations

import numpy as np

from na_deploy.ir import INPUT_NAME, AvgPool2d, Conv2d, Dense, Identity, IntNet
from na_deploy.protocols import Trace


def shift(y: np.ndarray, e: int) -> np.ndarray:
    """y * 2**e for e >= 0; arithmetic right shift (floor) for e < 0."""
    return y << e if e >= 0 else y >> (-e)


def wrap(v: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap of v to `bits` signed bits."""
    half = 1 << (bits - 1)
    return ((v + half) & ((1 << bits) - 1)) - half


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


def slow_reference_simulate(net: IntNet, inputs: np.ndarray, timesteps: int, membrane_bits: int = 24) -> Trace:
    """Simulate `net` on integer `inputs` (B, *input_shape) for T = `timesteps`, pipelined, one sample at a time."""
    T = int(timesteps)
    inputs = np.asarray(inputs).astype(np.int64)
    depth = net.depths()
    D = depth[net.readout.name]
    counts = {n.name: np.zeros((len(inputs), *n.shape), dtype=np.int64) for n in net.nodes}
    readout = np.zeros((len(inputs), *net.readout.shape), dtype=np.int64)
    for b, x in enumerate(inputs):
        # payload emitted by each node at the previous global step (what its targets receive now)
        prev = {INPUT_NAME: np.zeros(net.input.shape, dtype=np.int64)}
        for n in net.all_nodes():
            prev[n.name] = np.zeros(n.shape, dtype=np.int64)
        v = {n.name: np.zeros(n.shape, dtype=np.int64) for n in net.all_nodes()}
        for t in range(1, T + D + 1):
            now = {INPUT_NAME: x if 1 <= t <= T else np.zeros_like(x)}
            for n in net.all_nodes():
                d = depth[n.name]
                now[n.name] = np.zeros(n.shape, dtype=np.int64)
                if not (d + 1 <= t <= d + T):
                    continue  # held outside its window: no bias, no integration, no spikes
                current = np.zeros(n.shape, dtype=np.int64)
                for syn in n.inputs:
                    current += shift(int_op(syn.op, prev[syn.source]), syn.exponent)
                bias = n.bias.reshape((-1,) + (1,) * (len(n.shape) - 1))
                if n is net.readout:
                    if t == d + 1:
                        v[n.name][...] = 0
                    v[n.name] = wrap(v[n.name] + current + bias, membrane_bits)
                    continue
                if t == d + 1:
                    v[n.name][...] = n.precharge
                vv = wrap(v[n.name] + current + bias, membrane_bits)
                v[n.name], z = n.neuron.fire_and_reset(vv, n.threshold)
                z = np.asarray(z).astype(np.int64)
                now[n.name] = z
                counts[n.name][b] += z
            prev = now
        readout[b] = v[net.readout.name]
    return Trace(timesteps=T, spike_counts=counts, readout=readout)
