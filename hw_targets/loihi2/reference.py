"""The fast, bit-exact integer reference simulator of an IntNet (DESIGN C3, C5, C6).

It computes the *unpipelined* IntNet dynamics of `na_deploy.ir`, which equal the pipelined hardware run
exactly (C3: each node's window sees exactly the payloads its sources emitted in their windows):

    for each node m in topological order (all T steps at once, batched over samples):
        I_m(t) = sum_i shift(op_i(payload_i(t)), e_i) + (bias_mant << bias_exp)      t = 1..T
        v(0) = precharge;  v <- wrap24(v + I_m(t));  (v, z(t)) = neuron_m.fire_and_reset(v, threshold)
        (the node's neuron model, na_deploy.ir.neuron; "subtract": z = [v >= th], v <- v - z * th)
        spike count = sum_t z(t);  readout: V = wrap24(sum_t I_R(t))
    shift(y, e) = y << e (e >= 0) or y >> -e (arithmetic, floor; e < 0).

How it stays exact: op_i runs on (T * B, ...) tensors through `na_deploy.torch_ops.compile_op` in floating point,
with integer weights and integer payloads, so every product and every partial sum is an integer. float32 is
used for a synapse only when fit.py's static bound proves |every partial sum| <= 2**24 (float32 holds every
integer up to 2**24), else float64 (exact up to 2**53; beyond that the simulator refuses). The result is
rounded to the nearest integer (a no-op for exact sums) and cast to int64; the shifts, the bias and the IF
recurrence over T run on int64 (int32 when the bound proves it cannot overflow). The 24-bit wrap of
`reference_slow` is applied whenever the static bound does not rule it out (never, for a net that passes
`check_fit`). Reduced-precision float32 modes a caller may have switched on (bf16 / TF32 GEMM or conv) are
switched off while the reference runs. On CUDA every op runs in float64 with cuDNN off (plain im2col + GEMM
sums are exact).

Engines: on the CPU the integer steps run in numpy, in place (torch's OpenMP elementwise kernels are 10-100x
slower on a busy 2-core machine); on CUDA (or engine="torch") everything stays in torch on the device.

Because the unpipelined dynamics are causal, the first T steps of a longer run are a T-step run:
`reference_simulate_multi` runs once to max(T) and reads counts / potentials at every T asked for.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from na_deploy import checks
from na_deploy.device import resolve_device
from na_deploy.errors import IRError, SimulationError
from na_deploy.ir import INPUT_NAME, IntNet, IntReadoutNode
from na_deploy.torch_ops import compile_op
from na_deploy.protocols import Trace

from .fit import node_bound, op_interval, payload_max
from .limits import LOIHI2, Loihi2Limits

FLOAT32_EXACT = 2 ** 24
FLOAT64_EXACT = 2 ** 53
SIMULATOR = "loihi2-reference-fast"


# ---------------------------------------------------------------------------------------- checks
def max_timesteps_of(net: IntNet, limits: Loihi2Limits = LOIHI2) -> int:
    return int(net.meta.get("max_timesteps", limits.max_timesteps))


def check_timesteps(net: IntNet, timesteps: Iterable[int], limits: Loihi2Limits = LOIHI2) -> list[int]:
    """T must be an integer in [1, max_timesteps] (the T the static bound was proven for)."""
    return checks.check_timesteps(list(timesteps), max_timesteps_of(net, limits))


def check_inputs(net: IntNet, inputs, limits: Loihi2Limits = LOIHI2) -> np.ndarray:
    """(B, *input_shape) integer pixels in [0, graded_payload_max] -> int64 array."""
    return checks.check_pixels(inputs, net.input.shape, limits.graded_payload_max)


def _check_net(net) -> None:
    if not isinstance(net, IntNet):
        raise SimulationError(f"reference_simulate needs an IntNet, got {type(net).__name__}")


def check_balanced(net: IntNet) -> None:
    try:
        net.depths()
    except IRError as e:
        raise SimulationError(str(e)) from None


# ------------------------------------------------------------------------------------------ plan
class _SynapsePlan:
    """One compiled synapse: op in the narrowest exact float dtype, and its exponent."""

    def __init__(self, syn, channels: int, device: torch.device, limits: Loihi2Limits):
        lo, hi = op_interval(syn.op, payload_max(syn.source, limits), channels)
        peak = max(abs(float(lo.min())), abs(float(hi.max())))
        if peak >= FLOAT64_EXACT:
            raise SimulationError(f"synapse from {syn.source}: partial sums up to {peak:.3g} exceed 2**53; "
                                  "exact floating-point simulation is impossible (the net does not fit anyway)")
        self.dtype = torch.float32 if (peak <= FLOAT32_EXACT and device.type == "cpu") else torch.float64
        self.source = syn.source
        self.exponent = int(syn.exponent)
        self.fn = compile_op(syn.op, self.dtype, device)


class _NodePlan:
    def __init__(self, node, T: int, device: torch.device, limits: Loihi2Limits):
        self.node = node
        self.name = node.name
        self.is_readout = isinstance(node, IntReadoutNode)
        self.synapses = [_SynapsePlan(s, node.shape[0], device, limits) for s in node.inputs]
        b = node_bound(node, T, limits)
        self.wrap_needed = not (limits.state_min <= b.membrane[0] and b.membrane[1] <= limits.state_max)
        # int32 state when the bound proves every current / membrane value (and v + I) stays below 2**30
        self.small = b.max_abs() < 2 ** 30 and not self.wrap_needed
        self.bias = np.asarray(node.bias, dtype=np.int64).reshape((-1,) + (1,) * (len(node.shape) - 1))


def _wrap(v, bits: int):
    """Two's-complement wrap to `bits` signed bits (as reference_slow.wrap); numpy or torch."""
    half = 1 << (bits - 1)
    return ((v + half) & ((1 << bits) - 1)) - half


