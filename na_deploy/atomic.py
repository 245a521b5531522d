"""Atomic artifact writes: write to a temporary file in the destination folder, then rename.

Rules (issue 22): the rename never replaces a directory, symbolic link, FIFO or device node (refused in one
line); a failed write (no permission, disk full, file too large, read-only file system) is one `WriteError`
naming the destination and the errno text, and the temporary file is removed.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from na_deploy.errors import NaDeployError


class WriteError(NaDeployError, OSError):
    """An output could not be written: one line naming the file and the errno text (still an OSError)."""

    def __init__(self, path, err: OSError):
        super().__init__(err.errno, err.strerror or str(err))
        self.filename = str(path)
        self.message = f"{path}: cannot write ({err.strerror or err})"

    def __str__(self) -> str:
        return self.message


def check_atomic_target(path: Path) -> None:
    """NaDeployError when `path` exists and is not a regular file (a rename would replace the node itself)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        kind = ("a directory" if stat.S_ISDIR(mode) else "a symbolic link" if stat.S_ISLNK(mode)
                else "a FIFO" if stat.S_ISFIFO(mode) else "a device node or socket")
        raise NaDeployError(f"{path}: is {kind}; an output is written by renaming a new file onto it, allowed: a "
                            "new or regular file path")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed.

    Nothing half-written is ever visible under `path`.
    """
    path = Path(path)
    check_atomic_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise WriteError(path, e) from e
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the usual permissions
            check_atomic_target(path)  # it may have appeared while we wrote
            os.replace(tmp_path, path)
        except OSError as e:
            if isinstance(e, NaDeployError):
                raise
            raise WriteError(path, e) from e
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def current_umask() -> int:
    """The process's umask (read by setting and restoring it): new artifacts get 0o666 / folders 0o777 minus it."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_umask = current_umask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
