"""The Lava backend of the Loihi 2 target: IntNet -> Lava process graph (Loihi2SimCfg, `fixed_pt`) -> Trace.

`LavaBackend(target)` implements `na_deploy.protocols.Backend` (build / run / export) with the limits of the
target it was made for (`Loihi2Target.backend()` makes it). Importing this module imports Lava (which sets
the multiprocessing start method to fork); the target imports it lazily.

The rooms behind this facade:
    lava_layout.py   IR <-> Lava layouts, dense / conv / pool weight mapping, what Lava's Dense keeps
    lava_graph.py    LavaGraph, connect_synapse, build_lava_graph (the process graph, not compiled)
    lava_runtime.py  running a graph: run calls in a thread with a timeout, model errors, teardown
    lava_export.py   the bundle `na-deploy export` writes (templates/ hold its script and README)
    processes/       the Lava processes and their fixed_pt models (SubtractiveIF, Accumulator, GradedSource)

Neuron models it runs (`processes.process.NEURON_MODELS`): "subtract", "negative" (signed spikes, sent as
graded messages), "accumulate" (consumers' windows shifted by T) and two-stage offset calibration of subtract
nets (meta offset_steps rho: every sample runs rho + T steps per window). Trace.event_counts holds the messages
sent per sample where they differ from the counts (negative spikes, stage-1 spikes).

Run a graph in your own Lava session: `graph = build_lava_graph(net, T, x)`,
`graph.readout.run(condition=RunSteps(num_steps=graph.num_steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))`,
`graph.collect()` -> Trace, then `graph.readout.stop()`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from na_deploy.checks import check_pixels, check_timestep
from na_deploy.errors import SimulationError
from na_deploy.ir import IntNet
from na_deploy.protocols import Trace, require_fit

from na_deploy.hw_targets.loihi2.lava.export import export_lava_bundle
from na_deploy.hw_targets.loihi2.lava.graph import BACKEND_LABEL, PIXEL_MAX, LavaGraph, build_lava_graph, connect_synapse
from na_deploy.hw_targets.loihi2.lava.layout import (conv_weights_for_lava, dense_weights_for_lava, from_lava_layout, lava_kept_weights,
                          lava_shape, to_lava_layout)
from na_deploy.hw_targets.loihi2.lava.runtime import (abandon_runtime, default_samples_per_run, model_exceptions, run_graph, teardown,
                           var_as_int)


class LavaBackend:
    """Lava 0.10's CPU simulation of Loihi 2 (Loihi2SimCfg, tag fixed_pt) for one `Loihi2Target`."""

    name = "lava"
    label = BACKEND_LABEL

    def __init__(self, target: Any):
        self.target = target

    def __repr__(self) -> str:
        return f"LavaBackend(target={self.target!r})"

    def build(self, net: IntNet, timesteps: int = 8, inputs: Optional[np.ndarray] = None, **kw: Any) -> LavaGraph:
        """The Lava process graph of `net` (`build_lava_graph`: n_samples, record_steps, result_buffer)."""
        return build_lava_graph(net, timesteps, inputs, **kw)

    def run(self, net: IntNet, inputs: np.ndarray, timesteps: int, *, record_steps: bool = False,
            progress: bool = False, samples_per_run: Optional[int] = None, timeout_s: Optional[float] = None,
            check_fit: bool = True, on_build: Optional[Callable[[LavaGraph], None]] = None) -> Trace:
        """Run `net` on integer `inputs` (B, *input_shape) for T = `timesteps`, all samples in one runtime.

        Returns the reference simulator's Trace: spike_counts[node] (B, *shape) and readout (B, K), int64;
        with record_steps also Trace.step_spikes / step_readout (every window step of the last sample).
        Refuses (FitError) a net failing the target's fit check before Lava starts (check_fit=False skips
        it). `on_build(graph)` may inspect or modify the graph before it runs (tests inject faults so).
        A model's own exception surfaces as SimulationError; a run never hangs (timeout_s per run call)."""
        T = check_timestep(timesteps)
        if not isinstance(net, IntNet):
            raise SimulationError(f"the Lava backend runs an IntNet (after fixed point), got {type(net).__name__}")
        if check_fit:
            require_fit(self.target, net, T, suffix="; refusing to run it on Lava")
        t0 = time.perf_counter()
        x = check_pixels(inputs, net.input.shape, PIXEL_MAX)
        per = int(samples_per_run or default_samples_per_run(len(x)))
        graph = build_lava_graph(net, T, x, record_steps=record_steps, result_buffer=per)
        if on_build is not None:
            on_build(graph)
        t_build = time.perf_counter() - t0
        trace = run_graph(graph, samples_per_run=per, timeout_s=timeout_s, progress=progress)
        trace.extra["seconds_build"] = t_build
        return trace

    def export(self, net: IntNet, out_dir: str | Path, *, timesteps: int = 8, force: bool = False,
               source: str = "") -> Path:
        """The bundle `na-deploy export` writes (`lava_export.export_lava_bundle`) -> its folder."""
        return export_lava_bundle(net, out_dir, self.target, timesteps=timesteps, force=force, source=source)


__all__ = ["LavaBackend", "LavaGraph", "build_lava_graph", "connect_synapse", "run_graph", "teardown",
           "lava_shape", "to_lava_layout", "from_lava_layout", "dense_weights_for_lava", "conv_weights_for_lava",
           "lava_kept_weights", "model_exceptions", "abandon_runtime", "var_as_int", "export_lava_bundle",
           "BACKEND_LABEL"]
