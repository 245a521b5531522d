"""Running a Lava graph without ever hanging (docs/contract.md: Lava facts, "Runtime"; contract C6).

* `let_lava_choose_fork()`: Lava sets the multiprocessing start method to fork when its process modules are
  imported; call this first (`graph.py` does) so an implicit earlier choice does not break that import.
* `run_graph(graph)`: compile and run a `LavaGraph` in chunks of samples, each `run` call supervised
  (`supervision.py`: a daemon thread, the workers polled every 0.25 s, a dead one -> `WorkerDied`, a
  `BackendFailure`; a timeout that scales with the first call), drain the results after each call, collect
  the Trace, and tear down: `stop()` after a healthy run, otherwise terminate the Lava processes
  (`abandon_runtime`: `stop()` hangs after a RuntimeError from `run`, a dead worker, a timeout or a signal),
  always join the external pipes' listener threads and unlink the shared-memory segments left.
* `run_sample_by_sample(graph, run_sample, ...)`: the same, one sample slot per call, for the backends that act
  on the host between or within slots (lava-lif re-arms its LIFs, netx reads the readout's v). Both share
  one supervised loop (`_run_supervised`).
* `model_exceptions(proc)`: the real exceptions of the Lava process models (Lava itself only logs them).

Trace.extra of a run: seconds_run, seconds_total, lava_steps (all samples), processes; `run_graph` adds
samples_per_run, slot_steps (Lava steps per sample: rho + T + the readout's
window start, which grows by T per "accumulate" layer: the latency of one inference) and offset_steps (rho);
`run_sample_by_sample` adds seconds_per_sample.

This module imports no Lava process (it never sets the start method itself).
"""
from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import sys
import time
from typing import Any, Callable, Optional

import numpy as np
from lava.magma.core.run_configs import Loihi2SimCfg

from na_deploy.errors import BackendFailure, SimulationError
from na_deploy.protocols import Trace

from na_deploy.hw_targets.loihi2.lava import supervision

RUN_TAG = "fixed_pt"
STOP_TIMEOUT_S = 60.0  # a healthy `stop()` that takes longer is abandoned (terminate the workers)
_LAVA_MP_MODULE = "lava.magma.runtime.message_infrastructure.multiprocessing"


def let_lava_choose_fork() -> None:
    """Lava calls `multiprocessing.set_start_method("fork")` at import, which raises "context has already been
    set" once anything has touched the default context -- any tqdm bar does (it creates a multiprocessing
    lock). When the method in use is already "fork" (chosen implicitly), the choice is cleared with the
    public `set_start_method(None, force=True)` so Lava's own call succeeds and still gets fork; a process
    that deliberately chose another method is refused with a clear error instead of Lava's traceback."""
    if _LAVA_MP_MODULE in sys.modules:
        return
    method = mp.get_start_method(allow_none=True)
    if method not in (None, "fork"):
        raise SimulationError(f"Lava needs the multiprocessing start method 'fork', but this process already "
                              f"uses {method!r}; run the Lava backend in a process that has not chosen another")
    if method is not None:
        mp.set_start_method(None, force=True)


def var_as_int(var) -> np.ndarray:
    """Var.get() (Lava returns float64, exact for our integers) as int64 (small Vars only: one message per
    value), supervised like a run call (`supervised_get`)."""
    proc = getattr(var, "process", None)
    value = var.get() if proc is None else supervised_get(proc, var.get, f"Lava get of {var.name}")
    return np.rint(np.asarray(value, dtype=np.float64)).astype(np.int64)


def _infrastructure(proc):
    """(runtime, its message infrastructure) of a process that was run, or (None, None)."""
    return supervision.infrastructure(proc)


def model_exceptions(proc) -> list[tuple[BaseException, str]]:
    """(exception, traceback text) of every Lava actor (OS process) that raised, read from the runtime's
    message infrastructure (Lava itself only logs them)."""
    out = []
    _, infra = _infrastructure(proc)
    for actor in getattr(infra, "actors", []) or []:
        try:
            exc = actor.exception
        except Exception:  # pragma: no cover - closed pipe
            exc = None
        if exc:
            out.append(exc if isinstance(exc, tuple) else (exc, ""))
    return out


def abandon_runtime(proc) -> list[int]:
    """Tear down a runtime that cannot be stopped (after a model error, a dead worker, a timeout or a signal;
    `stop()` would hang): terminate (then kill) our Lava workers that are still alive, shut the shared-memory
    manager down, unlink the shared-memory segments left (`supervision`) -> pids that could not be ended."""
    supervision.stop_forking()
    left = supervision.kill_workers(proc)
    call = supervision.active().thread
    if call is not None and call.is_alive():  # interrupted while Lava was still starting workers: once more
        call.join(0.5)
    left = supervision.kill_workers(proc)  # a worker forked just before the first pass, not yet listed
    with contextlib.suppress(Exception):
        supervision.release_shared_memory()
    if supervision.outside_a_run():  # no run's `supervising` block will end the teardown: end it here
        supervision.resume_forking()
    return left


