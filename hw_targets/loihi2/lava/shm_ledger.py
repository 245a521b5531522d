"""The shared-memory ledger of Lava runs (issue 22): no POSIX segment outlives the runs that made it.

Lava's channels are POSIX shared-memory segments (`/dev/shm/psm_*`), created in the parent process by Lava's
`SharedMemoryManager` and unlinked by its manager process on a clean stop. A SIGKILL (of the parent, or of the
whole process group) skips that, and the segments stay until reboot. So:

* `install_shm_ledger()` wraps Lava's `SharedMemoryManager.create_shared_memory` so each segment is recorded, as
  it is made, in this process's ledger `ledger()`: `$TMPDIR/na-deploy-shm-<uid>/<pid>.txt` (first line
  `pid <pid> start <start time>`, then one name per line);
* `ShmLedger.release()` (teardown) unlinks the recorded segments that still exist and drops the file;
* `sweep_dead_ledgers()` (the start of every supervised run) unlinks the segments of ledgers whose process is
  gone (pid dead, or reused: the start time differs) and drops those ledgers; live runs' ledgers are untouched.

Lava is imported only by `install_shm_ledger`.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Optional

def ledger_dir() -> Path:
    """The folder of the shared-memory ledgers of this user: $TMPDIR/na-deploy-shm-<uid>."""
    return Path(tempfile.gettempdir()) / f"na-deploy-shm-{os.getuid()}"


def _start_time(pid: int) -> Optional[str]:
    """The start time of process `pid` (field 22 of /proc/PID/stat), None when it is gone or unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int, start: Optional[str]) -> bool:
    """Whether the process that wrote a ledger still runs (same pid and, where known, same start time)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _start_time(pid)
    return start in (None, "", "?") or now is None or now == start


def _valid_name(name: str) -> bool:
    return bool(name) and "/" not in name and not name.startswith(".") and len(name) < 250


def unlink_segment(name: str, registered: bool = False) -> bool:
    """Unlink POSIX shared-memory segment `name` if it exists -> whether it did. registered: it was created by
    this process (so its resource tracker knows it: tell the tracker, or it warns at exit)."""
    from multiprocessing import resource_tracker
    import _posixshmem

    if not _valid_name(name):
        return False
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        return False
    except OSError:
        return False
    if registered:
        with contextlib.suppress(Exception):
            resource_tracker.unregister("/" + name, "shared_memory")
    return True


class ShmLedger:
    """The shared-memory segments this process created for Lava, one name per line in `<dir>/<pid>.txt`
    (first line: `pid <pid> start <start time>`)."""

    def __init__(self, directory: Optional[Path] = None, pid: Optional[int] = None):
        self.dir = Path(directory) if directory is not None else ledger_dir()
        self.pid = os.getpid() if pid is None else int(pid)
        self.path = self.dir / f"{self.pid}.txt"
        self._lock = threading.Lock()

    def add(self, name: str) -> None:
        """Record segment `name` (before anything else can kill this process, as far as possible)."""
        with self._lock:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            new = not self.path.exists()
            with open(self.path, "a") as f:
                if new:
                    f.write(f"pid {self.pid} start {_start_time(self.pid) or '?'}\n")
                f.write(name + "\n")

    def names(self) -> list[str]:
        return read_ledger(self.path)[1]

    def release(self) -> list[str]:
        """Unlink the recorded segments that still exist (Lava's manager unlinks them on a clean stop) and
        drop the ledger -> the names unlinked here."""
        with self._lock:
            gone = [n for n in self.names() if unlink_segment(n, registered=True)]
            with contextlib.suppress(OSError):
                self.path.unlink()
            return gone


def read_ledger(path: Path) -> tuple[tuple[int, Optional[str]], list[str]]:
    """((pid, start time), segment names) of a ledger file ((0, None), [] when unreadable)."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return (0, None), []
    head = lines[0].split() if lines else []
    try:
        pid = int(head[1])
        start = head[3] if len(head) > 3 else None
    except (IndexError, ValueError):
        pid, start = 0, None
    return (pid, start), [ln.strip() for ln in lines[1:] if _valid_name(ln.strip())]


def sweep_dead_ledgers(directory: Optional[Path] = None) -> list[str]:
    """Unlink the segments recorded by processes that are gone (e.g. killed with SIGKILL, so their teardown
    never ran) and drop their ledgers -> the names unlinked. Ledgers of live processes are left alone."""
    d = Path(directory) if directory is not None else ledger_dir()
    swept: list[str] = []
    try:
        files = sorted(d.glob("*.txt"))
    except OSError:
        return swept
    for f in files:
        (pid, start), names = read_ledger(f)
        if pid == os.getpid() or (pid > 0 and _alive(pid, start)):
            continue
        if pid <= 0 and f.stem.isdigit() and _alive(int(f.stem), None):  # a ledger being written
            continue
        swept += [n for n in names if unlink_segment(n)]
        with contextlib.suppress(OSError):
            f.unlink()
    return swept


_LEDGER: Optional[ShmLedger] = None


def ledger() -> ShmLedger:
    """This process's ledger (made on first use; a forked child gets its own)."""
    global _LEDGER
    if _LEDGER is None or _LEDGER.pid != os.getpid():
        _LEDGER = ShmLedger()
    return _LEDGER


def install_shm_ledger() -> None:
    """Record every segment Lava's SharedMemoryManager creates in this process's ledger (idempotent)."""
    from lava.magma.runtime.message_infrastructure import shared_memory_manager as smm_mod

    cls = smm_mod.SharedMemoryManager
    if getattr(cls.create_shared_memory, "_na_deploy_ledger", False):
        return
    original = cls.create_shared_memory

    def create_shared_memory(self, size: int):
        handle = original(self, size)
        with contextlib.suppress(OSError):
            ledger().add(handle.name)
        return handle

    create_shared_memory._na_deploy_ledger = True
    cls.create_shared_memory = create_shared_memory


__all__ = ["ledger_dir", "ShmLedger", "read_ledger", "sweep_dead_ledgers", "ledger", "install_shm_ledger",
           "unlink_segment"]
