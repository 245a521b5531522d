"""A pool of verify jobs: J `na-deploy verify` processes in parallel, one shard each, merged into one report
(what `na-deploy verify --jobs J` runs, through the gate `na_deploy.verify.gate.run_gate`).

`run_verify_jobs(argv, J)` starts J processes `python -m na_deploy.cli.main verify ARGV --shard k/J --json
TMP_k --quiet` at once (the command-line program run as child processes: the core never imports the CLI),
waits for all of them, and merges their JSON reports with `na_deploy.verify.shards.merge_reports`. Each
process is a whole verify run (its own Lava runtime, and Lava runs each of its processes as an OS process),
so J jobs use J runtimes side by side; each child's BLAS / OpenMP threads are capped at cores // J unless
the caller's environment sets them. A child that exits with 2 (a bad request) is reported as a one-line
ShardError carrying the child's last stderr line; one that crashes (killed by a signal, exit 3: its backend
failed, or any other code, or no report) as a ShardCrashed (a BackendFailure too: CLI exit 3); the other
children are then stopped. Exit 1 of a child (a failed check) is a normal result: the merged report says what
failed.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from na_deploy.errors import BackendFailure
from na_deploy.verify.shards import ShardError, load_report, merge_reports

# options that name one output (or one golden file) of a whole run: a child of --jobs must not get them
PER_RUN_OPTIONS = ("--shard", "--jobs", "--json", "--junit", "--write-golden", "--golden")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class ShardCrashed(ShardError, BackendFailure):
    """A --jobs child that crashed (killed by a signal, its backend failed, no report): CLI exit 3."""


def verify_command() -> list[str]:
    """The command line of one `na-deploy verify` child (this interpreter, so the same environment)."""
    return [sys.executable, "-m", "na_deploy.cli.main", "verify"]


def _check_request(argv: Sequence[str], jobs: int) -> None:
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ShardError(f"--jobs {jobs}: allowed: an integer >= 1")
    for a in argv:
        opt = str(a).split("=", 1)[0]
        if opt in PER_RUN_OPTIONS:
            raise ShardError(f"{opt}: not allowed in the arguments of --jobs children (each child gets its own "
                             "--shard and --json; whole-run outputs are written from the merged report)")


def _child_env(jobs: int) -> dict:
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    for var in THREAD_VARS:
        env.setdefault(var, threads)
    return env


class _Child:
    """One verify process: shard k of J, its JSON report path and its stdout / stderr log files."""

    def __init__(self, cmd: list[str], argv: Sequence[str], k: int, jobs: int, tmp: Path, env: dict):
        self.k, self.jobs = k, jobs
        self.shard = f"{k}/{jobs}"
        self.json = tmp / f"shard{k}.json"
        self.stderr_path = tmp / f"shard{k}.stderr"
        with open(tmp / f"shard{k}.stdout", "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([*cmd, *map(str, argv), "--shard", self.shard, "--json", str(self.json),
                                          "--quiet"], stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)  # its own process group: it and its Lava processes

    def last_error_line(self) -> str:
        lines = [ln.strip() for ln in self.stderr_path.read_text(errors="replace").splitlines() if ln.strip()]
        line = lines[-1] if lines else ""
        return line[len("error: "):] if line.startswith("error: ") else line

    def failure(self, rc: int) -> ShardError:
        """The one-line error for a child that did not produce a report (rc 2: a bad request, ShardError; else
        it crashed: ShardCrashed)."""
        line = self.last_error_line()
        if rc == 2 and line:
            return ShardError(f"verify --shard {self.shard}: {line}")
        how = f"killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
        return ShardCrashed(f"verify --shard {self.shard} (pid {self.proc.pid}) crashed: {how}: "
                            f"{line or 'no message on stderr'}; the other shards were stopped; rerun")

    def stop(self) -> None:
        """Stop a child still running, with the Lava processes it started (its process group): SIGTERM, then
        SIGKILL after 10 s."""
        if self.proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue


def _wait_all(children: list[_Child], echo: Optional[Callable[[str], None]], poll_s: float = 0.1) -> list[int]:
    """Exit codes of all children; raises on the first child that exits with neither 0 nor 1 (or leaves no
    report), the caller then stops the rest."""
    codes: dict[int, int] = {}
    while len(codes) < len(children):
        for c in children:
            if c.k in codes:
                continue
            rc = c.proc.poll()
            if rc is None:
                continue
            if rc not in (0, 1) or not c.json.is_file():
                raise c.failure(rc)
            codes[c.k] = rc
            if echo is not None:
                rep = load_report(c.json)
                echo(f"shard {c.shard}: {rep['samples']} samples, "
                     f"{'equal' if rep['equal'] else str(rep['mismatching_samples']) + ' mismatching'} (exit {rc})")
        time.sleep(poll_s)
    return [codes[c.k] for c in children]


def run_verify_jobs(argv: Sequence[str], jobs: int, out_json: Optional[str] = None, *,
                    command: Optional[Sequence[str]] = None,
                    echo: Optional[Callable[[str], None]] = None) -> dict:
    """Run `verify ARGV --shard k/J` for k = 1..J as J parallel processes and merge their reports.

    argv: the verify arguments every child repeats (NET and options) without --shard/--jobs/--json/--junit/
    --golden/--write-golden. command: the child's command line before argv (default `verify_command()`).
    Returns the merged report (`merge_reports`) plus "exit_codes" (per shard) and seconds["wall"] (the whole
    run, start-up included); writes it to out_json (atomically) when given. ShardError on a bad request or a
    child that exits with 2 or dies (its last stderr line in the message)."""
    _check_request(argv, jobs)
    cmd = list(command) if command is not None else verify_command()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="na-deploy-jobs-") as tmp:
        env = _child_env(jobs)
        children: list[_Child] = []
        try:
            for k in range(1, jobs + 1):
                children.append(_Child(cmd, argv, k, jobs, Path(tmp), env))
            codes = _wait_all(children, echo)
        finally:
            for c in children:
                c.stop()
        reports = [load_report(c.json) for c in children]
    merged = merge_reports(reports, names=[f"shard {c.shard}" for c in children])
    merged["exit_codes"] = codes
    merged["seconds"]["wall"] = time.perf_counter() - t0
    merged["seconds"]["jobs"] = jobs
    if out_json:
        from na_deploy.atomic import atomic_write_text

        atomic_write_text(out_json, json.dumps(merged, indent=2) + "\n")
    return merged


__all__ = ["run_verify_jobs", "verify_command", "ShardCrashed", "PER_RUN_OPTIONS", "THREAD_VARS"]