def _shift(y, e: int):
    """shift(y, e): y << e (e >= 0), y >> -e (arithmetic, floor) for e < 0; numpy or torch."""
    return y if e == 0 else (y << e if e > 0 else y >> (-e))


@contextlib.contextmanager
def _setting(obj, attr: str, value):
    """Temporarily set obj.attr = value (skipped where this torch has no such setting)."""
    if obj is None or not hasattr(obj, attr):
        yield
        return
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


@contextlib.contextmanager
def _exact_backend(device: torch.device):
    """IEEE float32/float64 arithmetic for the ops while the reference runs, whatever the caller set globally:
    float32 matmul precision "highest" (no bf16/TF32 GEMMs), oneDNN conv / matmul in IEEE fp32 on the CPU; on
    CUDA no cuDNN (no Winograd/FFT algorithms, no TF32): the native im2col + GEMM convolution is exact."""
    old_mm = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    mk = torch.backends.mkldnn
    try:
        with contextlib.ExitStack() as stack:
            for sub in ("conv", "matmul"):
                stack.enter_context(_setting(getattr(mk, sub, None), "fp32_precision", "ieee"))
            if device.type == "cuda":
                stack.enter_context(_setting(torch.backends.cuda.matmul, "allow_tf32", False))
                stack.enter_context(torch.backends.cudnn.flags(enabled=False, allow_tf32=False))
            yield
    finally:
        torch.set_float32_matmul_precision(old_mm)


# ----------------------------------------------------------------------------- array backends
class _NumpyBackend:
    """CPU: the ops run in torch (threaded GEMM / conv), every integer step in numpy (single-threaded,
    in place; elementwise torch ops with OpenMP threads are slow on a busy 2-core machine)."""

    _np_float = {torch.float32: np.float32, torch.float64: np.float64}

    def __init__(self, device: torch.device):
        self.device = device

    def inputs(self, x: np.ndarray):
        return x

    def apply(self, syn: _SynapsePlan, a: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=self._np_float[syn.dtype]))
        return syn.fn(t).numpy()

    def to_int(self, y: np.ndarray, small: bool) -> np.ndarray:
        return np.rint(y, out=y).astype(np.int32 if small else np.int64)

    def bias(self, plan: _NodePlan, small: bool):
        return plan.bias.astype(np.int32 if small else np.int64)

    def integrate(self, plan: _NodePlan, cur: np.ndarray, T: int, bits: int) -> np.ndarray:
        node = plan.node
        v = np.full(cur.shape[1:], node.precharge, dtype=cur.dtype)
        z_all = np.empty((T, *cur.shape[1:]), dtype=bool)
        th = cur.dtype.type(node.threshold)
        for t in range(T):
            np.add(v, cur[t if cur.shape[0] > 1 else 0], out=v)
            if plan.wrap_needed:
                v = _wrap(v, bits)
            node.neuron.fire_and_reset_inplace(v, th, z_all[t])
        return z_all

    def cumsum(self, a):
        return np.cumsum(a, axis=0, dtype=np.int64)

    def count(self, z):
        return z.sum(axis=0, dtype=np.int64)

    def numpy(self, a) -> np.ndarray:
        return np.asarray(a, dtype=np.int64)


