"""A pytest plugin for users' own suites: the fixture `na_bit_exact` asserts that a backend reproduces the
target's reference simulation of a net exactly (contract C6).

Enable it with `pytest -p na_deploy.hw_targets.pytest_plugin`, or in a conftest.py:
`pytest_plugins = ["na_deploy.hw_targets.pytest_plugin"]`. Then:

    def test_my_net_is_bit_exact(na_bit_exact):
        x = np.load("samples.npz")["x_test"][:8]
        report = na_bit_exact("build/net.nad.h5", x, 8)          # target "loihi2", its default backend (Lava)
        assert report.samples == 8

`na_bit_exact(net_or_path, inputs, timesteps, target="loihi2", backend=None, **verify_kwargs)` takes an
IntNet or the path of its .nad.h5, a target name or Target object, a backend name or Backend object, and
returns the VerifyReport; on a mismatch the test fails with one line naming the first differing sample,
node, neuron, both values and step (`na_deploy.testing.assert_bit_exact`). It lives in hw_targets, not in
the core, because it resolves target and backend names (the core never imports a target).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

import numpy as np
import pytest

from na_deploy.errors import IRError
from na_deploy.ir import IntNet
from na_deploy.testing import assert_bit_exact

from na_deploy.hw_targets import get_backend, get_target


def load_intnet(net_or_path: Any) -> IntNet:
    """An IntNet as given, or loaded from a .nad.h5 path (IRError naming the file otherwise)."""
    if isinstance(net_or_path, IntNet):
        return net_or_path
    if not isinstance(net_or_path, (str, os.PathLike)):
        raise IRError(f"na_bit_exact: got a {type(net_or_path).__name__}; allowed: an IntNet or the path of its "
                      ".nad.h5 (written by `na-deploy convert`)")
    from na_deploy.io import load_intnet

    return load_intnet(net_or_path)


def bit_exact(net_or_path: Any, inputs: np.ndarray, timesteps: int, target: Any = "loihi2",
              backend: Optional[Any] = None, **verify_kwargs: Any):
    """`assert_bit_exact` with names resolved: target / backend may be names ("loihi2", "lava") or objects."""
    tgt = get_target(target) if isinstance(target, str) else target
    be = get_backend(backend, tgt) if backend is None or isinstance(backend, str) else backend
    return assert_bit_exact(load_intnet(net_or_path), np.asarray(inputs), timesteps, tgt, be, **verify_kwargs)


@pytest.fixture
def na_bit_exact() -> Callable[..., Any]:
    """A callable (net_or_path, inputs, timesteps, target="loihi2", backend=None, **verify_kwargs) -> VerifyReport
    that fails the test, naming the first mismatch, unless the backend equals the reference exactly."""
    return bit_exact


__all__ = ["na_bit_exact", "bit_exact", "load_intnet"]
