"""Float SNN simulator of a FloatNet (contract C2-C4, C7): batched torch, CPU or CUDA, unpipelined.

Per sample, for t = 1..T (the unpipelined form of C3, which the pipelined hardware run equals exactly):

    payload_input(t) = x (raw pixels, every step: analog input coding, C4)
    I_m(t) = sum_i op_i(payload_src_i(t)) + b_m
    v_m(0) = precharge_m (= th_m / 2);  v_m += I_m(t);  z_m = neuron_m.fire_and_reset_inplace(v_m, th_m)
        (`emit_inplace` also gives the payload z_m * th_m)
        (the node's neuron model, na_deploy.ir.neuron; mode "subtract", C2: z = [v >= th], v -= z * th)
    payload_m(t) = z_m * th_m        (a spike carries the value of the source's threshold)
    readout: V(T) = sum_{t<=T} I_R(t);   class = argmax V(T), ties -> lowest index (C7)

One run to max(T) serves every requested T: the state after the first T steps of a longer run is the state of
a T-step run (causality), so predictions / spike counts are read off at each requested T on the way.
Neuron modes: "negative" sends z in {-1, 0, 1} (payload z * th; the step gets the window's running net count);
"accumulate" (windowed: counts at T are no prefix of a longer run) runs each T on its own, layer by layer
(v_T = pc + the window's summed current, n = clip(floor(v_T / th), 0, T)). Two-stage offset calibration (meta
offset_steps = rho): a rho-step run first, each neuron then starts from pc + clip(floor(v_rho / th), -1, 1) * th.
The first layer's current is the same every step (its only source is the constant input) and is computed once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from na_deploy.simulate.ann import CompiledNode, argmax_lowest, as_input, compile_net
from na_deploy.device import resolve_device
from na_deploy.checks import check_timesteps
from na_deploy.errors import SimulationError
from na_deploy.ir import INPUT_NAME, FloatNet
from na_deploy.ir.graph import offset_steps
from na_deploy.ir.offset_calibration import check_run, offset_start


@dataclass
class FloatSimResult:
    """What `simulate_float` measured over N samples.

    predictions[T]: (N,) int64 class at T;  potentials[T]: (N, classes) readout V(T);
    accuracy[T]: share correct (only with labels);  spikes[T][node]: total spikes of that node over all
    samples and neurons in the first T steps (the net count for signed spikes; stage 2 with offset calibration);
    events[T][node]: spike messages sent (|z| summed; stage 1 of offset calibration included: what costs
    energy);  neurons[node]: neurons per sample;  counts[T][node]: per-neuron
    spike counts (N, *shape), kept only for T in `count_timesteps` (memory).
    """

    timesteps: list[int]
    predictions: dict[int, np.ndarray]
    potentials: dict[int, np.ndarray]
    spikes: dict[int, dict[str, int]]
    neurons: dict[str, int]
    roles: dict[str, str]
    counts: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    events: dict[int, dict[str, int]] = field(default_factory=dict)
    accuracy: Optional[dict[int, float]] = None
    samples: int = 0
    wall_s: float = 0.0
    device: str = "cpu"

    @property
    def images_per_s(self) -> float:
        return self.samples / self.wall_s if self.wall_s > 0 else float("nan")

    def spikes_per_inference(self, T: int) -> float:
        """Spike messages per sample at T, every node, stage 1 of offset calibration included."""
        return sum(self.events[T].values()) / self.samples if self.samples else float("nan")

    def firing_rates(self, T: int) -> dict[str, float]:
        """Spikes per neuron per step over the first T steps, per node."""
        return {k: v / (self.samples * self.neurons[k] * T) if self.samples else float("nan")
                for k, v in self.spikes[T].items()}

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary (no per-neuron arrays)."""
        return {"timesteps": list(self.timesteps), "samples": self.samples, "device": self.device,
                "wall_s": round(self.wall_s, 4), "images_per_s": self.images_per_s,
                "accuracy": None if self.accuracy is None else {str(t): a for t, a in self.accuracy.items()},
                "firing_rates": {str(t): self.firing_rates(t) for t in self.timesteps}}


