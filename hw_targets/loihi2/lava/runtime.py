"""Running a Lava graph without ever hanging (docs/contract.md: Lava facts, "Runtime"; contract C6).

* `let_lava_choose_fork()`: Lava sets the multiprocessing start method to fork when its process modules are
  imported; call this first (`graph.py` does) so an implicit earlier choice does not break that import.
* `run_graph(graph)`: compile and run a `LavaGraph` in chunks of samples, each `run` call in a daemon thread
  with a timeout, drain the results after each call, collect the Trace, and tear down: `stop()` after a
  healthy run, otherwise terminate the Lava processes (`abandon_runtime`: `stop()` hangs after a
  RuntimeError from `run` or a timeout), and always join the external pipes' listener threads.
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

import math
import multiprocessing as mp
import sys
import threading
import time
from typing import Callable, Optional

import numpy as np
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg

from na_deploy.errors import SimulationError
from na_deploy.protocols import Trace

RUN_TAG = "fixed_pt"
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
    value)."""
    return np.rint(np.asarray(var.get(), dtype=np.float64)).astype(np.int64)


def _infrastructure(proc):
    """(runtime, its message infrastructure) of a process that was run, or (None, None)."""
    runtime = getattr(proc, "runtime", None) or getattr(proc, "_runtime", None)
    return runtime, getattr(runtime, "_messaging_infrastructure", None)


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


def abandon_runtime(proc) -> None:
    """Tear down a runtime that cannot be stopped (after a model error or a timeout; `stop()` would hang):
    terminate our Lava actors that are still alive, shut the shared-memory manager down."""
    runtime, infra = _infrastructure(proc)
    for actor in list(getattr(infra, "actors", []) or []):
        try:
            if actor.is_alive():
                actor.terminate()
                mp.Process.join(actor, 5)  # SystemProcess.join() takes no timeout
            if actor.is_alive():
                actor.kill()
                mp.Process.join(actor, 5)
        except (ValueError, AssertionError):  # already joined / closed by Lava
            pass
    for stop in (lambda: infra.smm.shutdown(), lambda: runtime._watchdog_manager.stop()):
        try:
            stop()
        except Exception:
            pass


def default_timeout(steps: int) -> float:
    """Seconds allowed for one `run` call of `steps` Lava steps before the run counts as hung."""
    return 120.0 + 5.0 * steps


def default_samples_per_run(n_samples: int) -> int:
    """Samples per `run` call: about 20 calls (a progress bar that moves), at most 32 samples buffered."""
    return max(1, min(32, math.ceil(n_samples / 20)))


def run_blocking(proc, steps: int, cfg, timeout_s: float) -> None:
    """proc.run(RunSteps(steps)) in a daemon thread; raise TimeoutError when it does not return in time."""
    box: dict = {}

    def target():
        try:
            proc.run(condition=RunSteps(num_steps=int(steps)), run_cfg=cfg)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target, name="lava-run", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise TimeoutError(f"Lava run of {steps} steps did not finish within {timeout_s:.0f} s")
    if "error" in box:
        raise box["error"]


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


def run_steps_or_raise(proc, steps: int, cfg, timeout_s: Optional[float]) -> None:
    """One supervised `run` call: a hang -> SimulationError after the timeout; a model error ->
    SimulationError with the model's own exception message (traceback text in `.lava_traceback`)."""
    try:
        run_blocking(proc, steps, cfg, timeout_s or default_timeout(steps))
    except TimeoutError as e:
        raise SimulationError(f"{e}; Lava process errors: "
                              f"{describe_model_errors(proc, 'none reported (a process is blocked)')}") from None
    except RuntimeError as e:
        err = SimulationError("Lava process model failed: " + describe_model_errors(proc, str(e)))
        errs = model_exceptions(proc)
        err.lava_traceback = errs[0][1] if errs else ""
        raise err from (errs[0][0] if errs else e)


def teardown(graph, healthy: bool) -> None:
    """End the graph's runtime: `stop()` when the last run call succeeded (and only then: it hangs
    otherwise), else `abandon_runtime`; then join the external pipes' listener threads."""
    proc = graph.readout
    try:
        if healthy:
            proc.stop()
        elif getattr(proc, "runtime", None) is not None:
            abandon_runtime(proc)
    finally:
        graph.close_pipes()


def _run_supervised(graph, units: list[tuple[int, int]], run_unit: Callable[[int, object], None], desc: str,
                    progress: bool) -> Trace:
    """The loop every Lava run shares: compile and run `graph` unit by unit (`run_unit(i, cfg)`: one supervised
    chunk of `run` calls; units[i] = (samples it covers, samples to drain after it, 0: none yet)), collect the
    Trace (extra: seconds_run, seconds_total, lava_steps, processes), tear down: `stop()` only after a
    successful run call (it hangs otherwise), else `abandon_runtime`."""
    cfg = Loihi2SimCfg(select_tag=RUN_TAG)
    healthy, t0, bar = False, time.perf_counter(), None  # healthy: True only between successful run calls
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=graph.n_samples, desc=desc, unit="sample", leave=False)
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
        if bar is not None:
            bar.close()
        teardown(graph, healthy)


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
                            "lava", progress)
    trace.extra.update(samples_per_run=per, slot_steps=graph.slot, offset_steps=getattr(graph, "offset_steps", 0))
    return trace


def run_sample_by_sample(graph, run_sample: Callable[[int, object], None], desc: str,
                         progress: bool = False) -> Trace:
    """Compile and run `graph` one sample slot per `run_sample(k, cfg)` call (for backends that act on the host
    between or within slots: re-arming a Var, reading one), draining the result pipes every
    `graph.result_buffer` samples; collect the Trace (extra also: seconds_per_sample), tear down as `run_graph`
    does."""
    B, buf = graph.n_samples, graph.result_buffer
    units = [(1, (k % buf) + 1 if (k + 1) % buf == 0 or k + 1 == B else 0) for k in range(B)]
    trace = _run_supervised(graph, units, run_sample, desc, progress)
    trace.extra["seconds_per_sample"] = trace.extra["seconds_run"] / B
    return trace


__all__ = ["RUN_TAG", "let_lava_choose_fork", "var_as_int", "model_exceptions", "abandon_runtime",
           "default_timeout", "default_samples_per_run", "run_blocking", "describe_model_errors",
           "run_steps_or_raise", "teardown", "run_graph", "run_sample_by_sample"]
