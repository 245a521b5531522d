"""A FloatNet evaluated as the quantized ANN it came from (the semantics in `na_deploy.ir`'s docstring).

    a_input = x (raw pixels, as float);   u_m = sum_i op_i(a_src_i) + b_m
    n_m = clip(floor(u_m / s_m + 1/2), 0, p_m)   (round half up, C1),   s_m = threshold_m / p_m
    a_m = s_m * n_m;   logits = sum_i op_i(a_src_i) + b_readout;   class = argmax, ties -> lowest (C7)

`n_m` is the integer quantization level of every neuron: the SNN's spike count over T = k*p steps is
compared against k*n_m by the occasional-noise report.

`compile_net` turns a net's synapses into cached batched torch functions (`na_deploy.simulate.torch_ops.compile_op`);
the float SNN simulator uses the same compiled form, so ANN and SNN compute every op identically.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from na_deploy.device import resolve_device
from na_deploy.errors import SimulationError
from na_deploy.ir import INPUT_NAME, SUBTRACT, FloatNet, NeuronModel, NeuronNode
from na_deploy.simulate.torch_ops import compile_op
from na_deploy.rounding import round_half_up


@dataclass
class CompiledNode:
    """One node with its synapses as torch functions: I = sum_i fn_i(payload[src_i]) + bias."""

    name: str
    synapses: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]
    bias: torch.Tensor           # broadcastable to (B, *shape): (C, 1, 1) for maps, (N,) for flat nodes
    shape: tuple[int, ...]
    threshold: float = 0.0       # neuron nodes only
    precharge: float = 0.0
    p: int = 1
    neuron: NeuronModel = SUBTRACT
    is_readout: bool = False

    def current(self, payload: dict[str, torch.Tensor]) -> torch.Tensor:
        it = iter(self.synapses)
        src, fn = next(it)
        out = fn(payload[src])
        for src, fn in it:
            out = out + fn(payload[src])
        return out + self.bias


_CACHE: "weakref.WeakKeyDictionary[FloatNet, dict]" = weakref.WeakKeyDictionary()


def compile_net(net: FloatNet, dtype: torch.dtype = torch.float32,
                device: Union[str, torch.device] = "cpu") -> list[CompiledNode]:
    """Compiled nodes (neurons in topological order, then the readout), cached per (net, dtype, device)."""
    if not isinstance(net, FloatNet):
        raise SimulationError(f"expected a FloatNet, got {type(net).__name__} (IntNets run on their target's "
                              "reference simulator)")
    device = torch.device(device)
    per_net = _CACHE.setdefault(net, {})
    key = (dtype, str(device))
    if key not in per_net:
        out = []
        for n in net.all_nodes():
            syns = [(s.source, compile_op(s.op, dtype, device)) for s in n.inputs]
            b = torch.as_tensor(np.asarray(n.bias, dtype=np.float64), dtype=dtype, device=device)
            b = b.reshape((-1,) + (1,) * (len(n.shape) - 1))
            if isinstance(n, NeuronNode):
                out.append(CompiledNode(n.name, syns, b, tuple(n.shape), n.threshold, n.precharge, n.p,
                                        n.neuron))
            else:
                out.append(CompiledNode(n.name, syns, b, tuple(n.shape), is_readout=True))
        per_net[key] = out
    return per_net[key]


def as_input(net: FloatNet, x: Any, dtype: torch.dtype, device: Union[str, torch.device]) -> torch.Tensor:
    """(B, *input_shape) pixels (uint8 or integer-valued) -> tensor of `dtype` on `device`; SimulationError on a
    wrong shape."""
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if tuple(t.shape[1:]) != tuple(net.input.shape) or t.dim() != len(net.input.shape) + 1:
        raise SimulationError(f"input: expected shape (B, {', '.join(map(str, net.input.shape))}) of raw pixels, "
                              f"got {tuple(t.shape)}")
    return t.to(device=device, dtype=dtype)


def quantize_level(u: torch.Tensor, node: CompiledNode) -> torch.Tensor:
    """n = clip(floor(u/s + 1/2), 0, p) with s = threshold/p (C1 round half up), as the float dtype of u."""
    s = node.threshold / node.p
    return torch.clamp(round_half_up(u / s), 0, node.p)


def argmax_lowest(v: torch.Tensor) -> torch.Tensor:
    """argmax over the last axis; ties break to the lowest index (C7), independent of the backend."""
    idx = torch.arange(v.shape[-1], device=v.device)
    hit = v == v.max(dim=-1, keepdim=True).values
    return torch.where(hit, idx, v.shape[-1]).min(dim=-1).values


def _level_dtype(p: int) -> torch.dtype:
    return torch.uint8 if p <= 255 else torch.int32


@torch.no_grad()
def ann_forward(net: FloatNet, x_uint8: Any, device: Union[str, torch.device, None] = None,
                dtype: torch.dtype = torch.float64, batch_size: Optional[int] = None, keep_levels: bool = True,
                progress: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The FloatNet as a quantized ANN on raw pixels x (B, *input_shape).

    Returns (logits (B, classes) on CPU, activation levels {node: integer level n in 0..p, (B, *shape) on CPU}); they
    are empty when keep_levels=False. float64 by default so the levels match a float64 torch model exactly.
    """
    device = resolve_device(device)
    nodes = compile_net(net, dtype, device)
    x_all = torch.as_tensor(np.asarray(x_uint8)) if not isinstance(x_uint8, torch.Tensor) else x_uint8
    n = int(x_all.shape[0]) if x_all.dim() else 0
    bs = n if not batch_size else int(batch_size)
    logits, levels = [], {nd.name: [] for nd in nodes[:-1] if not nd.neuron.graded} if keep_levels else {}
    starts = range(0, n, max(bs, 1))
    for i in tqdm(starts, desc="ANN", unit="batch", disable=not progress or len(starts) < 2, leave=False):
        payload = {INPUT_NAME: as_input(net, x_all[i:i + bs], dtype, device)}
        for nd in nodes[:-1]:
            if nd.neuron.graded:  # a graded node forwards its sum (C2): no quantization, no level
                payload[nd.name] = nd.current(payload)
                continue
            lv = quantize_level(nd.current(payload), nd)
            payload[nd.name] = lv * (nd.threshold / nd.p)
            if keep_levels:
                levels[nd.name].append(lv.to(_level_dtype(nd.p)).cpu())
        logits.append(nodes[-1].current(payload).cpu())
    if not logits:
        as_input(net, x_all, dtype, device)  # shape check on an empty batch
        return torch.zeros((0,) + tuple(net.readout.shape), dtype=dtype), {}
    return torch.cat(logits), {k: torch.cat(v) for k, v in levels.items()}


def ann_accuracy(net: FloatNet, x_uint8: Any, labels: Any, device=None, batch_size: int = 512) -> float:
    """Share of samples whose ANN class (argmax, ties lowest) equals the label."""
    logits, _ = ann_forward(net, x_uint8, device=device, batch_size=batch_size, keep_levels=False)
    y = torch.as_tensor(np.asarray(labels)).reshape(-1)
    return float((argmax_lowest(logits) == y).double().mean()) if len(y) else float("nan")


__all__ = ["ann_forward", "ann_accuracy", "compile_net", "CompiledNode", "quantize_level", "argmax_lowest",
           "as_input"]
