"""Backend "lava-lif": mode "zero" IntNets on Lava's stock bit-accurate LIF (PyLifModelBitAcc, tag fixed_pt).

`LavaLIFBackend(target)` is a `frame.LavaBackendFrame` (`na_deploy.protocols.Backend`). Each neuron node is one stock
`lava.proc.lif.process.LIF(du=4095, dv=0)`: u = a_in << 6 every step (du = 4095 clears u), v <- v + u +
(bias_mant << bias_exp) saturated at +-(2^23 - 1), spike when v > vth << 6, then v <- 0. That is our mode
"zero" (fire when v > th, reset to 0) with the LIF's v = 64 x ours: vth = th, bias_mant << bias_exp = 64 x
bias (`limits.lif_bias`), v = 64 x precharge. The fit check (`fit.lif_rules`) proves the registers never
overflow or saturate. Synapses are `graph.connect_synapse` (Dense / Conv / Sparse, one step of delay
each), the input is our `GradedSource`, the readout our `Accumulator` (not a neuron: it integrates, it never
fires), all from processes/.

Windows (C3) with a neuron that has none. Sample k occupies Lava steps k*L + 1 .. (k+1)*L, L = T + D (as in
`graph.py`); node m of depth d must start its window (step k*L + d + 1) at v = 64 x pc and count its spikes
only in the window k*L + d + 1 .. k*L + d + T. Outside its window the LIF keeps running (bias on, inputs on),
which is harmless:
* re-arming: the sample is run in segments (one Lava `run` call per distinct node depth); after step
  k*L + d the host sets v = 64 x pc on every LIF of depth d (`Var.set`), so the window starts exactly as in
  the reference whatever the LIF did before;
* counting: each LIF's s_out feeds (directly, no delay: the LIF sends before the counter receives in the
  same step) an `Accumulator` of the same depth and zero bias, i.e. a spike counter live exactly in the
  LIF's window (not a neuron; it sends the count to the host at the window end);
* leakage: a spike of node m outside its window reaches a successor (depth d + 1) only outside the
  successor's window (before: at steps <= k*L + d + 1, before its re-arm takes effect; after: at steps
  >= k*L + d + T + 2, past its window end), and the readout (an Accumulator with a window) likewise; the
  input sends zeros outside steps 1..T. So counts and readout equal the reference exactly.
With record_steps the counters' per-step traces are cumulative counts; `step_spikes` are their differences.

Cost: per sample (number of distinct depths + 1) run calls and one Var.set per neuron node (Lava moves a
Var.set value by value), so it is slower than backend "lava" (whose own process re-arms itself).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from na_deploy.checks import check_pixels, check_timestep
from na_deploy.errors import ExportNotSupported, FitError, SimulationError
from na_deploy.ir import INPUT_NAME, IntNet
from na_deploy.protocols import Trace

from na_deploy.hw_targets.loihi2.lava.graph import GRADED_MESSAGE_BITS, PIXEL_MAX, LavaGraph, connect_synapse
from na_deploy.hw_targets.loihi2.lava.layout import lava_shape, per_neuron, to_lava_layout
from na_deploy.hw_targets.loihi2.lava.frame import LavaBackendFrame
from na_deploy.hw_targets.loihi2.lava.runtime import run_sample_by_sample, run_steps_or_raise
from na_deploy.hw_targets.loihi2.limits import LOIHI2, Loihi2Limits, lif_bias

from lava.proc.lif.process import LIF  # noqa: E402

from na_deploy.hw_targets.loihi2.lava.processes.process import Accumulator, GradedSource  # noqa: E402

BACKEND_LABEL = "lava-0.10-loihi2simcfg-fixed_pt-stock-lif"
NEURON_MODEL = "zero"  # the only mode the stock LIF runs (reset to 0, strict v > vth)
DU_CLEAR, DV_NONE = 4095, 0  # du = 4095: u = a_in << 6 every step; dv = 0: no leak


@dataclass
class LIFGraph(LavaGraph):
    """A `LavaGraph` whose `neurons[name]` are the spike counters (Accumulators) of the stock LIFs
    `lifs[name]`; `depths[name]` the node depths, `precharge[name]` the LIF v at window start (64 x pc)."""

    lifs: dict = field(default_factory=dict)
    depths: dict = field(default_factory=dict)
    precharge: dict = field(default_factory=dict)

    @property
    def processes(self) -> list:
        return [*super().processes, *self.lifs.values()]

    def rearm_segments(self) -> list[tuple[int, list[str]]]:
        """(local step d, nodes re-armed after it) in order: every LIF of depth d gets v = 64 pc after
        local step d of each sample, before its window's first step d + 1."""
        ds = sorted(set(self.depths.values()))
        return [(d, [n for n in self.lifs if self.depths[n] == d]) for d in ds]

    def collect(self) -> Trace:
        trace = super().collect()
        trace.extra["backend"] = BACKEND_LABEL
        if trace.step_spikes:
            trace.step_spikes = {k: np.diff(v, axis=0, prepend=np.zeros_like(v[:1])) for k, v in
                                 trace.step_spikes.items()}  # cumulative counts -> spikes per step
        return trace


