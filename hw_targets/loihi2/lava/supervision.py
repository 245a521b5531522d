"""Supervising a running Lava runtime (issue 22): dead workers, hangs, signals, shared memory.

Graph building (`graph.py`) stays pure; this module watches the OS side of a run while `runtime.py` drives it:

* `Supervisor.call(proc, fn, ...)`: a Lava call (`run`, `get`) in a daemon thread; the calling (main) thread
  polls every `POLL_S` seconds whether one of the runtime's workers (the OS processes of its Lava processes and
  runtime services, and the shared-memory manager) has died -> `WorkerDied` (a `BackendFailure`, CLI exit 3)
  naming the worker (pid, Lava process, exit code or signal), or whether the call ran past its budget ->
  `TimeoutError`. SIGINT / SIGTERM reach the main thread at once (the poll is a short `join`).
* `timeout_budget(steps, first_seconds_per_step)`: the default budget of one call: 120 s + 5 s per step for
  the first call (it compiles and starts the runtime), then max(60 s, 20 x the first call's seconds per step x
  steps). An explicit timeout (`--timeout`) replaces it.
* Workers ignore Ctrl-C and die quietly on SIGTERM: a process forked by a call thread (Lava forks its workers
  in the first `run`) ignores SIGINT and gets SIGTERM's default action back (it inherited the CLI's handler,
  which raises), so a SIGINT to the whole process group reaches only the parent, which tears them down, and
  a terminated worker prints no traceback. Once a teardown has begun (`stop_forking`), a worker that Lava
  is still starting exits at once (an interrupt during start-up leaves nothing running).
* Shared memory (`shm_ledger.py`): the segments a run creates are recorded as Lava creates them; teardown
  unlinks whatever is left of ours (`release_shared_memory`), and every supervised run starts by sweeping the
  segments of runs whose process is gone (a kill -9).
* `kill_workers(proc)`: terminate (then kill) every worker still alive and shut the shared-memory manager
  down; `deferred_signals()`: SIGINT / SIGTERM wait while teardown runs (they are delivered after it).

This module imports Lava only inside the functions that touch a runtime.
"""
from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import signal
import threading
import time
from typing import Any, Callable, Iterator, Optional

from na_deploy.errors import BackendFailure, SimulationError

from na_deploy.hw_targets.loihi2.lava.shm_ledger import install_shm_ledger, ledger, sweep_dead_ledgers

POLL_S = 0.25  # how often the children are checked while a Lava call runs
FIRST_CALL_S, FIRST_CALL_PER_STEP_S = 120.0, 5.0  # the first call's budget: compile + start + steps
LATER_MIN_S, LATER_FACTOR = 60.0, 20.0  # later calls: max(60 s, 20 x measured seconds per step x steps)


class WorkerDied(BackendFailure):
    """A Lava worker process died during a run call (pid, name and how in the message)."""

    def __init__(self, message: str, pid: int = 0, name: str = "", how: str = ""):
        super().__init__(message)
        self.pid, self.name, self.how = pid, name, how


# ----------------------------------------------------------------------------------------------- timeouts
def check_timeout(timeout_s: Optional[float], what: str = "timeout_s") -> Optional[float]:
    """None (the default budget) or a finite number of seconds > 0; SimulationError (one line) otherwise."""
    if timeout_s is None:
        return None
    try:
        t = float(timeout_s)
    except (TypeError, ValueError):
        t = math.nan
    if not (math.isfinite(t) and t > 0):
        raise SimulationError(f"{what} {timeout_s}: allowed: a finite number of seconds > 0 (or None: the default "
                              "scales with the first Lava run call)")
    return t


def timeout_budget(steps: int, first_seconds_per_step: Optional[float] = None) -> float:
    """Seconds one Lava call of `steps` steps may take before it counts as hung: 120 + 5 x steps for the first
    call (nothing measured yet; it compiles and starts the runtime), later max(60, 20 x the first call's
    seconds per step x steps)."""
    steps = max(1, int(steps))
    if first_seconds_per_step is None or not math.isfinite(first_seconds_per_step):
        return FIRST_CALL_S + FIRST_CALL_PER_STEP_S * steps
    return max(LATER_MIN_S, LATER_FACTOR * max(0.0, first_seconds_per_step) * steps)


# ----------------------------------------------------------------------------------------------- workers
def infrastructure(proc) -> tuple[Any, Any]:
    """(runtime, its message infrastructure) of a process that was run, or (None, None)."""
    runtime = getattr(proc, "runtime", None) or getattr(proc, "_runtime", None)
    return runtime, getattr(runtime, "_messaging_infrastructure", None)


def _manager_process(infra) -> Optional[mp.Process]:
    return getattr(getattr(getattr(infra, "smm", None), "_manager", None), "_process", None)


def _worker_names(runtime) -> list[str]:
    """What each actor is, in the order Lava starts them (`Runtime._build_processes`, then
    `_build_runtime_services`): "Lava process NAME (Type)" per process, then the runtime services."""
    exe = getattr(runtime, "_executable", None)
    names = [f"Lava process {getattr(p, 'name', '?')!r} ({type(p).__name__})"
             for p in (getattr(exe, "proc_builders", None) or {})]
    return names + ["the Lava runtime service"] * len(getattr(exe, "runtime_service_builders", None) or {})


