"""The repository passes ruff with the configuration in pyproject.toml ([tool.ruff]: pyflakes and pycodestyle,
lines up to 120 characters): `python -m ruff check .` from the repository root exits 0."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    pytest.importorskip("ruff", reason="ruff is not installed (pyproject.toml [project.optional-dependencies] test)")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", ".", "--output-format", "concise", "--no-cache"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"ruff check . exited {done.returncode}:\n{done.stdout}{done.stderr}"
