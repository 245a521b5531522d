"""Suite-wide pytest hooks: tests marked `lava` are skipped, with the way to install it, where Lava is missing.

The suite must run (and say what it skipped) in an environment without Lava: a test that runs the Lava simulator
carries `@pytest.mark.lava` (or a module-level `pytestmark = pytest.mark.lava`); when `lava.magma.core` cannot be
found, every such test is skipped with `LAVA_MISSING` as its reason. Found means importable by name
(`importlib.util.find_spec`), so nothing of Lava is imported here. Helper functions of the tests are in
tests/helpers.py.
"""
from __future__ import annotations

import importlib.util

import pytest

LAVA_MISSING = ("Lava (lava-nc) is not installed: run `bash scripts/bootstrap.sh` (installs lava-nc 0.10.0 and "
                "lava-dl 0.6.0 into .venv, patched for Python 3.11), or on Python 3.10 "
                "`pip install lava-nc==0.10.0 lava-dl==0.6.0`")


def lava_installed() -> bool:
    """Whether `lava.magma.core` (lava-nc's runtime) can be imported, without importing it."""
    try:
        return importlib.util.find_spec("lava.magma.core") is not None
    except ModuleNotFoundError:  # no `lava` package at all: find_spec imports the parents
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every test marked `lava` when Lava is not installed."""
    if lava_installed():
        return
    skip = pytest.mark.skip(reason=LAVA_MISSING)
    for item in items:
        if item.get_closest_marker("lava") is not None:
            item.add_marker(skip)


@pytest.fixture()
def net_file(tmp_path):
    """A small IntNet file (random dense chain, seed 0) for CLI tests that need any valid net."""
    import numpy as np

    from na_deploy.io import save_net
    from na_deploy.testing import random_intnet

    path = tmp_path / "net.nad.h5"
    save_net(random_intnet(np.random.default_rng(0), "dense_chain"), path)
    return path