def workers(proc) -> list[tuple[mp.Process, str]]:
    """(OS process, what it is) of every worker of `proc`'s runtime started so far: one per Lava process, the
    runtime services, the shared-memory manager."""
    runtime, infra = infrastructure(proc)
    out: list[tuple[mp.Process, str]] = []
    if infra is None:
        return out
    names = _worker_names(runtime)
    for i, actor in enumerate(list(getattr(infra, "actors", None) or [])):
        out.append((actor, names[i] if i < len(names) else "a Lava worker"))
    manager = _manager_process(infra)
    if manager is not None:
        out.append((manager, "the Lava shared-memory manager"))
    return out


def _exitcode(p: mp.Process) -> Optional[int]:
    """Its exit code when it has ended (reaped without blocking), else None (running, not started, closed)."""
    popen = getattr(p, "_popen", None)
    if popen is None:
        return None
    try:
        return popen.poll()
    except (OSError, ValueError):
        return None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def dead_worker(proc, stopping: bool = False) -> Optional[WorkerDied]:
    """The first worker of `proc`'s runtime that has ended, as a WorkerDied error (None: all alive).
    stopping: the runtime is being stopped, so workers end with exit code 0: only other ends count."""
    for p, name in workers(proc):
        code = _exitcode(p)
        if code is None or (stopping and code == 0):
            continue
        how = describe_exit(code)
        return WorkerDied(f"{name} (pid {p.pid}) {how} during the Lava run; the run was stopped and every Lava "
                          "process and shared-memory segment removed; rerun (if it recurs, check memory: "
                          "`dmesg | grep -i kill`)", pid=p.pid or 0, name=name, how=how)
    return None


def kill_workers(proc, grace_s: float = 3.0) -> list[int]:
    """Terminate every worker of `proc`'s runtime still alive, and any other Lava worker (SystemProcess) of this
    process (one Lava was starting when the runtime was read), SIGTERM to all, then SIGKILL after `grace_s`;
    reap them, shut the shared-memory manager down and mark the runtime stopped (so Lava's `__del__` does
    not call `stop()`, which hangs) -> pids that could not be ended."""
    runtime, infra = infrastructure(proc)
    procs = [p for p, _ in workers(proc)]
    procs += [c for c in mp.active_children() if type(c).__name__ == "SystemProcess" and c not in procs]
    for p in procs:
        if _exitcode(p) is None and getattr(p, "_popen", None) is not None:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                p._popen.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        while _exitcode(p) is None and getattr(p, "_popen", None) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
    left = []
    for p in procs:
        if _exitcode(p) is None and getattr(p, "_popen", None) is not None:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                p._popen.kill()
            t_end = time.monotonic() + 2.0
            while _exitcode(p) is None and time.monotonic() < t_end:
                time.sleep(0.02)
            if _exitcode(p) is None:
                left.append(p.pid)
    smm = getattr(infra, "smm", None)
    for stop in (lambda: smm.shutdown(), lambda: runtime._watchdog_manager.stop()):
        with contextlib.suppress(Exception):
            stop()
    if runtime is not None:
        with contextlib.suppress(Exception):
            runtime._is_started = runtime._is_running = False
    return left


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """SIGINT and SIGTERM wait while the block runs (their handlers only record them) and are raised again after
    it, with the old handlers back: a second Ctrl-C does not cut a teardown short. Main thread only (elsewhere
    the block runs as is)."""
    got: list[int] = []
    old: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, lambda signum, frame: got.append(signum))
    except ValueError:  # not the main thread
        for sig, handler in old.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        yield
        return
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for sig in dict.fromkeys(got):
            signal.raise_signal(sig)


# ------------------------------------------------------------------------------------------------ calls
CALL_THREAD = "na-deploy-lava-call"  # the name of the threads that make Lava calls (and fork its workers)
_STOPPING = False  # set by `stop_forking()` when a teardown starts: a worker forked after it exits at once


_GATE = threading.Lock()  # held by Lava's build_actor (fork + listing the worker) and by stop_forking


class TearingDown(RuntimeError):
    """Raised in a call thread that tries to start a Lava worker after a teardown has begun."""


def stop_forking() -> None:
    """From now until the next run, Lava starts no worker: `build_actor` raises TearingDown, and a process a
    call thread forks anyway exits at once. Waits for a worker being started to be listed in the runtime,
    so the teardown that follows sees every worker."""
    global _STOPPING
    with _GATE:
        _STOPPING = True


def resume_forking() -> None:
    """The teardown is over: Lava may start workers again (a later run, or Lava used directly in this process)."""
    global _STOPPING
    with _GATE:
        _STOPPING = False


def outside_a_run() -> bool:
    """Whether no `supervising` block is open (a teardown there ends the run's forking for good)."""
    return _ACTIVE is None


