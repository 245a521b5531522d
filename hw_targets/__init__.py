"""Hardware targets, one sub-package each (installed as na_deploy.hw_targets), and the one registry that
resolves `--target` / `--backend` names (the CLI calls it; the core never imports a target).

Each `hw_targets.<name>` exposes `TARGET`, an object implementing `na_deploy.protocols.Target`; a target
makes its backends (`na_deploy.protocols.Backend`) with `TARGET.backend(name)`, bound to its own limits.
"""
from __future__ import annotations

import importlib
from typing import Optional

from na_deploy.errors import NaDeployError

KNOWN_TARGETS = ("loihi2",)


def get_target(name: str):
    """The target object for `name` (e.g. "loihi2")."""
    if name not in KNOWN_TARGETS:
        raise NaDeployError(f"--target {name!r}: unknown; known targets: {', '.join(KNOWN_TARGETS)}")
    return importlib.import_module(f"na_deploy.hw_targets.{name}").TARGET


def get_backend(name: Optional[str] = None, target="loihi2", net=None):
    """The backend `name` of `target` (a name or a Target object); default: the target's choice for `net`."""
    tgt = get_target(target) if isinstance(target, str) else target
    return tgt.backend(name, net)


__all__ = ["KNOWN_TARGETS", "get_target", "get_backend"]