def lif_parameters(node, limits: Loihi2Limits = LOIHI2) -> dict:
    """The stock LIF's constructor arguments for a mode "zero" node; FitError naming node and register."""
    if node.neuron.name != NEURON_MODEL:
        raise FitError(f"node {node.name}: neuron model {node.neuron.name!r} cannot run on backend lava-lif "
                       f"(Lava's stock LIF resets to 0); allowed: {NEURON_MODEL!r} (use --backend lava)")
    if not 1 <= node.threshold <= limits.lif_vth_max:
        raise FitError(f"node {node.name}: register vth = {node.threshold}; allowed: [1, {limits.lif_vth_max}]")
    v0 = int(node.precharge) << limits.lif_shift
    if abs(v0) > limits.state_max:
        raise FitError(f"node {node.name}: register v = 64 x precharge = {v0}; allowed: "
                       f"[{-limits.state_max}, {limits.state_max}]")
    bias = to_lava_layout(per_neuron(node.bias, node.shape)[None], node.shape)[0]
    mant, exp, ok = lif_bias(bias, limits)
    if not ok.all():
        raise FitError(f"node {node.name}: registers bias_mant/bias_exp cannot hold 64 x bias = "
                       f"{64 * int(bias[~ok].flat[0])}; allowed: bias_mant 13-bit signed << bias_exp 0..7")
    return dict(shape=lava_shape(node.shape), du=DU_CLEAR, dv=DV_NONE, vth=int(node.threshold), bias_mant=mant,
                bias_exp=exp, v=v0, u=0)


def build_lif_graph(net: IntNet, timesteps: int = 8, inputs: Optional[np.ndarray] = None,
                    n_samples: Optional[int] = None, record_steps: bool = False,
                    result_buffer: Optional[int] = None, limits: Loihi2Limits = LOIHI2) -> LIFGraph:
    """The Lava graph of a mode "zero" `net` on stock LIFs (not compiled); see the module doc."""
    if not isinstance(net, IntNet):
        raise SimulationError(f"backend lava-lif runs an IntNet (after fixed point), got {type(net).__name__}")
    T = check_timestep(timesteps)
    x = check_pixels(inputs if inputs is not None else
                     np.zeros((int(n_samples or 1), *net.input.shape), dtype=np.int64), net.input.shape, PIXEL_MAX)
    B, buf = x.shape[0], int(result_buffer or x.shape[0])
    depth, shapes = net.depths(), net.shapes()
    slot = T + depth[net.readout.name]
    win = dict(timesteps=T, slot=slot, n_samples=B, record_steps=record_steps, result_buffer=buf)
    params = {n.name: lif_parameters(n, limits) for n in net.nodes}  # refuse before building anything
    pops: dict = {INPUT_NAME: GradedSource(data=to_lava_layout(x, net.input.shape), timesteps=T, slot=slot,
                                           num_message_bits=GRADED_MESSAGE_BITS, name=INPUT_NAME)}
    lifs, counters, synapses = {}, {}, {}
    for node in net.nodes:
        p = params[node.name]
        lif = LIF(name=node.name, **p)
        synapses[node.name] = [connect_synapse(s, pops[s.source], shapes[s.source], lif.a_in, node.name,
                                               node.shape) for s in node.inputs]
        counter = Accumulator(shape=p["shape"], bias=np.zeros(p["shape"], dtype=np.int64), depth=depth[node.name],
                              name=f"{node.name}:spike_count", **win)
        lif.s_out.connect(counter.a_in)
        pops[node.name], lifs[node.name], counters[node.name] = lif, lif, counter
    r = net.readout
    readout = Accumulator(shape=lava_shape(r.shape), bias=per_neuron(r.bias, r.shape).reshape(-1),
                          depth=depth[r.name], name=r.name, **win)
    synapses[r.name] = [connect_synapse(s, pops[s.source], shapes[s.source], readout.a_in, r.name, r.shape)
                        for s in r.inputs]
    return LIFGraph(net=net, timesteps=T, n_samples=B, slot=slot, source=pops[INPUT_NAME], neurons=counters,
                    readout=readout, synapses=synapses, record_steps=record_steps, result_buffer=buf, lifs=lifs,
                    depths={n.name: depth[n.name] for n in net.nodes},
                    precharge={n: params[n]["v"] for n in params})


