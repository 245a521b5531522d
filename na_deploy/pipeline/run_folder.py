"""The run folder of `pipeline` and `pipeline --compare`: built in `<out>.partial/`, locked against a second run on
the same `--out`, renamed to `<out>` only when the run finishes; and the stage timer their report records."""
from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Callable

from na_deploy.errors import NaDeployError


class StageTimer:
    """`with timer(stage):` adds the stage's wall seconds to `timer.timings[stage]`."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = round(self.timings.get(stage, 0.0) + time.perf_counter() - t0, 3)


def prepare_out_dir(out: str | Path, force: bool = False) -> tuple[Path, Path]:
    """Check `out` can be written; return (final, partial) paths. Refuses an existing run unless `force`."""
    from na_deploy.runlock import RunLock, held_by_this_process

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NaDeployError(f"--out {out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise NaDeployError(f"--out {out}: directory exists and is not empty; choose another --out or pass --force")
    if out.is_dir() and any(out.iterdir()) and not (out / "COMPLETE").is_file():  # --force: only a finished run
        raise NaDeployError(f"--out {out}: is not a finished run folder (no COMPLETE); choose another --out")
    partial = out.with_name(out.name + ".partial")
    lock = None if held_by_this_process(out) else RunLock(out).acquire()  # another live run's .partial stays
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if partial.exists() or partial.is_symlink():
            shutil.rmtree(partial) if partial.is_dir() and not partial.is_symlink() else partial.unlink()
        partial.mkdir()
    except OSError as e:
        raise NaDeployError(f"--out {out}: cannot create the run folder ({e.strerror or e})") from None
    finally:
        if lock is not None:
            lock.release()
    return out, partial


@contextlib.contextmanager
def run_folder(out: str | Path, force: bool, log: Callable[[str], None], what: str):
    """`with run_folder(out, force, log, "pipeline") as (final, run_dir):` the run is built in `<out>.partial/`
    and renamed to `<out>` only when the block finishes; on a failure the partial folder stays, and is said so."""
    from na_deploy.runlock import RunLock, note_left

    with RunLock(out):  # a second run on the same --out is refused naming this one's pid
        final, run_dir = prepare_out_dir(out, force)
        try:
            yield final, run_dir
        except BaseException:
            log(f"[{what}] failed; partial results left in {run_dir} (not marked complete)")
            note_left(run_dir)
            raise
        if not final.parent.is_dir():  # never re-made: the folder the run was started in is gone
            raise NaDeployError(f"--out {out}: its folder {final.parent} vanished during the run; nothing was kept")
        if final.exists():
            shutil.rmtree(final)
        run_dir.rename(final)