def _is_constant(node: CompiledNode) -> bool:
    """A node fed only by the input sees the same current every step."""
    return all(src == INPUT_NAME for src, _ in node.synapses)


def _lockstep(nodes: list[CompiledNode], x: torch.Tensor, ts: list[int], starts: Optional[dict], record) -> dict:
    """All nodes step by step to max(ts) from `starts` (default: each node's pre-charge); record(t, pot, cnt, ev)
    at every t in ts; returns the final membranes."""
    b, dtype, dev = x.shape[0], x.dtype, x.device
    neurons, readout = nodes[:-1], nodes[-1]
    payload = {INPUT_NAME: x}
    const = {nd.name: nd.current(payload) for nd in nodes if _is_constant(nd)}
    v = {nd.name: (torch.full((b,) + nd.shape, nd.precharge, dtype=dtype, device=dev) if starts is None
                   else starts[nd.name]) for nd in neurons}
    cnt = {nd.name: torch.zeros((b,) + nd.shape, dtype=dtype if nd.neuron.graded else torch.int32, device=dev)
           for nd in neurons}  # a graded node's "count" is the sum of its (float) payloads
    ev = {nd.name: torch.zeros((b,) + nd.shape, dtype=torch.int32, device=dev) for nd in neurons if nd.neuron.signed}
    pot = torch.zeros((b,) + readout.shape, dtype=dtype, device=dev)
    want = set(ts)
    for t in range(1, ts[-1] + 1):
        for nd in neurons:
            vm = v[nd.name]
            vm += const[nd.name] if nd.name in const else nd.current(payload)
            if nd.neuron.stateful:  # e.g. "negative": the step needs the window's running net count
                z, payload[nd.name] = nd.neuron.emit_inplace(vm, nd.threshold, count=cnt[nd.name])
                ev[nd.name] += z.abs()
            else:
                z, payload[nd.name] = nd.neuron.emit_inplace(vm, nd.threshold)
            cnt[nd.name] += z
        pot += const[readout.name] if readout.name in const else readout.current(payload)
        if t in want:
            record(t, pot, cnt, ev)
    return v


def _windowed(nodes: list[CompiledNode], x: torch.Tensor, T: int, record) -> None:
    """One T-step run of a net of windowed nodes ("accumulate"), layer by layer: a node's window sums its
    current (ops are linear: sum_t op(p_t) = op(sum_t p_t)), v_T = pc + that sum, then its fire phase sends
    n = clip(floor(v_T / th), 0, T) spikes of th each; the readout sums its T currents."""
    neurons, readout = nodes[:-1], nodes[-1]
    sums = {INPUT_NAME: x * T}
    cnt = {}
    for nd in neurons:
        v = nd.current(sums) + (T - 1) * nd.bias + nd.precharge
        n = nd.neuron.fire_total(v, nd.threshold, T)
        cnt[nd.name] = n.to(torch.int32)
        sums[nd.name] = n * nd.threshold
    record(T, readout.current(sums) + (T - 1) * readout.bias, cnt, {})


def _run_batch(nodes: list[CompiledNode], x: torch.Tensor, ts: list[int], keep: set[int], out: dict,
               rho: int = 0) -> None:
    """Simulate one batch to max(ts) (windowed models: each T on its own); append read-outs at every t in ts
    into `out`. rho > 0: two-stage offset calibration (stage 1 of rho steps sets each neuron's start)."""
    neurons = nodes[:-1]
    first: dict = {}

    def record(t, pot, cnt, ev):
        out["pred"][t].append(argmax_lowest(pot).cpu())
        out["pot"][t].append(pot.cpu().clone())
        for nd in neurons:
            if nd.neuron.graded:  # no spikes: a graded node's payload sums are neither spikes nor messages
                if t in keep:
                    out["counts"][t][nd.name].append(cnt[nd.name].cpu().clone())
                continue
            out["spikes"][t][nd.name] += int(cnt[nd.name].sum())
            sent = int(ev[nd.name].sum()) if nd.name in ev else int(cnt[nd.name].sum())
            out["events"][t][nd.name] += sent + first.get(nd.name, 0)
            if t in keep:
                out["counts"][t][nd.name].append(cnt[nd.name].cpu().clone())

    if any(nd.neuron.windowed for nd in neurons):
        for t in ts:
            _windowed(nodes, x, t, record)
        return
    starts = None
    if rho:
        def stage1(t, pot, cnt, ev):
            first.update({nd.name: int(cnt[nd.name].sum()) for nd in neurons})

        v = _lockstep(nodes, x, [rho], None, stage1)
        starts = {nd.name: offset_start(v[nd.name], nd.precharge, nd.threshold) for nd in neurons}
    _lockstep(nodes, x, ts, starts, record)


