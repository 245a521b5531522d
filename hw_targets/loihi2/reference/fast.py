"""The fast, bit-exact integer reference simulator of an IntNet (contract C3, C5, C6).

It computes the *unpipelined* IntNet dynamics of `na_deploy.ir`, which equal the pipelined hardware run
exactly (C3: each node's window sees exactly the payloads its sources emitted in their windows):

    for each node m in topological order (all T steps at once, batched over samples):
        I_m(t) = sum_i shift(op_i(payload_i(t)), e_i) + (bias_mant << bias_exp)      t = 1..T
        v(0) = precharge;  v <- wrap24(v + I_m(t));  (v, z(t)) = neuron_m.fire_and_reset(v, threshold)
        (the node's neuron model, na_deploy.ir.neuron; "subtract": z = [v >= th], v <- v - z * th)
        spike count = sum_t z(t);  readout: V = wrap24(sum_t I_R(t))
    shift(y, e) = y << e (e >= 0) or y >> -e (arithmetic, floor; e < 0): `na_deploy.integer.shift`.

How it stays exact: op_i runs on (T * B, ...) tensors through `na_deploy.simulate.torch_ops.compile_op` in floating
point, with integer weights and integer payloads, so every product and every partial sum is an integer. float32 is
used for a synapse only when fit.py's static bound proves |every partial sum| <= 2**24 (float32 holds every
integer up to 2**24), else float64 (exact up to 2**53; beyond that the simulator refuses). The result is
rounded to the nearest integer (a no-op for exact sums) and cast to int64; the shifts, the bias and the IF
recurrence over T run on int64 (int32 when the bound proves it cannot overflow). The 24-bit wrap of
`reference/slow.py` (`na_deploy.integer.wrap_signed`) is applied whenever the static bound does not rule it out
(never, for a net that passes `check_fit`). Reduced-precision float32 modes a caller may have switched on (bf16 /
TF32 GEMM or conv) are switched off while the reference runs. On CUDA every op runs in float64 with cuDNN off
(plain im2col + GEMM sums are exact).

Engines: on the CPU the integer steps run in numpy, in place (torch's OpenMP elementwise kernels are 10-100x
slower on a busy 2-core machine), as fused compiled loops where the optional numba is installed (`reference.fused`:
the net chunk of steps by chunk of steps, the same integers); on CUDA (or engine="torch") everything stays in
torch on the device.

Because the unpipelined dynamics are causal, the first T steps of a longer run are a T-step run:
`reference_simulate_multi` runs once to max(T) and reads counts / potentials at every T asked for (except for
a windowed model, "accumulate", whose fire phase follows its T accumulate steps: one run per T).
Each node's window runs through its neuron model's `run_window` (`reference/engines.py`); signed models
("negative") send z in {-1, 0, 1} and `Trace.event_counts` holds the messages sent (sum |z|). Two-stage offset
calibration (meta offset_steps = rho, `na_deploy.ir.offset_calibration`): a rho-step run of the whole net gives
each neuron's offset from its residual membrane, then the normal run starts from pc + o * th.
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
from na_deploy.integer import shift, wrap_signed
from na_deploy.ir.timing import check_offset_fits, offset_steps
from na_deploy.simulate.torch_ops import compile_op
from na_deploy.protocols import Trace

from na_deploy.hw_targets.loihi2.fit import bound_options, node_bound, op_interval, payload_max, payload_min
from na_deploy.hw_targets.loihi2.limits import LOIHI2, Loihi2Limits
from na_deploy.hw_targets.loihi2.reference.engines import ENGINES, _backend, _NumpyBackend, _TorchBackend  # noqa: F401

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

    def __init__(self, syn, channels: int, device: torch.device, limits: Loihi2Limits, signed_sources=(),
                 graded=None):
        lo, hi = op_interval(syn.op, payload_max(syn.source, limits, graded), channels,
                             payload_min(syn.source, signed_sources, graded))
        peak = max(abs(float(lo.min())), abs(float(hi.max())))
        if peak >= FLOAT64_EXACT:
            raise SimulationError(f"synapse from {syn.source}: partial sums up to {peak:.3g} exceed 2**53; "
                                  "exact floating-point simulation is impossible (the net does not fit anyway)")
        self.dtype = torch.float32 if (peak <= FLOAT32_EXACT and device.type == "cpu") else torch.float64
        self.source = syn.source
        self.exponent = int(syn.exponent)
        self.fn = compile_op(syn.op, self.dtype, device)


class _NodePlan:
    def __init__(self, node, T: int, device: torch.device, limits: Loihi2Limits, opts: Optional[dict] = None):
        opts = opts or {}  # fit.bound_options(net): signed sources, offset calibration
        self.node = node
        self.name = node.name
        self.is_readout = isinstance(node, IntReadoutNode)
        self.synapses = [_SynapsePlan(s, node.shape[0], device, limits, opts.get("signed_sources", ()),
                                      opts.get("graded")) for s in node.inputs]
        b = node_bound(node, T, limits, **opts)
        self.wrap_needed = not (limits.state_min <= b.membrane[0] and b.membrane[1] <= limits.state_max)
        # int32 state when the bound proves every current / membrane value (and v + I) stays below 2**30
        self.small = b.max_abs() < 2 ** 30 and not self.wrap_needed
        self.bias = np.asarray(node.bias, dtype=np.int64).reshape((-1,) + (1,) * (len(node.shape) - 1))


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
        y = shift(y, s.exponent)
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
        out[T] = be.numpy(wrap_signed(v, bits) if plan.wrap_needed else v)
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


class _Chunk:
    """What one chunk produced: counts[T][node], events[T][node] (signed nodes only: sum |z|), readout[T],
    and the final membrane of every neuron node (`keep_v`: stage 1 of offset calibration)."""

    def __init__(self, Ts: Sequence[int]):
        self.counts: dict[int, dict] = {t: {} for t in Ts}
        self.events: dict[int, dict] = {t: {} for t in Ts}
        self.readout = None
        self.final_v: dict = {}

    @classmethod
    def of(cls, run, Ts: Sequence[int]) -> "_Chunk":
        """The chunk of a fused lockstep run (`reference.fused.Lockstep`: the same fields)."""
        out = cls(Ts)
        out.counts, out.events, out.readout, out.final_v = run.counts, run.events, run.readout, run.final_v
        return out


def _simulate_chunk(net: IntNet, plans: list, x: np.ndarray, Ts: Sequence[int], limits: Loihi2Limits, be,
                    v0: Optional[dict] = None, keep_v: bool = False) -> _Chunk:
    """Every node over one window to max(Ts), layer by layer; v0: per-neuron window starts (default: pc).
    With the fused loops (`reference.fused`) the net runs chunk of steps by chunk of steps instead."""
    if be.runs_fused(plans):
        return _Chunk.of(be.lockstep(plans, x, Ts, limits.state_bits, v0, keep_v), Ts)
    T, B = max(Ts), x.shape[0]
    payloads = {INPUT_NAME: be.inputs(x)}
    left = _consumers(net)
    out = _Chunk(Ts)
    for plan in plans:
        current = _node_current(plan, payloads, T, B, be)
        for s in plan.node.inputs:  # free payloads nobody else needs
            left[s.source] -= 1
            if left[s.source] == 0 and s.source != INPUT_NAME:
                del payloads[s.source]
        if plan.is_readout:
            out.readout = _readout_potentials(plan, current, Ts, limits.state_bits, be)
            continue
        z, v = be.integrate(plan, current, T, limits.state_bits, None if v0 is None else v0[plan.name])
        del current
        for t, c in _counts_at(z, Ts, be).items():
            out.counts[t][plan.name] = c
        if plan.node.neuron.signed:
            for t, c in _counts_at(be.abs(z), Ts, be).items():
                out.events[t][plan.name] = c
        if keep_v:
            out.final_v[plan.name] = v
        payloads[plan.name] = z
    return out


def _offset_chunk(net: IntNet, plans: list, x: np.ndarray, Ts: Sequence[int], limits: Loihi2Limits, be,
                  rho: int) -> _Chunk:
    """Two-stage offset calibration (na_deploy.ir.offset_calibration): stage 1 runs every node rho steps from its
    pre-charge (one run, all layers, the same input); o = clip(floor(v_rho / th), -1, 1) per neuron; stage 2
    is the normal run from pc + o * th. Counts and readout are stage 2's; events add stage 1's spikes."""
    s1 = _simulate_chunk(net, plans, x, [rho], limits, be, keep_v=True)
    v0 = {p.name: be.offset_start(p, s1.final_v[p.name]) for p in plans if not p.is_readout}
    del s1.final_v
    s2 = _simulate_chunk(net, plans, x, Ts, limits, be, v0=v0)
    first = {**s1.counts[rho], **s1.events[rho]}
    for t in Ts:
        both = {**s2.counts[t], **s2.events[t]}  # messages of stage 2: |z| summed (signed) or the counts
        s2.events[t] = {k: both[k] + first[k] for k in s2.counts[t]}
    return s2


def _auto_batch(net: IntNet, T: int, budget_bytes: float = 512e6) -> int:
    """Samples per chunk so that the largest (T, B, node) int64 tensor stays within a memory budget."""
    biggest = max(int(np.prod(n.shape)) for n in net.all_nodes())
    return max(1, int(budget_bytes // (8 * 3 * T * biggest)))


def reference_simulate_multi(net: IntNet, inputs, timesteps_list: Iterable[int], *,
                             device: Optional[str | torch.device] = None, batch_size: Optional[int] = None,
                             progress: bool = False, limits: Loihi2Limits = LOIHI2,
                             engine: str = "auto") -> dict[int, Trace]:
    """One run to max(T); a `Trace` for every T in `timesteps_list` (equal to a T-step run: causality).
    A net with a windowed neuron model ("accumulate": counts at T are no prefix of a longer run) runs each T
    separately. A net with offset calibration (meta offset_steps = rho > 0) runs stage 1 once per chunk.

    device: where the ops run (default cuda if available, else cpu); batch_size: samples per chunk (default:
    a memory budget); engine: "auto" | "numpy" | "torch" for the integer steps (auto: numpy on CPU).

    inputs: (B, *input_shape) integer pixels 0..255. Trace.spike_counts[node]: (B, *shape) int64 (net) spikes
    over the node's window; Trace.readout: (B, classes) int64 final readout potentials; Trace.event_counts:
    messages sent per neuron (|z| summed, stage 1 included) when they differ from spike_counts, else None."""
    _check_net(net)
    Ts = check_timesteps(net, timesteps_list, limits)
    kw = dict(device=device, batch_size=batch_size, progress=progress, limits=limits, engine=engine)
    if len(Ts) > 1 and any(n.neuron.windowed for n in net.nodes):
        return {t: reference_simulate_multi(net, inputs, [t], **kw)[t] for t in Ts}
    rho = offset_steps(net)
    check_offset_fits(rho, Ts[0])
    x_np = check_inputs(net, inputs, limits)
    check_balanced(net)
    dev = resolve_device(device)
    Tmax = Ts[-1]
    opts = bound_options(net)
    plans = [_NodePlan(n, Tmax, dev, limits, opts) for n in net.all_nodes()]
    bs = int(batch_size) if batch_size else _auto_batch(net, Tmax)
    with_events = bool(rho) or any(n.neuron.signed for n in net.nodes)
    counts = {t: {n.name: [] for n in net.nodes} for t in Ts}
    events = {t: {n.name: [] for n in net.nodes} for t in Ts}
    readouts = {t: [] for t in Ts}
    starts = range(0, len(x_np), bs)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="reference sim", unit="batch", leave=False)
    be = _backend(dev, engine)
    with torch.no_grad(), _exact_backend(dev):
        for i in starts:
            xc = x_np[i:i + bs]
            ch = (_offset_chunk(net, plans, xc, Ts, limits, be, rho) if rho
                  else _simulate_chunk(net, plans, xc, Ts, limits, be))
            for t in Ts:
                for name, a in ch.counts[t].items():
                    counts[t][name].append(a)
                    if with_events:
                        events[t][name].append(ch.events[t].get(name, a))
                readouts[t].append(ch.readout[t])
    return {t: Trace(timesteps=t, spike_counts={k: np.concatenate(v) for k, v in counts[t].items()},
                     readout=np.concatenate(readouts[t]), extra={"simulator": SIMULATOR},
                     event_counts={k: np.concatenate(v) for k, v in events[t].items()} if with_events else None)
            for t in Ts}


def reference_simulate(net: IntNet, inputs, timesteps: int, **kw) -> Trace:
    """Spike counts per node over its T-window and readout potentials (int64), bit-exact (C6)."""
    _check_net(net)
    (T,) = check_timesteps(net, [timesteps], kw.get("limits", LOIHI2))
    return reference_simulate_multi(net, inputs, [T], **kw)[T]
