"""What every export bundle of the Loihi 2 target shares (`na-deploy export`; lava/export.py and netx/export.py):
the output folder rule, the templates shipped as package data, and the atomic write of the whole folder.

    check_out_dir(out, force)          a new or empty folder (an existing one only with force)
    read_template(package, name)       the text of `templates/<name>` in `package` (pyproject package-data)
    written_atomically(out)            context: a temporary folder beside `out`, renamed onto it on success
    replace_folder(tmp, out)           that rename, replacing an existing `out` (renames only)

Target-neutral: nothing here imports Lava or knows a format.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Iterator

from na_deploy.atomic import WriteError, current_umask
from na_deploy.errors import NaDeployError


def check_out_dir(out: Path, force: bool) -> None:
    """NaDeployError unless `out` is a new or empty folder (or an existing one with force)."""
    if out.exists() and not out.is_dir():
        raise NaDeployError(f"--out {out}: exists and is not a folder; allowed: a new or empty folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise NaDeployError(f"--out {out}: folder exists and is not empty; allowed: a new or empty folder "
                            "(or --force to replace it)")


def read_template(package: str, name: str) -> str:
    """The text of `templates/<name>`, package data of `package` (e.g. "na_deploy.hw_targets.loihi2.lava")."""
    return resources.files(package).joinpath("templates", name).read_text(encoding="utf-8")


def replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished `tmp` folder to `out`, replacing an existing `out` (renames only)."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rename(out, old / out.name)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


@contextlib.contextmanager
def written_atomically(out: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `out`; when the block succeeds it replaces `out`
    (`replace_folder`) with the mode a new folder gets (0o777 minus the umask), when it fails it is removed:
    nothing half-written is ever visible under `out`."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise WriteError(out, e) from e
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; a bundle follows the umask (issue 22)
        replace_folder(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and (isinstance(e, WriteError) or not isinstance(e, NaDeployError)):
            raise WriteError(out, e) from e  # one line naming the bundle (not its temporary folder), exit 2
        raise


__all__ = ["check_out_dir", "read_template", "replace_folder", "written_atomically"]
