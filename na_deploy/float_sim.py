"""Float SNN simulator of a FloatNet (DESIGN C2-C4, C7): batched torch, CPU or CUDA, unpipelined.

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
The first layer's current is the same every step (its only source is the constant input) and is computed once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from .ann_eval import CompiledNode, argmax_lowest, as_input, compile_net
from .device import resolve_device
from .checks import check_timesteps
from .errors import SimulationError
from .ir import INPUT_NAME, FloatNet


@dataclass
class FloatSimResult:
    """What `simulate_float` measured over N samples.

    predictions[T]: (N,) int64 class at T;  potentials[T]: (N, classes) readout V(T);
    accuracy[T]: share correct (only with labels);  spikes[T][node]: total spikes of that node over all
    samples and neurons in the first T steps;  neurons[node]: neurons per sample;  counts[T][node]: per-neuron
    spike counts (N, *shape), kept only for T in `count_timesteps` (memory).
    """

    timesteps: list[int]
    predictions: dict[int, np.ndarray]
    potentials: dict[int, np.ndarray]
    spikes: dict[int, dict[str, int]]
    neurons: dict[str, int]
    roles: dict[str, str]
    counts: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    accuracy: Optional[dict[int, float]] = None
    samples: int = 0
    wall_s: float = 0.0
    device: str = "cpu"

    @property
    def images_per_s(self) -> float:
        return self.samples / self.wall_s if self.wall_s > 0 else float("nan")

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


def _run_batch(nodes: list[CompiledNode], x: torch.Tensor, ts: list[int], keep: set[int], out: dict) -> None:
    """Simulate one batch to max(ts); append read-outs at every t in ts into `out`."""
    b, dtype, dev = x.shape[0], x.dtype, x.device
    neurons, readout = nodes[:-1], nodes[-1]
    payload = {INPUT_NAME: x}
    const = {nd.name: nd.current(payload) for nd in nodes if _is_constant(nd)}
    v = {nd.name: torch.full((b,) + nd.shape, nd.precharge, dtype=dtype, device=dev) for nd in neurons}
    cnt = {nd.name: torch.zeros((b,) + nd.shape, dtype=torch.int32, device=dev) for nd in neurons}
    pot = torch.zeros((b,) + readout.shape, dtype=dtype, device=dev)
    want = set(ts)
    for t in range(1, ts[-1] + 1):
        for nd in neurons:
            vm = v[nd.name]
            vm += const[nd.name] if nd.name in const else nd.current(payload)
            z, payload[nd.name] = nd.neuron.emit_inplace(vm, nd.threshold)
            cnt[nd.name] += z
        pot += const[readout.name] if readout.name in const else readout.current(payload)
        if t in want:
            out["pred"][t].append(argmax_lowest(pot).cpu())
            out["pot"][t].append(pot.cpu().clone())
            for nd in neurons:
                out["spikes"][t][nd.name] += int(cnt[nd.name].sum())
                if t in keep:
                    out["counts"][t][nd.name].append(cnt[nd.name].cpu().clone())


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
        raise SimulationError("net is not delay-balanced (C3); run na_deploy.delays.balance_delays first")
    ts = check_timesteps(timesteps)
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
    out = {"pred": {t: [] for t in ts}, "pot": {t: [] for t in ts},
           "spikes": {t: dict.fromkeys(names, 0) for t in ts}, "counts": {t: {k: [] for k in names} for t in keep}}
    bs = int(batch_size)
    t0 = time.perf_counter()
    for i in tqdm(range(0, n, bs), desc=f"float SNN T={ts[-1]}", unit="batch", disable=not progress, leave=False):
        _run_batch(nodes, as_input(net, x_all[i:i + bs], dtype, device), ts, keep, out)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    classes = tuple(net.readout.shape)
    preds = {t: (torch.cat(v).numpy().astype(np.int64) if v else np.zeros(0, np.int64)) for t, v in out["pred"].items()}
    pots = {t: (torch.cat(v).numpy() if v else np.zeros((0,) + classes)) for t, v in out["pot"].items()}
    counts = {t: {k: torch.cat(v).numpy() for k, v in per.items() if v} for t, per in out["counts"].items()}
    acc = None if y is None else {t: float(np.mean(preds[t] == y)) if n else float("nan") for t in ts}
    return FloatSimResult(
        timesteps=ts, predictions=preds, potentials=pots, spikes=out["spikes"],
        neurons={nd.name: int(np.prod(nd.shape)) for nd in nodes[:-1]},
        roles={nd.name: nd.role for nd in net.nodes}, counts=counts, accuracy=acc, samples=n, wall_s=wall,
        device=str(device))


__all__ = ["simulate_float", "FloatSimResult", "check_timesteps"]
