"""Backend "lava" of the Loihi 2 target: IntNet -> Lava process graph (Loihi2SimCfg, `fixed_pt`) -> Trace.

`LavaBackend(target)` is a `frame.LavaBackendFrame` (`na_deploy.protocols.Backend`: build / run / export) with the
limits of the target it was made for (`Loihi2Target.backend()` makes it). Its hooks: the graph is
`graph.build_lava_graph` (which refuses what our process cannot run), it runs in chunks of samples per Lava run
call (`runtime.run_graph`), and it exports the bundle of `export.export_lava_bundle`. Importing this module
imports Lava (which sets the multiprocessing start method to fork); the target imports it lazily.

The modules behind it (hw_targets/loihi2/lava/):
    layout.py     IR <-> Lava layouts, dense / conv / pool weight mapping, what Lava's Dense keeps
    graph.py      LavaGraph, connect_synapse, build_lava_graph (the process graph, not compiled)
    runtime.py    running a graph: run calls in chunks, model errors, teardown
    supervision.py  the run calls watched: dead workers, a timeout scaled by the first call, signals, shm
    frame.py      LavaBackendFrame, the `run` every Lava backend shares
    export.py     the bundle `na-deploy export` writes (templates/ hold its script and README)
    processes/    the Lava processes and their fixed_pt models (SubtractiveIF, Accumulator, GradedSource, ConvFast)

Neuron models it runs (`processes.process.NEURON_MODELS`): "subtract", "negative" (signed spikes, sent as
graded messages), "accumulate" (consumers' windows shifted by T) and two-stage offset calibration of subtract
nets (meta offset_steps rho: every sample runs rho + T steps per window). Trace.event_counts holds the messages
sent per sample where they differ from the counts (negative spikes, stage-1 spikes).

Run a graph in your own Lava session: `graph = build_lava_graph(net, T, x)`,
`graph.readout.run(condition=RunSteps(num_steps=graph.num_steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))`,
`graph.collect()` -> Trace, then `graph.readout.stop()`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from na_deploy.ir import IntNet
from na_deploy.protocols import Trace

from na_deploy.hw_targets.loihi2.lava.graph import BACKEND_LABEL, LavaGraph, build_lava_graph, connect_synapse
from na_deploy.hw_targets.loihi2.lava.export import export_lava_bundle
from na_deploy.hw_targets.loihi2.lava.frame import LavaBackendFrame
from na_deploy.hw_targets.loihi2.lava.layout import (conv_weights_for_lava, dense_weights_for_lava, from_lava_layout,
                                                     lava_kept_weights, lava_shape, to_lava_layout)
from na_deploy.hw_targets.loihi2.lava.runtime import abandon_runtime, model_exceptions, run_graph, teardown, var_as_int


class LavaBackend(LavaBackendFrame):
    """Lava 0.10's CPU simulation of Loihi 2 (Loihi2SimCfg, tag fixed_pt) with our SubtractiveIF process."""

    name = "lava"
    label = BACKEND_LABEL
    who = "the Lava backend"
    runs_on = "Lava"

    def build(self, net: IntNet, timesteps: int = 8, inputs: Optional[np.ndarray] = None, **kw: Any) -> LavaGraph:
        """The Lava process graph of `net` (`build_lava_graph`: n_samples, record_steps, result_buffer,
        offset_steps)."""
        return build_lava_graph(net, timesteps, inputs, **kw)

    def run_built(self, graph: LavaGraph, samples_per_run: int, timeout_s: Optional[float], progress: bool) -> Trace:
        """All samples in one runtime, `samples_per_run` per Lava run call (`run_graph`)."""
        return run_graph(graph, samples_per_run=samples_per_run, timeout_s=timeout_s, progress=progress)

    def export(self, net: IntNet, out_dir: str | Path, *, timesteps: int = 8, force: bool = False,
               source: str = "") -> Path:
        """The bundle `na-deploy export` writes (`export.export_lava_bundle`) -> its folder."""
        return export_lava_bundle(net, out_dir, self.target, timesteps=timesteps, force=force, source=source)


__all__ = ["LavaBackend", "LavaGraph", "build_lava_graph", "connect_synapse", "run_graph", "teardown",
           "lava_shape", "to_lava_layout", "from_lava_layout", "dense_weights_for_lava", "conv_weights_for_lava",
           "lava_kept_weights", "model_exceptions", "abandon_runtime", "var_as_int", "export_lava_bundle",
           "BACKEND_LABEL"]
