"""Signals and dead workers during a real `na-deploy verify` Lava check (issue 22, "Signals", "Lava supervision"):
what each case exits with, how fast, and what it leaves (processes of its group, shared-memory segments).

    .venv/bin/python benchmarks/experiments/lava_signals.py [--samples 60] [--cases all|SIGTERM,...] [--net NET]

Each case starts `python -m na_deploy.cli.main verify NET --samples N --quiet` as a process-group leader (as a
shell starts a job) with its own TMPDIR, so its shared-memory ledger ($TMPDIR/na-deploy-shm-<uid>/<pid>.txt)
names exactly the segments it created; waits until Lava runs (the ledger exists and >= 10 children: Lava's
workers); then sends the case's signal. Columns: exit code; seconds from the signal to the exit; processes of
the group still running 3 s later (zombies waiting for init to reap them do not count); segments of the run still
in /dev/shm; and, where some were left, how many a next `verify --samples 2` with the same TMPDIR left (its
start sweeps the ledgers of dead runs). NET defaults to a random 1x8x8 conv-pool-dense net (the embedded
digits), like tests/test_lava_supervision.py.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = ("SIGTERM", "SIGINT", "SIGINT to group", "kill -9 one worker", "kill -9 the group")
SHM = Path("/dev/shm")


def digits_net(path: Path) -> Path:
    from na_deploy.io import save_net
    from na_deploy.testing import random_intnet

    rng = np.random.default_rng(3)
    while True:
        net = random_intnet(rng, "conv_pool_dense", size=8)
        if net.input.shape == (1, 8, 8):
            break
    save_net(net, path)
    return path


def procs() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, state)."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            out[int(d.name)] = (int(f[1]), int(f[2]), f[0])
    return out


def ledger_names(path: Path) -> list[str]:
    try:
        return [ln.strip() for ln in path.read_text().splitlines()[1:] if ln.strip()]
    except OSError:
        return []


def verify(net: Path, samples: int, tmp: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "na_deploy.cli.main", "verify", str(net), "--samples",
                             str(samples), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp)}, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def run_case(case: str, net: Path, samples: int, tmp: Path) -> dict:
    p = verify(net, samples, tmp)
    ledger = tmp / f"na-deploy-shm-{os.getuid()}" / f"{p.pid}.txt"
    t_end = time.monotonic() + 300
    while time.monotonic() < t_end and p.poll() is None:
        kids = sorted(pid for pid, (ppid, _, _) in procs().items() if ppid == p.pid)
        if ledger.exists() and len(kids) >= 10:
            break
        time.sleep(0.1)
    if p.poll() is not None:
        return {"case": case, "error": f"verify ended before Lava ran: {p.stderr.read().strip()[-300:]}"}
    time.sleep(0.5)
    names = ledger_names(ledger)
    kids = sorted(pid for pid, (ppid, _, _) in procs().items() if ppid == p.pid)
    t0 = time.monotonic()
    if case == "SIGTERM":
        p.send_signal(signal.SIGTERM)
    elif case == "SIGINT":
        p.send_signal(signal.SIGINT)
    elif case == "SIGINT to group":
        os.killpg(p.pid, signal.SIGINT)
    elif case == "kill -9 one worker":
        os.kill(kids[-2], signal.SIGKILL)  # the last Lava process (the runtime service comes after it)
    else:
        os.killpg(p.pid, signal.SIGKILL)
    _, err = p.communicate(timeout=300)
    seconds = time.monotonic() - t0
    time.sleep(3)
    left = [pid for pid, (_, g, st) in procs().items() if g == p.pid and st != "Z"]
    shm_left = [n for n in names if (SHM / n).exists()]
    swept = "n/a"
    if shm_left:
        nxt = verify(net, 2, tmp)
        nxt.communicate(timeout=300)
        swept = f"yes ({len(shm_left)} -> {sum((SHM / n).exists() for n in names)})"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return {"case": case, "exit": p.returncode, "seconds": seconds, "procs_left": len(left), "shm": len(names),
            "shm_left": len(shm_left), "swept": swept, "stderr_lines": len(lines),
            "message": (lines[-1] if lines else "")[:160]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--cases", default="all", help="comma-separated subset of: " + ", ".join(CASES))
    ap.add_argument("--net", default=None)
    a = ap.parse_args()
    cases = CASES if a.cases == "all" else tuple(c.strip() for c in a.cases.split(","))
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    rows = []
    with tempfile.TemporaryDirectory(prefix="na-deploy-signals-") as d:
        tmp = Path(d)
        net = Path(a.net) if a.net else digits_net(tmp / "net.nad.h5")
        for case in cases:
            rows.append(run_case(case, net, a.samples, tmp))
            print(f"  done: {case}", file=sys.stderr)
    print(f"{'case':<20} {'exit':>4} {'s to exit':>9} {'procs left':>10} {'shm made':>8} {'shm left':>8} "
          f"{'next run swept':<16} {'stderr lines':>12}  message")
    for r in rows:
        if "error" in r:
            print(f"{r['case']:<20} {r['error']}")
            continue
        print(f"{r['case']:<20} {r['exit']:>4} {r['seconds']:>9.2f} {r['procs_left']:>10} {r['shm']:>8} "
              f"{r['shm_left']:>8} {r['swept']:<16} {r['stderr_lines']:>12}  {r['message']}")
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