class _TorchBackend:
    """CUDA: everything stays on the device in torch."""

    def __init__(self, device: torch.device):
        self.device = device

    def inputs(self, x: np.ndarray):
        return torch.as_tensor(x, device=self.device)

    def apply(self, syn: _SynapsePlan, a: torch.Tensor) -> torch.Tensor:
        return syn.fn(a.to(syn.dtype))

    def to_int(self, y: torch.Tensor, small: bool) -> torch.Tensor:
        return torch.round(y).to(torch.int32 if small else torch.int64)

    def bias(self, plan: _NodePlan, small: bool):
        return torch.as_tensor(plan.bias, dtype=torch.int32 if small else torch.int64, device=self.device)

    def integrate(self, plan: _NodePlan, cur: torch.Tensor, T: int, bits: int) -> torch.Tensor:
        node = plan.node
        v = torch.full(cur.shape[1:], node.precharge, dtype=cur.dtype, device=cur.device)
        z_all = torch.empty((T, *cur.shape[1:]), dtype=torch.bool, device=cur.device)
        for t in range(T):
            v = v + cur[t if cur.shape[0] > 1 else 0]
            if plan.wrap_needed:
                v = _wrap(v, bits)
            node.neuron.fire_and_reset_inplace(v, node.threshold, z_all[t])
        return z_all

    def cumsum(self, a):
        return torch.cumsum(a.to(torch.int64), dim=0)

    def count(self, z):
        return z.sum(dim=0, dtype=torch.int64)

    def numpy(self, a) -> np.ndarray:
        return a.cpu().numpy().astype(np.int64)


ENGINES = ("auto", "numpy", "torch")


def _backend(device: torch.device, engine: str = "auto"):
    """numpy for the integer steps on CPU ("auto" there), torch on any other device (or when asked)."""
    if engine not in ENGINES:
        raise SimulationError(f"engine {engine!r} unknown; allowed: {', '.join(ENGINES)}")
    if engine == "numpy" and device.type != "cpu":
        raise SimulationError(f"engine 'numpy' runs on the CPU only, device is {device}")
    if engine == "torch" or device.type != "cpu":
        return _TorchBackend(device)
    return _NumpyBackend(device)


# ------------------------------------------------------------------------------------------- core
def _node_current(plan: _NodePlan, payloads: dict, T: int, B: int, be):
    """I_m for all steps: (T, B, *shape) integers, or (1, B, *shape) when every input is the constant pixel
    payload (C4: the image drives the first layer with the same value every step). int32 when the static
    bound allows, else int64."""
    const = all(s.source == INPUT_NAME for s in plan.synapses)
    total = None
    for s in plan.synapses:
        p = payloads[s.source]
        if s.source == INPUT_NAME:  # (B, ...) constant over time
            y = be.to_int(be.apply(s, p), plan.small)[None]
            if not const:
                y = y.repeat(T, 0) if isinstance(y, np.ndarray) else y.expand(T, *y.shape[1:]).clone()
        else:
            y = be.apply(s, p.reshape(T * B, *p.shape[2:]))
            y = be.to_int(y, plan.small).reshape(T, B, *y.shape[1:])
        y = _shift(y, s.exponent)
        if total is None:
            total = y
        else:
            total += y
    total += be.bias(plan, plan.small)
    return total


def _readout_potentials(plan: _NodePlan, current, Ts: Sequence[int], bits: int, be) -> dict:
    """V_T = wrap24(sum_{t <= T} I_R(t)) for every T asked (wrapping the running sum each step, as the
    hardware does, equals wrapping the total: the wrap is a ring homomorphism mod 2**24)."""
    out = {}
    cs = be.cumsum(current)
    for T in Ts:
        v = cs[0] * T if current.shape[0] == 1 else cs[T - 1]
        out[T] = be.numpy(_wrap(v, bits) if plan.wrap_needed else v)
    return out


