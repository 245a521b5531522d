"""A pytest plugin for users' own suites: the fixture `na_bit_exact` asserts that a backend reproduces the
target's reference simulation of a net exactly (contract C6); the fixture `na_verify_gate` runs the whole
verify gate of `na-deploy verify` (bit-exactness, provenance C8, fidelity, golden traces) and asserts it passed.

Enable it with `pytest -p na_deploy.hw_targets.pytest_plugin`, or in a conftest.py:
`pytest_plugins = ["na_deploy.hw_targets.pytest_plugin"]`. Then:

    def test_my_net_is_bit_exact(na_bit_exact):
        x = np.load("samples.npz")["x_test"][:8]
        report = na_bit_exact("build/net.nad.h5", x, 8)          # target "loihi2", its default backend (Lava)
        assert report.samples == 8

`na_bit_exact(net_or_path, inputs, timesteps, target="loihi2", backend=None, **verify_kwargs)` takes an
IntNet or the path of its .nad.h5, a target name or Target object, a backend name or Backend object, and
returns the VerifyReport; on a mismatch the test fails with one line naming the first differing sample,
node, neuron, both values and step (`na_deploy.testing.assert_bit_exact`).

    def test_my_deployment_passes_the_gate(na_verify_gate):
        x = np.load("samples.npz")["x_test"][:8]
        report = na_verify_gate("build/net.nad.h5", x, 8, against="build/qat.ckpt", golden="golden.npz")
        assert report.fidelity is not None          # found build/net.float.nad.h5 beside the net

`na_verify_gate(net_or_path, inputs, timesteps, target="loihi2", backend=None, **gate_kwargs)` takes the same
first five arguments and the keywords of `na_deploy.verify.gate.run_gate` (against, float_net, fidelity,
min_agreement, max_node_change, golden, write_golden, sample_ids, data, ...) and returns the GateReport; the
test fails with one line naming every failed check (`GateReport.failure_message`). For a report without the
assertion, call `run_gate` itself. The plugin lives in hw_targets, not in the core, because it resolves target
and backend names (the core never imports a target).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

import numpy as np
import pytest

from na_deploy.errors import IRError
from na_deploy.ir import IntNet
from na_deploy.testing import assert_bit_exact
from na_deploy.verify.gate import GateReport, run_gate

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


def _path_of(net_or_path: Any) -> Optional[Any]:
    """The .nad.h5 path when a path was given (provenance and the FloatNet beside it need it), else None."""
    return None if isinstance(net_or_path, IntNet) else net_or_path


def verify_gate(net_or_path: Any, inputs: np.ndarray, timesteps: int, target: Any = "loihi2",
                backend: Optional[Any] = None, **gate_kwargs: Any) -> GateReport:
    """`run_gate` with names resolved (target / backend may be names or objects); AssertionError naming every
    failed check unless the gate passed."""
    tgt = get_target(target) if isinstance(target, str) else target
    net = load_intnet(net_or_path)
    be = get_backend(backend, tgt, net) if backend is None or isinstance(backend, str) else backend
    gate_kwargs.setdefault("net_path", _path_of(net_or_path))
    report = run_gate(net, np.asarray(inputs), timesteps, tgt, be, **gate_kwargs)
    if not report.passed:
        raise AssertionError(report.failure_message())
    return report


@pytest.fixture
def na_bit_exact() -> Callable[..., Any]:
    """A callable (net_or_path, inputs, timesteps, target="loihi2", backend=None, **verify_kwargs) -> VerifyReport
    that fails the test, naming the first mismatch, unless the backend equals the reference exactly."""
    return bit_exact


@pytest.fixture
def na_verify_gate() -> Callable[..., GateReport]:
    """A callable (net_or_path, inputs, timesteps, target="loihi2", backend=None, **gate_kwargs) -> GateReport
    that fails the test, naming every failed check, unless the whole verify gate passed."""
    return verify_gate


__all__ = ["na_bit_exact", "na_verify_gate", "bit_exact", "verify_gate", "load_intnet"]
