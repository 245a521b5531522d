"""`LavaBackendFrame`: what the three Lava backends of the Loihi 2 target share (`na_deploy.protocols.Backend`).

    name        class, module                              runs                                  export
    "lava"      LavaBackend, lava/backend.py              our SubtractiveIF process (processes/) lava/export.py
    "lava-lif"  LavaLIFBackend, lava/lif_backend.py       Lava's stock LIF, mode "zero"          none
    "netx"      NetxBackend, netx/backend.py              lava-dl's netx loader, mode "zero"     netx/export.py

The frame owns a backend's identity (bound to one target, whose limits it uses) and `run`, the same steps for
all: check T and that the net is an IntNet, refuse what this backend cannot run (`refuse`), the target's fit
check, the pixels (C4), samples per run call, build the graph (`graph_for_run`), `on_build`, run it
(`run_built`), record the build time. A backend overrides only its hooks, as Lava's own
`AbstractPyLifModelFixed` leaves each LIF variant only its spiking and reset rule:

    refuse(net, T)                    FitError for what it cannot run, before the fit check (default: nothing)
    build(net, T, inputs, **kw)       the graph, not compiled (public: tests and scripts build graphs)
    graph_for_run(net, T, x, **kw)    context manager: the graph of one run (default: `build`; netx writes its
                                      file into a temporary folder that lives as long as the run)
    run_built(graph, per, timeout_s, progress)   compile, run every sample, collect, tear down -> Trace
    export(net, out_dir, ...)         the backend's bundle, or ExportNotSupported

Importing this module imports Lava (through lava/runtime.py); the target imports its backends lazily.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Optional

import numpy as np

from na_deploy.checks import PIXEL_MAX, check_pixels, check_timestep
from na_deploy.errors import ExportNotSupported, SimulationError
from na_deploy.ir import IntNet
from na_deploy.protocols import Trace, require_fit

from na_deploy.hw_targets.loihi2.lava.runtime import default_samples_per_run
from na_deploy.hw_targets.loihi2.lava.supervision import check_timeout


class LavaBackendFrame:
    """A Lava backend of one `Loihi2Target`: `run` (the same for every backend) around the hooks of the module doc.

    Class attributes of a backend: `name` (its --backend name), `label` (what ran, recorded in traces and
    reports), `who` (the start of its "runs an IntNet" error) and `runs_on` (the end of its fit refusal)."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    who: ClassVar[str] = ""
    runs_on: ClassVar[str] = ""

    def __init__(self, target: Any):
        self.target = target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target={self.target!r})"

    @property
    def limits(self):
        """The target's `Loihi2Limits`."""
        return self.target.limits

    # -- the hooks
    def refuse(self, net: IntNet, timesteps: int) -> None:
        """Raise FitError (naming the node) for what this backend cannot run; checked before the fit check."""

    def build(self, net: IntNet, timesteps: int = 8, inputs: Optional[np.ndarray] = None, **kw: Any):
        """The backend's graph of `net` (not compiled)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def graph_for_run(self, net: IntNet, timesteps: int, inputs: np.ndarray, **kw: Any) -> Iterator[Any]:
        """The graph one `run` builds, alive while the run lasts (kw: record_steps, result_buffer, a backend's
        own build options)."""
        yield self.build(net, timesteps, inputs, **kw)

    def run_built(self, graph: Any, samples_per_run: int, timeout_s: Optional[float], progress: bool) -> Trace:
        """Compile and run every sample of `graph`, collect the Trace, tear down."""
        raise NotImplementedError

    def export(self, net: IntNet, out_dir: str | Path, *, timesteps: int = 8, force: bool = False,
               source: str = "") -> Path:
        """The bundle `na-deploy export` writes -> its folder."""
        raise ExportNotSupported(f"backend {self.name} has no export bundle")

    # -- the frame
    def run(self, net: IntNet, inputs: np.ndarray, timesteps: int, *, record_steps: bool = False,
            progress: bool = False, samples_per_run: Optional[int] = None, timeout_s: Optional[float] = None,
            check_fit: bool = True, on_build: Optional[Callable[[Any], None]] = None, **options: Any) -> Trace:
        """Run `net` on integer `inputs` (B, *input_shape) for T = `timesteps`: the reference simulator's Trace,
        spike_counts[node] (B, *shape) and readout (B, K), int64; with record_steps also Trace.step_spikes /
        step_readout (every window step of the last sample). Trace.extra: the run's timings (lava/runtime.py)
        and seconds_build.

        Refuses what the backend cannot run (`refuse`: FitError naming the node) and a net failing the target's
        fit check (check_fit=False skips that) before Lava starts. samples_per_run: samples per run call / held
        in the result pipes between drains. `on_build(graph)` may inspect or modify the graph before it runs
        (tests inject faults so). options: the backend's own build options (netx: netx_file). A model's own
        exception surfaces as SimulationError; a dead Lava worker or a hang as a BackendFailure (supervision.py);
        a run never hangs (timeout_s per run call: a finite number > 0, checked first; None: the default that
        scales with the first run call)."""
        T = check_timestep(timesteps)
        timeout_s = check_timeout(timeout_s)
        if not isinstance(net, IntNet):
            raise SimulationError(f"{self.who} runs an IntNet (after fixed point), got {type(net).__name__}")
        self.refuse(net, T)
        if check_fit:
            require_fit(self.target, net, T, suffix=f"; refusing to run it on {self.runs_on}")
        t0 = time.perf_counter()
        x = check_pixels(inputs, net.input.shape, PIXEL_MAX)
        per = int(samples_per_run or default_samples_per_run(len(x)))
        with self.graph_for_run(net, T, x, record_steps=record_steps, result_buffer=per, **options) as graph:
            if on_build is not None:
                on_build(graph)
            t_build = time.perf_counter() - t0
            trace = self.run_built(graph, per, timeout_s, progress)
        trace.extra["seconds_build"] = t_build
        return trace


__all__ = ["LavaBackendFrame"]