def _counts_at(z, Ts: Sequence[int], be) -> dict:
    """Spike counts over the first T steps, for each T (sorted ascending)."""
    out, run, prev = {}, None, 0
    for T in Ts:
        part = be.count(z[prev:T])
        run = part if run is None else run + part
        out[T] = be.numpy(run)
        prev = T
    return out


def _consumers(net: IntNet) -> dict[str, int]:
    n = {INPUT_NAME: 0, **{m.name: 0 for m in net.all_nodes()}}
    for m in net.all_nodes():
        for s in m.inputs:
            n[s.source] += 1
    return n


def _simulate_chunk(net: IntNet, plans: list, x: np.ndarray, Ts: Sequence[int], limits: Loihi2Limits, be):
    T, B = max(Ts), x.shape[0]
    payloads = {INPUT_NAME: be.inputs(x)}
    left = _consumers(net)
    counts: dict[int, dict] = {t: {} for t in Ts}
    readout = None
    for plan in plans:
        current = _node_current(plan, payloads, T, B, be)
        for s in plan.node.inputs:  # free payloads nobody else needs
            left[s.source] -= 1
            if left[s.source] == 0 and s.source != INPUT_NAME:
                del payloads[s.source]
        if plan.is_readout:
            readout = _readout_potentials(plan, current, Ts, limits.state_bits, be)
            continue
        z = be.integrate(plan, current, T, limits.state_bits)
        del current
        for t, c in _counts_at(z, Ts, be).items():
            counts[t][plan.name] = c
        payloads[plan.name] = z
    return counts, readout


def _auto_batch(net: IntNet, T: int, budget_bytes: float = 512e6) -> int:
    """Samples per chunk so that the largest (T, B, node) int64 tensor stays within a memory budget."""
    biggest = max(int(np.prod(n.shape)) for n in net.all_nodes())
    return max(1, int(budget_bytes // (8 * 3 * T * biggest)))


def reference_simulate_multi(net: IntNet, inputs, timesteps_list: Iterable[int], *,
                             device: Optional[str | torch.device] = None, batch_size: Optional[int] = None,
                             progress: bool = False, limits: Loihi2Limits = LOIHI2,
                             engine: str = "auto") -> dict[int, Trace]:
    """One run to max(T); a `Trace` for every T in `timesteps_list` (equal to a T-step run: causality).

    device: where the ops run (default cuda if available, else cpu); batch_size: samples per chunk (default:
    a memory budget); engine: "auto" | "numpy" | "torch" for the integer steps (auto: numpy on CPU).

    inputs: (B, *input_shape) integer pixels 0..255. Trace.spike_counts[node]: (B, *shape) int64 spikes over
    the node's window; Trace.readout: (B, classes) int64 final readout potentials."""
    _check_net(net)
    Ts = check_timesteps(net, timesteps_list, limits)
    x_np = check_inputs(net, inputs, limits)
    check_balanced(net)
    dev = resolve_device(device)
    Tmax = Ts[-1]
    plans = [_NodePlan(n, Tmax, dev, limits) for n in net.all_nodes()]
    bs = int(batch_size) if batch_size else _auto_batch(net, Tmax)
    counts = {t: {n.name: [] for n in net.nodes} for t in Ts}
    readouts = {t: [] for t in Ts}
    starts = range(0, len(x_np), bs)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="reference sim", unit="batch", leave=False)
    be = _backend(dev, engine)
    with torch.no_grad(), _exact_backend(dev):
        for i in starts:
            c, r = _simulate_chunk(net, plans, x_np[i:i + bs], Ts, limits, be)
            for t in Ts:
                for name, a in c[t].items():
                    counts[t][name].append(a)
                readouts[t].append(r[t])
    return {t: Trace(timesteps=t, spike_counts={k: np.concatenate(v) for k, v in counts[t].items()},
                     readout=np.concatenate(readouts[t]), extra={"simulator": SIMULATOR})
            for t in Ts}


def reference_simulate(net: IntNet, inputs, timesteps: int, **kw) -> Trace:
    """Spike counts per node over its T-window and readout potentials (int64), bit-exact (C6)."""
    _check_net(net)
    (T,) = check_timesteps(net, [timesteps], kw.get("limits", LOIHI2))
    return reference_simulate_multi(net, inputs, [T], **kw)[T]
