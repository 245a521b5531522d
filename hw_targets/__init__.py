"""Hardware targets, one sub-package each (installed as na_deploy.hw_targets).

Each `hw_targets.<name>` exposes `TARGET`, an object implementing `na_deploy.target.Target`.
"""
from __future__ import annotations

import importlib

from na_deploy.errors import NaDeployError

KNOWN_TARGETS = ("loihi2",)


def get_target(name: str):
    """The target object for `name` (e.g. "loihi2")."""
    if name not in KNOWN_TARGETS:
        raise NaDeployError(f"unknown target {name!r}; known targets: {', '.join(KNOWN_TARGETS)}")
    return importlib.import_module(f"na_deploy.hw_targets.{name}").TARGET
