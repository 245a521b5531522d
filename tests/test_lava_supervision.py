"""Issue 22, "Signals" and "Lava supervision": a real `na-deploy verify` subprocess is sent SIGTERM / SIGINT during
its Lava check, or loses one Lava worker to SIGKILL: it exits 143 / 130 / 3 with one line on stderr, leaves no
process in its process group and none of the shared-memory segments it created; a SIGKILL of the whole group
leaves segments that the ledger sweep of a later run removes. Plus unit tests of the timeout budget and of the
ledger (hw_targets/loihi2/lava/supervision.py)."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sv = pytest.importorskip("na_deploy.hw_targets.loihi2.lava.supervision")
shm = pytest.importorskip("na_deploy.hw_targets.loihi2.lava.shm_ledger")

from na_deploy.errors import BackendFailure, SimulationError  # noqa: E402

SHM = Path("/dev/shm")


# ------------------------------------------------------------------------------------------ timeout budget
def test_timeout_budget_first_call_is_generous_then_scales_with_the_measured_step_time():
    assert sv.timeout_budget(10) == 120 + 5 * 10
    assert sv.timeout_budget(0) == 125  # at least one step
    assert sv.timeout_budget(100, first_seconds_per_step=0.01) == 60  # floor
    assert sv.timeout_budget(1000, first_seconds_per_step=0.05) == pytest.approx(20 * 0.05 * 1000)
    assert sv.timeout_budget(10, first_seconds_per_step=math.nan) == 170  # nothing usable measured


def test_supervisor_budget_explicit_timeout_wins_and_first_call_is_measured():
    sup = sv.Supervisor()
    assert sup.budget(8) == 160
    sup.first_seconds_per_step = 0.5
    assert sup.budget(100) == 1000 and sup.budget(1) == 60
    assert sv.Supervisor(timeout_s=7).budget(10 ** 6) == 7


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, -math.inf, "x"])
def test_check_timeout_refuses_what_is_not_a_finite_positive_number(bad):
    with pytest.raises(SimulationError, match=r"allowed: a finite number of seconds > 0") as e:
        sv.check_timeout(bad, "--timeout")
    assert "\n" not in str(e.value)
    assert sv.check_timeout(None) is None and sv.check_timeout(2.5) == 2.5


def test_worker_died_is_a_backend_failure():
    assert issubclass(sv.WorkerDied, BackendFailure) and issubclass(BackendFailure, SimulationError)
    assert sv.describe_exit(-9) == "killed by signal 9 (SIGKILL)" and sv.describe_exit(3) == "exited with code 3"


def test_a_signal_during_teardown_waits_until_it_is_done():
    """SIGINT inside the block is recorded, the block runs to its end, then KeyboardInterrupt. The signal is raised
    synchronously in this thread (`raise_signal`; an `os.kill` of the process may land in another thread and is
    handled whenever the main thread next checks, which made this flake under load), from Python's default
    handler, set here so that no earlier test's handler decides the outcome."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    done = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with sv.deferred_signals():
                signal.raise_signal(signal.SIGINT)
                done.append("teardown")
        assert done == ["teardown"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


# ----------------------------------------------------------------------------------------------- ledger
def _segment(name: str) -> str:
    """A POSIX shared-memory segment made as another process would (not registered with our tracker)."""
    import _posixshmem

    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    os.close(fd)
    return name


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm")
@pytest.mark.lava
def test_a_teardown_does_not_refuse_the_workers_of_later_lava_runs():
    """A teardown stops Lava forking workers until its run ends; after it, Lava starts workers again, inside a
    later supervised run and when used directly (a teardown in one CLI command made every later Lava test of
    the same process fail with TearingDown)."""
    from lava.magma.runtime.message_infrastructure.multiprocessing import MultiProcessing

    with sv.supervising():
        sv.stop_forking()
        with pytest.raises(sv.TearingDown):
            MultiProcessing.build_actor(None)
    assert not sv._STOPPING and sv.outside_a_run()


def test_sweep_unlinks_segments_of_dead_runs_and_keeps_live_ones(tmp_path):
    tag = f"nadtest{os.getpid()}_{time.monotonic_ns() % 10 ** 9}"
    dead, live = _dead_pid(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        d = tmp_path / "ledger"
        dead_names = [_segment(f"{tag}_d{i}") for i in range(3)]
        live_names = [_segment(f"{tag}_l{i}")for i in range(2)]
        for pid, names in ((dead, dead_names), (live.pid, live_names)):
            led = shm.ShmLedger(d, pid=pid)
            for n in names:
                led.add(n)
        (d / "junk.txt").write_text("not a ledger\n../../etc/passwd\n")
        assert sorted(shm.sweep_dead_ledgers(d)) == sorted(dead_names)
        assert not any((SHM / n).exists() for n in dead_names)
        assert all((SHM / n).exists() for n in live_names)
        assert sorted(p.name for p in d.iterdir()) == [f"{live.pid}.txt"]
        assert shm.sweep_dead_ledgers(d) == []
    finally:
        live.kill()
        live.wait()
        for n in live_names:
            shm.unlink_segment(n)


@pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm")
def test_ledger_release_unlinks_what_is_left_and_drops_the_file(tmp_path):
    tag = f"nadtest{os.getpid()}_{time.monotonic_ns() % 10 ** 9}"
    from multiprocessing.shared_memory import SharedMemory

    led = shm.ShmLedger(tmp_path)
    made = [SharedMemory(f"{tag}_{i}", create=True, size=64) for i in range(2)]  # as Lava makes them
    for m in made:
        m.close()
    names = [m.name for m in made]
    for n in names:
        led.add(n)
    led.add(f"{tag}_gone")  # already unlinked by Lava's manager: skipped
    assert led.path.read_text().startswith(f"pid {os.getpid()} start ")
    assert sorted(led.release()) == sorted(names)
    assert not led.path.exists() and not any((SHM / n).exists() for n in names)


# ------------------------------------------------------------------------- a real verify, real signals
def _digits_net_file(tmp_path: Path) -> Path:
    from na_deploy.io import save_net
    from na_deploy.testing import random_intnet

    rng = np.random.default_rng(3)
    while True:
        net = random_intnet(rng, "conv_pool_dense", size=8)
        if net.input.shape == (1, 8, 8):
            break
    path = tmp_path / "net.nad.h5"
    save_net(net, path)
    return path


def _procs() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, state) of every process."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            out[int(d.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return out


def _group_alive(pgid: int) -> list[int]:
    """Processes of group `pgid` that still run (zombies waiting for init to reap them do not count)."""
    return [pid for pid, (_, g, state) in _procs().items() if g == pgid and state != "Z"]


class Run:
    """`na-deploy verify` on the digits net as a process-group leader, with its ledger in tmp_path."""

    def __init__(self, tmp_path: Path, samples: int = 60):
        self.ledger_dir = tmp_path / f"na-deploy-shm-{os.getuid()}"
        env = {**os.environ, "TMPDIR": str(tmp_path)}
        self.p = subprocess.Popen([sys.executable, "-m", "na_deploy.cli.main", "verify",
                                   str(_digits_net_file(tmp_path)), "--samples", str(samples), "--quiet"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                  start_new_session=True,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.ledger = self.ledger_dir / f"{self.p.pid}.txt"

    def children(self) -> list[int]:
        return sorted(pid for pid, (ppid, _, _) in _procs().items() if ppid == self.p.pid)

    def wait_for_lava(self, workers: int = 10, timeout_s: float = 120, settle_s: float = 0.5) -> list[str]:
        """Wait until Lava runs (the ledger lists its segments, `workers` children exist) -> segment names."""
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            assert self.p.poll() is None, self.p.communicate()
            if self.ledger.exists() and len(self.children()) >= workers:
                time.sleep(settle_s)
                return shm.read_ledger(self.ledger)[1]
            time.sleep(0.01)
        raise AssertionError("Lava did not start")

    def finish(self, timeout_s: float = 60) -> tuple[int, str, float]:
        t0 = time.monotonic()
        _, err = self.p.communicate(timeout=timeout_s)
        return self.p.returncode, err.strip(), time.monotonic() - t0

    def group_left(self, wait_s: float = 5) -> list[int]:
        t_end = time.monotonic() + wait_s
        while (left := _group_alive(self.p.pid)) and time.monotonic() < t_end:
            time.sleep(0.1)
        return left


def _assert_clean(run: Run, names: list[str]) -> None:
    assert run.group_left() == []
    assert names and [n for n in names if (SHM / n).exists()] == []
    assert not run.ledger.exists()


@pytest.mark.lava
@pytest.mark.parametrize("how, code, start", [("SIGTERM", 143, "terminated (SIGTERM): "),
                                              ("SIGINT to the group", 130, "interrupted: ")])
def test_a_signal_during_the_lava_check_stops_lava_cleanly(tmp_path, how, code, start):
    run = Run(tmp_path)
    names = run.wait_for_lava()
    if how == "SIGINT to the group":  # Ctrl-C in a terminal: the workers get it too and must not die of it
        os.killpg(run.p.pid, signal.SIGINT)
    else:  # what a CI cancel or `docker stop` sends (to the main process only)
        run.p.send_signal(getattr(signal, how))
    rc, err, seconds = run.finish()
    assert rc == code, err[-3000:]
    assert err.startswith(start) and "\n" not in err, err[-3000:]
    assert "Lava stopped (" in err and "shared-memory segments removed)" in err
    assert seconds < 20
    _assert_clean(run, names)


@pytest.mark.lava
def test_sigterm_while_lava_starts_its_workers_leaves_nothing(tmp_path):
    """The signal lands while Lava is still forking workers (its first segments exist): the ones already
    started are killed and no new one starts (a worker started after the teardown once kept the exit
    waiting forever)."""
    run = Run(tmp_path)
    run.wait_for_lava(workers=0, settle_s=0.05)
    run.p.send_signal(signal.SIGTERM)
    rc, err, seconds = run.finish()
    assert rc == 143 and err.startswith("terminated (SIGTERM): ") and "\n" not in err, err[-3000:]
    assert run.group_left() == [] and not run.ledger.exists()
    assert seconds < 20


@pytest.mark.lava
def test_a_killed_lava_worker_is_named_and_everything_torn_down_exit_3(tmp_path):
    run = Run(tmp_path)
    names = run.wait_for_lava()
    victim = run.children()[-2]  # the last Lava process Lava started (after it: the runtime service)
    t0 = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    rc, err, _ = run.finish()
    assert rc == 3, err[-3000:]
    assert err.startswith("error: ") and "\n" not in err, err[-3000:]
    assert f"(pid {victim}) killed by signal 9 (SIGKILL) during the Lava run" in err
    assert err.startswith("error: Lava process '")  # named by its Lava process
    assert time.monotonic() - t0 < 20
    _assert_clean(run, names)


@pytest.mark.lava
def test_segments_left_by_a_killed_group_are_swept_later(tmp_path):
    run = Run(tmp_path)
    names = run.wait_for_lava()
    os.killpg(run.p.pid, signal.SIGKILL)
    run.finish()
    assert run.group_left() == []
    assert run.ledger.exists()  # nobody could clean up: the ledger remembers
    left = [n for n in names if (SHM / n).exists()]
    assert left  # SIGKILL leaves the segments (Lava's manager never ran its cleanup)
    assert sorted(shm.sweep_dead_ledgers(run.ledger_dir)) == sorted(left)
    assert [n for n in names if (SHM / n).exists()] == [] and not run.ledger.exists()
