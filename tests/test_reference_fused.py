"""The fused integer loops of the CPU reference (`reference.fused`, issue 23) give exactly the integers of the numpy
passes they replace (and of reference_slow), for every neuron model, topology, wrap, offset calibration, chunk of
steps and thread split (C6). numba is a dependency of the core (pyproject.toml): these tests compare both engines
whatever NA_DEPLOY_FUSED says (it only picks the default engine), and fail where numba does not import. The loops'
machine code is cached on disk where a place is writable, and compiled uncached where none is."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import os
from pathlib import Path

from na_deploy.hw_targets.loihi2.fixed_point import to_fixed_point
from na_deploy.hw_targets.loihi2.reference import fused
from na_deploy.hw_targets.loihi2.reference.fast import reference_simulate, reference_simulate_multi
from na_deploy.hw_targets.loihi2.reference.slow import slow_reference_simulate
from na_deploy.ir import replace_nodes
from na_deploy.ir.neuron import NEURON_MODELS, neuron_model
from na_deploy.ir.offset_calibration import with_offset_steps
from na_deploy.testing import TOPOLOGIES, random_inputs, random_intnet
from test_fixed_point import FLOAT_TOPOLOGIES, random_floatnet, random_pixels
from test_neuron_modes_datta_qffs import pow2_net
from test_reference import _wide_dense_net, assert_traces_equal



@pytest.fixture(autouse=True)
def fused_loops_on(monkeypatch):
    """The fused loops are the default engine here even under NA_DEPLOY_FUSED=0 (which CI-time comparisons set)."""
    monkeypatch.setitem(fused._state, "on", True)


def test_numba_the_dependency_imports_and_the_fused_loops_are_the_default():
    assert fused.available(), "numba does not import: it is a dependency (pyproject.toml); reinstall the environment"
    assert fused.accelerator().startswith("numba ")


def assert_same_runs(fast: dict, passes: dict) -> None:
    assert sorted(fast) == sorted(passes)
    for t in fast:
        assert_traces_equal(passes[t], fast[t])
        assert (fast[t].event_counts is None) == (passes[t].event_counts is None), t
        for k, e in (passes[t].event_counts or {}).items():
            assert fast[t].event_counts[k].dtype == np.int64 and np.array_equal(fast[t].event_counts[k], e), (t, k)


def fused_and_passes(net, x, Ts, **kw) -> tuple[dict, dict]:
    """The same run with the fused loops (the default where numba is installed) and with the numpy passes."""
    assert fused.enabled()
    fast = reference_simulate_multi(net, x, Ts, device="cpu", **kw)
    with fused.disabled():
        assert fused.accelerator() == "numpy"
        passes = reference_simulate_multi(net, x, Ts, device="cpu", **kw)
    return fast, passes


@pytest.mark.parametrize("name", sorted(NEURON_MODELS))
@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_fused_equals_numpy_passes_for_every_model_and_topology_C6(name, topology):
    rng = np.random.default_rng(TOPOLOGIES.index(topology))
    base = random_intnet(rng, topology, size=5, dense_exponents=(-3, -1, 0, 2))
    net = replace_nodes(base, [replace(n, neuron=neuron_model(name)) for n in base.nodes])
    x = random_inputs(rng, net, 5)
    fast, passes = fused_and_passes(net, x, [1, 4, 9])
    assert_same_runs(fast, passes)
    assert_traces_equal(slow_reference_simulate(net, x, 9), fast[9])


@pytest.mark.parametrize("topology,seed", [("conv_pool_dense", 7), ("residual_identity", 0), ("dense_chain", 1),
                                           ("residual_conv", 4)])
def test_fused_negative_spikes_and_messages_equal_C6(topology, seed):
    """Seeds whose samples send negative spikes: net counts and messages (event_counts) both equal."""
    net = pow2_net(seed, topology, "negative")
    x = random_inputs(np.random.default_rng(2), net, 5)
    fast, passes = fused_and_passes(net, x, [3, 7])
    assert_same_runs(fast, passes)
    assert any((fast[7].event_counts[k] != fast[7].spike_counts[k]).any() for k in fast[7].spike_counts)


@pytest.mark.parametrize("weight,bias,th", [(220, 3, 1 << 22), (20000, 4095, 1 << 30)])
def test_fused_wraps_at_24_bits_and_switches_to_float64_like_the_passes(weight, bias, th):
    net = _wide_dense_net(weight, bias, th)
    rng = np.random.default_rng(weight)
    x = np.concatenate([np.full((1, 300), 255), rng.integers(0, 256, size=(3, 300))])
    fast, passes = fused_and_passes(net, x, [1, 7, 40])
    assert_same_runs(fast, passes)
    assert_traces_equal(slow_reference_simulate(net, x, 40), fast[40])


@pytest.mark.parametrize("topology,seed,rho", [("conv_pool_dense", 7, 2), ("residual_identity", 9, 3)])
def test_fused_offset_calibration_equals_the_passes_C6(topology, seed, rho):
    net = with_offset_steps(pow2_net(seed, topology), rho)
    x = random_inputs(np.random.default_rng(4), net, 6)
    fast, passes = fused_and_passes(net, x, [rho, rho + 2, 7])
    assert_same_runs(fast, passes)


def test_fused_chunks_of_steps_threads_and_batches_do_not_change_results(monkeypatch):
    """One step per chunk, the batch split over 2 threads, chunks of 3 samples: the same integers."""
    rng = np.random.default_rng(11)
    net = to_fixed_point(random_floatnet(rng, FLOAT_TOPOLOGIES[1], size=6), max_timesteps=16)
    x = random_pixels(rng, net, 7)
    whole, passes = fused_and_passes(net, x, [2, 5, 16])
    monkeypatch.setattr(fused, "CHUNK_BYTES", 1)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        split = reference_simulate_multi(net, x, [2, 5, 16], device="cpu", batch_size=3)
    finally:
        torch.set_num_threads(old)
    assert_same_runs(whole, passes)
    assert_same_runs(split, passes)


@pytest.mark.parametrize("seed", range(len(FLOAT_TOPOLOGIES)))
def test_fused_equals_passes_on_fixed_point_nets(seed):
    """IntNets from to_fixed_point: residual adds, relays, average pooling, dense exponents."""
    rng = np.random.default_rng(1000 + seed)
    net = to_fixed_point(random_floatnet(rng, FLOAT_TOPOLOGIES[seed], size=5), max_timesteps=16)
    x = random_pixels(rng, net, 3)
    fast, passes = fused_and_passes(net, x, [1, 6, 16])
    assert_same_runs(fast, passes)


def test_fused_loops_run_by_default_on_the_cpu_and_never_on_the_torch_engine(monkeypatch):
    """Per-step nets run fused on the CPU engine (one lockstep run per chunk of samples); the torch engine and
    windowed ("accumulate") nets keep their passes."""
    calls = []
    real = fused.lockstep
    monkeypatch.setattr(fused, "lockstep", lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = np.random.default_rng(3)
    net = random_intnet(rng, "residual_conv")
    x = random_inputs(rng, net, 4)
    reference_simulate(net, x, 3, device="cpu", engine="torch")
    reference_simulate(replace_nodes(net, [replace(n, neuron=neuron_model("accumulate")) for n in net.nodes]), x, 3,
                       device="cpu")
    assert calls == []
    reference_simulate(net, x, 3, device="cpu", batch_size=2)
    assert len(calls) == 2
    assert fused.accelerator().startswith("numba ")


def test_without_the_accelerator_the_engine_runs_its_numpy_passes():
    with fused.disabled():
        assert not fused.enabled() and fused.accelerator() == "numpy"
        rng = np.random.default_rng(8)
        net = random_intnet(rng, "conv_pool_dense")
        x = random_inputs(rng, net, 3)
        assert_traces_equal(slow_reference_simulate(net, x, 5), reference_simulate(net, x, 5, device="cpu"))


def test_loops_machine_code_is_cached_on_disk_where_writable_C6():
    """After a fused run the compiled kernel has a cache folder holding its index (NUMBA_CACHE_DIR, or __pycache__
    beside fused.py, or the user's cache): the next process loads the loops instead of compiling them."""
    rng = np.random.default_rng(5)
    net = random_intnet(rng, "dense_chain")
    reference_simulate(net, random_inputs(rng, net, 2), 2, device="cpu")
    folder = fused._state["kernel"]._cache.cache_path
    assert folder is not None and os.access(folder, os.W_OK)
    assert any(f.name.startswith("fused._steps") and f.suffix == ".nbi" for f in Path(folder).iterdir())


def test_without_a_writable_cache_folder_the_loops_compile_uncached(monkeypatch, tmp_path):
    """numba refuses cache=True where no locator has a writable folder (here: NUMBA_CACHE_DIR below a plain file,
    the only locator allowed); `_jit` then compiles without the cache, silently, and the code runs."""
    numba = pytest.importorskip("numba")
    (tmp_path / "plain_file").write_text("")
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "plain_file" / "cache"))
    monkeypatch.setattr(numba.config, "CACHE_LOCATOR_CLASSES", "UserProvidedCacheLocator")
    with pytest.raises(RuntimeError, match="cannot cache"):
        numba.njit(cache=True)(_add_one)
    compiled = fused._jit(numba, _add_one)
    assert compiled._cache.cache_path is None
    assert compiled(np.int64(41)) == 42


def _add_one(i):
    return i + 1