def default_timeout(steps: int) -> float:
    """Seconds allowed for the first `run` call of `steps` Lava steps before the run counts as hung (later
    calls: `supervision.timeout_budget` with the first call's measured seconds per step)."""
    return supervision.timeout_budget(steps)


def default_samples_per_run(n_samples: int) -> int:
    """Samples per `run` call: about 20 calls (a progress bar that moves), at most 32 samples buffered."""
    return max(1, min(32, math.ceil(n_samples / 20)))


def run_blocking(proc, steps: int, cfg, timeout_s: Optional[float]) -> None:
    """proc.run(RunSteps(steps)) supervised (`supervision.Supervisor.run`: a daemon thread, the workers polled):
    TimeoutError when it does not return in `timeout_s` (None: the run's budget), WorkerDied when a worker
    dies."""
    sup = supervision.active()
    if timeout_s is None:
        sup.run(proc, steps, cfg)
    else:
        from lava.magma.core.run_conditions import RunSteps

        sup.call(proc, lambda: proc.run(condition=RunSteps(num_steps=int(steps)), run_cfg=cfg),
                 f"Lava run of {steps} steps", supervision.check_timeout(timeout_s))


def describe_model_errors(proc, fallback: str) -> str:
    """The first model exception as one line "Type: message at File ..." (+ how many more), else fallback."""
    errs = model_exceptions(proc)
    if not errs:
        return fallback
    exc, tb = errs[0]
    last = [ln for ln in (tb or "").strip().splitlines() if ln.strip()]
    where = ""
    for ln in reversed(last):
        if ln.strip().startswith("File "):
            where = " at " + ln.strip()
            break
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{type(exc).__name__}: {exc}{where}{more}"


def _model_failure(proc, fallback: str) -> SimulationError:
    err = SimulationError("Lava process model failed: " + describe_model_errors(proc, fallback))
    errs = model_exceptions(proc)
    err.lava_traceback = errs[0][1] if errs else ""
    if errs:
        err.__cause__ = errs[0][0]
    return err


def run_steps_or_raise(proc, steps: int, cfg, timeout_s: Optional[float]) -> None:
    """One supervised `run` call: a hang -> BackendFailure after the timeout (`timeout_s`, else the run's
    budget: `supervision.timeout_budget`); a dead worker -> WorkerDied (a BackendFailure naming it) within
    about `supervision.POLL_S`; a model error -> SimulationError with the model's own exception message
    (traceback text in `.lava_traceback`)."""
    try:
        run_blocking(proc, steps, cfg, timeout_s)
    except TimeoutError as e:
        raise BackendFailure(f"{e} (hung); Lava process errors: "
                             f"{describe_model_errors(proc, 'none reported (a process is blocked)')}; "
                             "rerun with a larger --timeout if the net is only slow") from None
    except supervision.WorkerDied as e:
        if model_exceptions(proc):  # it died of a model error: report that error
            raise _model_failure(proc, str(e)) from None
        raise
    except RuntimeError as e:
        raise _model_failure(proc, str(e)) from None


def supervised_get(proc, fn: Callable[[], Any], what: str = "Lava get") -> Any:
    """fn() (a Var.get / set on `proc`'s running runtime) supervised like a run call: a dead worker ->
    WorkerDied, no answer within the run's budget for one step -> BackendFailure."""
    sup = supervision.active()
    try:
        return sup.call(proc, fn, what, sup.budget(1))
    except TimeoutError as e:
        raise BackendFailure(f"{e} (hung)") from None


def teardown(graph, healthy: bool) -> None:
    """End the graph's runtime: `stop()` when the last run call succeeded (and only then: it hangs
    otherwise; supervised, and abandoned if a worker dies during it), else `abandon_runtime`; then join the
    external pipes' listener threads and unlink any shared-memory segment of ours still there. SIGINT /
    SIGTERM arriving meanwhile wait until it is done. What could not be ended is recorded for the CLI's
    `interrupted: ...` line (`na_deploy.runlock.note_left`)."""
    from na_deploy.runlock import note_left, note_stopped

    proc = graph.readout
    left: list[int] = []
    n_workers = len(supervision.workers(proc))
    segments = supervision.ledger().names()
    with supervision.deferred_signals():
        try:
            if healthy:
                try:
                    supervision.active().call(proc, proc.stop, "Lava stop", STOP_TIMEOUT_S, stopping=True)
                except (Exception, supervision.WorkerDied):  # noqa: BLE001 - torn down the hard way instead
                    left = abandon_runtime(proc)
            else:  # also when the runtime is not made yet: a call thread may still be starting it
                left = abandon_runtime(proc)
        finally:
            graph.close_pipes()
            with contextlib.suppress(Exception):
                supervision.release_shared_memory()
    shm_left = [n for n in segments if os.path.exists(f"/dev/shm/{n}")]
    if not healthy:  # what an interrupt's one line says was stopped (cli/main.py `interrupted`)
        note_stopped("lava", f"Lava stopped ({n_workers - len(left)} of its {n_workers} processes ended, "
                             f"{len(segments) - len(shm_left)} shared-memory segments removed)")
    if left:
        note_left(f"Lava worker processes {', '.join(map(str, left))} (could not be ended)")
    if shm_left:
        note_left(f"{len(shm_left)} shared-memory segments /dev/shm/{shm_left[0]}... (the next run sweeps them)")