def install_fork_gate() -> None:
    """Lava's `MultiProcessing.build_actor` (fork one worker and list it) under `_GATE`, refused once a teardown
    has begun (idempotent)."""
    from lava.magma.runtime.message_infrastructure.multiprocessing import MultiProcessing

    if getattr(MultiProcessing.build_actor, "_na_deploy_gate", False):
        return
    original = MultiProcessing.build_actor

    def build_actor(self, *args, **kwargs):
        with _GATE:
            if _STOPPING:
                raise TearingDown("the Lava run is being torn down; no new worker")
            return original(self, *args, **kwargs)

    build_actor._na_deploy_gate = True
    MultiProcessing.build_actor = build_actor


def _worker_after_fork() -> None:
    """In a process forked by a Lava call thread (a Lava worker): ignore SIGINT, default SIGTERM (die quietly:
    it inherited the CLI's handler, which raises); exit at once when a teardown has begun."""
    if threading.current_thread().name != CALL_THREAD:
        return
    if _STOPPING:
        os._exit(0)
    with contextlib.suppress(Exception):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_worker_after_fork)


class Supervisor:
    """Watches the Lava calls of one run: `call` polls for dead workers and the timeout; the first `run`
    call's seconds per step set the budget of later ones (unless `timeout_s` is given)."""

    def __init__(self, timeout_s: Optional[float] = None, poll_s: float = POLL_S):
        self.timeout_s = check_timeout(timeout_s)
        self.poll_s = poll_s
        self.first_seconds_per_step: Optional[float] = None
        self.thread: Optional[threading.Thread] = None  # the latest call's thread (may still run after a raise)

    def budget(self, steps: int) -> float:
        """Seconds the next call of `steps` steps may take."""
        return self.timeout_s if self.timeout_s is not None else timeout_budget(steps, self.first_seconds_per_step)

    def call(self, proc, fn: Callable[[], Any], what: str, budget_s: float, stopping: bool = False) -> Any:
        """fn() (a Lava call on `proc`'s runtime) in a daemon thread that blocks SIGINT (so the workers it
        forks ignore Ctrl-C), polled every poll_s: WorkerDied when a worker has died (stopping: `stop()`, where
        workers end with code 0, so only another end counts), TimeoutError after budget_s; fn's own exception
        is re-raised here."""
        box: dict = {}

        def target():
            with contextlib.suppress(OSError, ValueError, AttributeError):
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                box["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = e

        t = self.thread = threading.Thread(target=target, name=CALL_THREAD, daemon=True)
        deadline = time.monotonic() + budget_s
        t.start()
        return self._wait(proc, t, box, what, budget_s, deadline, stopping)

    def _wait(self, proc, t: threading.Thread, box: dict, what: str, budget_s: float, deadline: float,
              stopping: bool) -> Any:
        while True:
            t.join(min(self.poll_s, max(0.0, deadline - time.monotonic())))
            if not t.is_alive():
                break
            died = dead_worker(proc, stopping)
            if died is not None:
                t.join(self.poll_s)  # let a model error that killed it reach `run` first
                if not t.is_alive() and "error" in box:
                    break
                raise died
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{what} did not finish within {budget_s:.0f} s")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def run(self, proc, steps: int, cfg) -> None:
        """proc.run(RunSteps(steps)) supervised; the first call's seconds per step are remembered."""
        from lava.magma.core.run_conditions import RunSteps

        t0 = time.perf_counter()
        self.call(proc, lambda: proc.run(condition=RunSteps(num_steps=int(steps)), run_cfg=cfg),
                  f"Lava run of {steps} steps", self.budget(steps))
        if self.first_seconds_per_step is None:
            self.first_seconds_per_step = (time.perf_counter() - t0) / max(1, int(steps))


_ACTIVE: Optional[Supervisor] = None


def active() -> Supervisor:
    """The supervisor of the run in progress (a fresh one with the default budget outside a run)."""
    return _ACTIVE if _ACTIVE is not None else Supervisor()


@contextlib.contextmanager
def supervising(timeout_s: Optional[float] = None) -> Iterator[Supervisor]:
    """`with supervising(timeout_s) as sup:` the Lava calls of one run (`active()` is `sup` inside); first
    sweeps the segments of dead runs and installs the shared-memory ledger."""
    global _ACTIVE, _STOPPING
    sup = Supervisor(timeout_s)
    _STOPPING = False
    with contextlib.suppress(Exception):
        sweep_dead_ledgers()
    install_shm_ledger()
    install_fork_gate()
    prev, _ACTIVE = _ACTIVE, sup
    try:
        yield sup
    finally:
        _ACTIVE = prev
        resume_forking()  # a teardown inside this run must not refuse the workers of later runs


def release_shared_memory() -> list[str]:
    """Unlink the segments this process recorded that still exist, drop its ledger -> names unlinked."""
    return ledger().release()


__all__ = ["POLL_S", "WorkerDied", "check_timeout", "timeout_budget", "infrastructure", "workers", "dead_worker",
           "describe_exit", "kill_workers", "deferred_signals", "stop_forking", "resume_forking", "outside_a_run",
           "CALL_THREAD", "Supervisor", "active", "supervising", "release_shared_memory"]