@torch.no_grad()
def simulate_float(net: FloatNet, x_uint8: Any, timesteps: Union[int, Sequence[int]], labels: Any = None,
                   batch_size: int = 256, device: Union[str, torch.device, None] = None,
                   dtype: torch.dtype = torch.float32, count_timesteps: Sequence[int] = (),
                   progress: bool = True) -> FloatSimResult:
    """Run the FloatNet as an IF SNN on raw pixels x (N, *input_shape) for max(timesteps) steps.

    Predictions, readout potentials and per-node spike totals are recorded at every T in `timesteps`
    (accuracy too when `labels` are given); per-neuron spike counts only for T in `count_timesteps`
    (each must be one of `timesteps`). float32 by default; pass torch.float64 for exact-tie studies.
    """
    if not net.is_balanced():
        raise SimulationError("net is not delay-balanced (C3); run na_deploy.convert.delays.balance_delays first")
    ts = check_timesteps(timesteps)
    check_run(net, ts)
    keep = set(check_timesteps(count_timesteps)) if len(list(count_timesteps)) else set()
    if not keep <= set(ts):
        raise SimulationError(f"count_timesteps {sorted(keep)} must be among timesteps {ts}")
    if int(batch_size) < 1:
        raise SimulationError(f"batch_size must be >= 1, got {batch_size}")
    device = resolve_device(device)
    nodes = compile_net(net, dtype, device)
    x_all = torch.as_tensor(np.asarray(x_uint8)) if not isinstance(x_uint8, torch.Tensor) else x_uint8
    as_input(net, x_all[:0], dtype, "cpu")  # shape check before any work
    n = int(x_all.shape[0])
    y = None
    if labels is not None:
        y = np.asarray(labels).reshape(-1)
        if y.shape[0] != n:
            raise SimulationError(f"labels: {y.shape[0]} labels for {n} samples")
    names = [nd.name for nd in nodes[:-1]]
    out = {"pred": {t: [] for t in ts}, "pot": {t: [] for t in ts}, "spikes": {t: dict.fromkeys(names, 0) for t in ts},
           "events": {t: dict.fromkeys(names, 0) for t in ts}, "counts": {t: {k: [] for k in names} for t in keep}}
    rho = offset_steps(net)
    bs = int(batch_size)
    t0 = time.perf_counter()
    for i in tqdm(range(0, n, bs), desc=f"float SNN T={ts[-1]}", unit="batch", disable=not progress, leave=False):
        _run_batch(nodes, as_input(net, x_all[i:i + bs], dtype, device), ts, keep, out, rho)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    classes = tuple(net.readout.shape)
    preds = {t: (torch.cat(v).numpy().astype(np.int64) if v else np.zeros(0, np.int64)) for t, v in out["pred"].items()}
    pots = {t: (torch.cat(v).numpy() if v else np.zeros((0,) + classes)) for t, v in out["pot"].items()}
    counts = {t: {k: torch.cat(v).numpy() for k, v in per.items() if v} for t, per in out["counts"].items()}
    acc = None if y is None else {t: float(np.mean(preds[t] == y)) if n else float("nan") for t in ts}
    return FloatSimResult(
        timesteps=ts, predictions=preds, potentials=pots, spikes=out["spikes"], events=out["events"],
        neurons={nd.name: int(np.prod(nd.shape)) for nd in nodes[:-1]},
        roles={nd.name: nd.role for nd in net.nodes}, counts=counts, accuracy=acc, samples=n, wall_s=wall,
        device=str(device))


__all__ = ["simulate_float", "FloatSimResult", "check_timesteps"]