def _run_sample(graph: LIFGraph, cfg, timeout_s: Optional[float]) -> None:
    """One sample slot in segments, re-arming each depth's LIFs before their window (module doc)."""
    done = 0
    for d, names in graph.rearm_segments():
        if d > done:
            run_steps_or_raise(graph.readout, d - done, cfg, timeout_s)
            done = d
        for name in names:
            lif = graph.lifs[name]
            lif.v.set(np.full(lif.v.shape, graph.precharge[name], dtype=np.int64))
    if graph.slot > done:
        run_steps_or_raise(graph.readout, graph.slot - done, cfg, timeout_s)


def run_lif_graph(graph: LIFGraph, timeout_s: Optional[float] = None, progress: bool = False) -> Trace:
    """Compile and run `graph` sample by sample (segments per sample), drain, collect, tear down."""
    trace = run_sample_by_sample(graph, lambda k, cfg: _run_sample(graph, cfg, timeout_s), "lava-lif", progress)
    trace.extra["lif_models"] = sorted({type(p.model).__name__ if p.model is not None else
                                        getattr(p.model_class, "__name__", "?") for p in graph.lifs.values()})
    return trace


class LavaLIFBackend(LavaBackendFrame):
    """Mode "zero" IntNets on Lava 0.10's stock bit-accurate LIF (Loihi2SimCfg, tag fixed_pt). Hooks: it refuses
    a node not in mode "zero" or whose registers the LIF cannot hold (`lif_parameters`), builds `build_lif_graph`,
    runs sample by sample (`run_lif_graph`), and has no bundle of its own."""

    name = "lava-lif"
    label = BACKEND_LABEL
    who = "backend lava-lif"
    runs_on = "lava-lif"

    def refuse(self, net: IntNet, timesteps: int) -> None:
        """The mode first (before the fit check): its error names the node and the backend."""
        for node in net.nodes:
            lif_parameters(node, self.limits)

    def build(self, net: IntNet, timesteps: int = 8, inputs: Optional[np.ndarray] = None, **kw: Any) -> LIFGraph:
        """The Lava graph of `net` (`build_lif_graph`: n_samples, record_steps, result_buffer)."""
        return build_lif_graph(net, timesteps, inputs, limits=self.limits, **kw)

    def run_built(self, graph: LIFGraph, samples_per_run: int, timeout_s: Optional[float], progress: bool) -> Trace:
        """Sample by sample, re-arming each depth's LIFs (`run_lif_graph`); results drained every
        `samples_per_run` samples (the graph's result_buffer)."""
        return run_lif_graph(graph, timeout_s=timeout_s, progress=progress)

    def export(self, net: IntNet, out_dir: str | Path, *, timesteps: int = 8, force: bool = False,
               source: str = "") -> Path:
        raise ExportNotSupported("backend lava-lif has no bundle of its own: a mode zero chain exports for Lava's "
                                 "stock LIF with `na-deploy export --format netx` (lava-dl's loader); subtract-mode "
                                 "nets export with --format lava")


__all__ = ["LavaLIFBackend", "LIFGraph", "build_lif_graph", "run_lif_graph", "lif_parameters", "BACKEND_LABEL"]