def _run_supervised(graph, units: list[tuple[int, int]], run_unit: Callable[[int, object], None], desc: str,
                    progress: bool, timeout_s: Optional[float] = None) -> Trace:
    """The loop every Lava run shares: compile and run `graph` unit by unit (`run_unit(i, cfg)`: one supervised
    chunk of `run` calls; units[i] = (samples it covers, samples to drain after it, 0: none yet)), collect the
    Trace (extra: seconds_run, seconds_total, lava_steps, processes), tear down: `stop()` only after a
    successful run call (it hangs otherwise), else `abandon_runtime`."""
    cfg = Loihi2SimCfg(select_tag=RUN_TAG)
    healthy, t0, bar = False, time.perf_counter(), None  # healthy: True only between successful run calls
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=graph.n_samples, desc=desc, unit="sample", leave=False)
    sup = supervision.supervising(timeout_s)
    sup.__enter__()  # exited after teardown (which uses the run's supervisor)
    try:
        for i, (samples, drain) in enumerate(units):
            healthy = False
            run_unit(i, cfg)
            healthy = True
            if drain:
                graph.drain(samples=drain)
            if bar is not None:
                bar.update(samples)
        t_run = time.perf_counter() - t0
        trace = graph.collect()
        trace.extra.update(seconds_run=t_run, seconds_total=time.perf_counter() - t0, lava_steps=graph.num_steps,
                           processes=len(graph.processes))
        return trace
    finally:
        try:
            if bar is not None:
                bar.close()
            teardown(graph, healthy)
        finally:
            sup.__exit__(None, None, None)


def run_graph(graph, samples_per_run: Optional[int] = None, timeout_s: Optional[float] = None,
              progress: bool = False) -> Trace:
    """Compile and run `graph` (a `graph.LavaGraph`) for all its samples (chunks of `samples_per_run` <=
    graph.result_buffer per `run` call, results drained after each), collect the Trace (extra also:
    samples_per_run, slot_steps, offset_steps), tear down. A model error -> SimulationError with the model's own
    exception message (the traceback text is in the exception's `lava_traceback`); a hang -> SimulationError
    after `timeout_s` per run call."""
    per = min(int(samples_per_run or default_samples_per_run(graph.n_samples)), graph.result_buffer)
    chunks = [min(per, graph.n_samples - s) for s in range(0, graph.n_samples, per)]
    trace = _run_supervised(graph, [(n, n) for n in chunks],
                            lambda i, cfg: run_steps_or_raise(graph.readout, chunks[i] * graph.slot, cfg, timeout_s),
                            "lava", progress, timeout_s)
    trace.extra.update(samples_per_run=per, slot_steps=graph.slot, offset_steps=getattr(graph, "offset_steps", 0))
    return trace


def run_sample_by_sample(graph, run_sample: Callable[[int, object], None], desc: str,
                         progress: bool = False, timeout_s: Optional[float] = None) -> Trace:
    """Compile and run `graph` one sample slot per `run_sample(k, cfg)` call (for backends that act on the host
    between or within slots: re-arming a Var, reading one), draining the result pipes every
    `graph.result_buffer` samples; collect the Trace (extra also: seconds_per_sample), tear down as `run_graph`
    does."""
    B, buf = graph.n_samples, graph.result_buffer
    units = [(1, (k % buf) + 1 if (k + 1) % buf == 0 or k + 1 == B else 0) for k in range(B)]
    trace = _run_supervised(graph, units, run_sample, desc, progress, timeout_s)
    trace.extra["seconds_per_sample"] = trace.extra["seconds_run"] / B
    return trace


__all__ = ["RUN_TAG", "let_lava_choose_fork", "var_as_int", "model_exceptions", "abandon_runtime",
           "default_timeout", "default_samples_per_run", "run_blocking", "describe_model_errors",
           "run_steps_or_raise", "supervised_get", "teardown", "run_graph", "run_sample_by_sample"]
