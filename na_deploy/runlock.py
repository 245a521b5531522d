"""An exclusive lock on a run folder, and what an interrupted run leaves behind (issue 22).

`RunLock(out)` holds `fcntl.flock(LOCK_EX | LOCK_NB)` on the lock file `.<name>.lock` beside OUT (not inside
OUT.partial, which `--force` may remove, nor inside OUT, which the final rename replaces); the file holds the
holder's pid. A second run on the same OUT is refused in one line naming that pid; the kernel drops the lock
when the holder exits, however it exits, so a stale lock file never blocks. `note_left(path)` records a folder
an unfinished run leaves (e.g. OUT.partial) so the CLI's "interrupted: ..." line can name it; `note_stopped`
what a teardown ended cleanly (the Lava processes), which that line names too.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Optional

from na_deploy.errors import NaDeployError

_LEFT: list[str] = []
_STOPPED: dict[str, str] = {}  # what an interrupted run stopped cleanly, by who stopped it (latest run only)
_HELD: set[str] = set()  # the lock files this process holds


def note_left(path) -> None:
    """Record that an unfinished run leaves `path` behind."""
    _LEFT.append(str(path))


def forget_left() -> None:
    """Start a new command's record (the CLI's main calls it: a long-lived process runs many commands)."""
    _LEFT.clear()


def note_stopped(key: str, what: str) -> None:
    """Record what the latest teardown of `key` (e.g. "lava") stopped cleanly, for the CLI's interrupted line."""
    _STOPPED[key] = what


def forget_stopped() -> None:
    """Drop the `note_stopped` records (a new command starts)."""
    _STOPPED.clear()


def stopped_cleanly() -> list[str]:
    """What the latest teardowns stopped cleanly (one entry per key)."""
    return list(_STOPPED.values())


def left_behind() -> list[str]:
    """What unfinished runs of this process left behind, in the order noted."""
    return list(_LEFT)


def lock_path_for(out) -> Path:
    """The lock file of run folder `out`: `.<name>.lock` beside it."""
    out = Path(out)
    return out.with_name(f".{out.name}.lock")


class RunLock:
    """`with RunLock(out):` this process alone writes run folder `out` (and `out.partial`)."""

    def __init__(self, out, option: str = "--out"):
        self.out, self.option, self.path = Path(out), option, lock_path_for(out)
        self.fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        """Take the lock or raise NaDeployError naming the holder's pid."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise NaDeployError(f"{self.option} {self.out}: cannot create its lock file {self.path} "
                                f"({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise NaDeployError(f"{self.option} {self.out}: another run (pid {holder}) is writing this folder; "
                                "wait for it or choose another --out") from None
        if not _same_file(fd, self.path):  # the holder released and removed it between our open and flock
            os.close(fd)
            return self.acquire()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        _HELD.add(os.path.abspath(self.path))
        return self

    def release(self) -> None:
        """Drop the lock and remove the lock file (only while still holding it)."""
        if self.fd is None:
            return
        _HELD.discard(os.path.abspath(self.path))
        try:
            self.path.unlink(missing_ok=True)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open `fd` is still the file at `path` (a lock file removed and re-made is another file)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def held_by_this_process(out) -> bool:
    """Whether this process holds the lock of run folder `out`."""
    return os.path.abspath(lock_path_for(out)) in _HELD


def check_not_in_locked_run(path, option: str = "--out") -> None:
    """An output inside a run folder that another process holds locked (a running pipeline's OUT, or its
    OUT.partial) is refused in one line: the run's final rename would replace it, or it would land in the run."""
    folder = Path(os.path.abspath(path)).parent
    for a in (folder, *folder.parents):
        if a == a.parent:  # the root: no run folder
            continue
        run = a.with_name(a.name[:-len(".partial")]) if a.name.endswith(".partial") else a
        lock = lock_path_for(run)
        if held_by_this_process(run) or not lock.is_file():
            continue
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a probe: granted unless a run holds it exclusively
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise NaDeployError(f"{option} {path}: inside the run folder {run}, which another run (pid {holder}) "
                                "is writing; wait for it or choose another path") from None
        finally:
            os.close(fd)

