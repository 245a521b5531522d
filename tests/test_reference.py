"""The fast Loihi 2 reference simulator equals the literal pipelined one (reference/slow.py) EXACTLY (C3, C5, C6):
every node's spike counts and the readout potentials, on random IntNets of every topology and on IntNets made
by to_fixed_point from random FloatNets (residual adds, relays, average pooling)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from na_deploy.errors import SimulationError
from na_deploy.ir import INPUT_NAME, Dense, InputNode, IntNet, IntNeuronNode, IntReadoutNode, Synapse
from na_deploy.hw_targets.loihi2.fixed_point import to_fixed_point
from na_deploy.hw_targets.loihi2.limits import LOIHI2
from na_deploy.hw_targets.loihi2.reference.fast import reference_simulate, reference_simulate_multi
from na_deploy.hw_targets.loihi2.reference.slow import slow_reference_simulate
from na_deploy.verify.bit_exact import first_difference
from na_deploy.testing import TOPOLOGIES, random_inputs, random_intnet
from test_fixed_point import FLOAT_TOPOLOGIES, random_floatnet, random_pixels


def assert_traces_equal(slow, fast):
    assert set(slow.spike_counts) == set(fast.spike_counts)
    for k in slow.spike_counts:
        assert fast.spike_counts[k].dtype == np.int64
        assert np.array_equal(slow.spike_counts[k], fast.spike_counts[k]), (k, first_difference(slow, fast))
    assert fast.readout.dtype == np.int64
    assert np.array_equal(slow.readout, fast.readout), first_difference(slow, fast)


@pytest.mark.parametrize("seed", range(60))
def test_C6_fast_equals_slow_on_random_intnets(seed):
    """C3/C6: 60 random nets, 12 per topology, T in 1..12, random dense exponents (shift = floor)."""
    rng = np.random.default_rng(seed)
    topology = TOPOLOGIES[seed % len(TOPOLOGIES)]
    net = random_intnet(rng, topology, size=int(rng.integers(3, 6)), dense_exponents=(-3, -1, 0, 0, 2))
    x = random_inputs(rng, net, 4)
    T = int(rng.integers(1, 13))
    assert_traces_equal(slow_reference_simulate(net, x, T), reference_simulate(net, x, T))


@pytest.mark.parametrize("seed", range(15))
def test_C6_torch_engine_equals_slow(seed):
    """The torch integer engine (what runs on CUDA), exercised on the CPU: equal to reference/slow.py too."""
    rng = np.random.default_rng(500 + seed)
    net = random_intnet(rng, TOPOLOGIES[seed % len(TOPOLOGIES)], size=4, dense_exponents=(-2, 0, 1))
    x = random_inputs(rng, net, 3)
    T = int(rng.integers(1, 10))
    fast = reference_simulate_multi(net, x, [1, T], engine="torch", device="cpu")
    assert_traces_equal(slow_reference_simulate(net, x, T), fast[T])
    assert_traces_equal(reference_simulate(net, x, 1, device="cpu"), fast[1])


@pytest.mark.parametrize("seed", range(15))
def test_C6_fast_equals_slow_on_fixed_point_nets(seed):
    """C5/C6: IntNets from to_fixed_point (residual adds, relays, avgpool, dense exponents)."""
    rng = np.random.default_rng(1000 + seed)
    net = to_fixed_point(random_floatnet(rng, FLOAT_TOPOLOGIES[seed % len(FLOAT_TOPOLOGIES)], size=5),
                         max_timesteps=16)
    x = random_pixels(rng, net, 3)
    T = int(rng.integers(1, 17))
    assert_traces_equal(slow_reference_simulate(net, x, T), reference_simulate(net, x, T))


def test_C6_multi_T_run_equals_separate_runs():
    """Causality: the first T steps of one long run equal a T-step run (counts and readout)."""
    rng = np.random.default_rng(5)
    net = random_intnet(rng, "residual_conv", size=5)
    x = random_inputs(rng, net, 6)
    multi = reference_simulate_multi(net, x, [8, 1, 3, 8, 13])
    assert sorted(multi) == [1, 3, 8, 13]
    for T, tr in multi.items():
        assert tr.timesteps == T
        assert_traces_equal(reference_simulate(net, x, T), tr)
    assert_traces_equal(slow_reference_simulate(net, x, 13), multi[13])


def test_C6_batch_chunking_does_not_change_results():
    rng = np.random.default_rng(6)
    net = random_intnet(rng, "conv_pool_dense", size=6)
    x = random_inputs(rng, net, 11)
    assert_traces_equal(reference_simulate(net, x, 9, batch_size=4), reference_simulate(net, x, 9))


def _wide_dense_net(weight: int, bias: int, th: int) -> IntNet:
    """One dense layer from 300 pixels: partial sums up to 300 * 255 * weight (float32 vs float64 choice)."""
    inp = InputNode((300,))
    w = np.full((3, 300), weight, dtype=np.int64)
    w[1] *= -1
    n = IntNeuronNode(name="fc", shape=(3,), inputs=[Synapse(INPUT_NAME, Dense(w))], threshold=th,
                      bias_mant=np.array([bias, 0, -bias]), precharge=th // 2)
    r = IntReadoutNode(name="readout", shape=(2,), inputs=[Synapse("fc", Dense(np.array([[2, -2, 4], [6, 0, -8]])))])
    return IntNet(inp, [n], r, {"target": "loihi2", "max_timesteps": 64})


@pytest.mark.parametrize("weight,bias,th", [(218, 7, 1 << 22), (220, 3, 1 << 22), (254, 4095, 5_000_000),
                                            (20000, 4095, 1 << 30)])
def test_C6_exact_near_float32_limit_and_with_24_bit_wrap(weight, bias, th):
    """Sums just below / above 2**24 (float32 -> float64 switch) and a membrane that wraps at 24 bits
    (a net that does not fit: the fast simulator still wraps exactly like reference/slow.py)."""
    net = _wide_dense_net(weight, bias, th)
    rng = np.random.default_rng(weight)
    x = np.concatenate([np.full((1, 300), 255), rng.integers(0, 256, size=(3, 300))])
    for T in (1, 7, 40):
        slow = slow_reference_simulate(net, x, T)
        assert_traces_equal(slow, reference_simulate(net, x, T))
        assert_traces_equal(slow, reference_simulate(net, x, T, engine="torch", device="cpu"))


def test_C6_float32_conv_exact_just_below_2_24():
    """A 48-channel pixel conv with |weights| 127: partial sums up to ~1.4e7 < 2**24 run in float32 (the fast
    path) and must still be exact (no Winograd/FFT-style inexact algorithm may be picked)."""
    from na_deploy.hw_targets.loihi2.reference.fast import _SynapsePlan
    from na_deploy.ir import Conv2d

    rng = np.random.default_rng(1)
    inp = InputNode((48, 6, 6))
    w = rng.choice([-127, 127], size=(3, 48, 3, 3))
    syn = Synapse(INPUT_NAME, Conv2d(w, 1, 1))
    assert _SynapsePlan(syn, 3, torch.device("cpu"), LOIHI2).dtype == torch.float32
    n = IntNeuronNode(name="c", shape=(3, 6, 6), inputs=[syn], threshold=1 << 21, precharge=1 << 20)
    r = IntReadoutNode(name="readout", shape=(2,), inputs=[Synapse("c", Dense(rng.integers(-50, 50, (2, 108)) * 2))])
    net = IntNet(inp, [n], r, {"max_timesteps": 8})
    x = np.concatenate([np.full((1, 48, 6, 6), 255), rng.integers(0, 256, size=(2, 48, 6, 6))])
    assert_traces_equal(slow_reference_simulate(net, x, 5), reference_simulate(net, x, 5))


def test_C6_exact_even_when_the_caller_allows_reduced_precision_float32():
    """bf16 / TF32 GEMM and conv settings of the caller are overridden while the reference runs, then restored."""
    rng = np.random.default_rng(2)
    net = random_intnet(rng, "conv_pool_dense", size=6)
    x = random_inputs(rng, net, 4)
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        fast = reference_simulate(net, x, 6, device="cpu")
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(old)
    assert_traces_equal(slow_reference_simulate(net, x, 6), fast)


def test_reference_refuses_bad_requests():
    rng = np.random.default_rng(0)
    net = random_intnet(rng, "conv_chain", size=4)
    net.meta["max_timesteps"] = 16
    x = random_inputs(rng, net, 2)
    for bad_T in (0, -1, 17, 2.5):
        with pytest.raises(SimulationError, match="timesteps"):
            reference_simulate(net, x, bad_T)
    with pytest.raises(SimulationError, match="shape"):
        reference_simulate(net, x[:, :, :3], 4)
    with pytest.raises(SimulationError, match="dtype"):
        reference_simulate(net, x.astype(np.float32), 4)
    with pytest.raises(SimulationError, match=r"\[0, 255\]"):
        reference_simulate(net, x + 256, 4)
    with pytest.raises(SimulationError, match="empty"):
        reference_simulate(net, x[:0], 4)
    with pytest.raises(SimulationError, match="engine"):
        reference_simulate(net, x, 4, engine="cupy")
    with pytest.raises(SimulationError, match="IntNet"):
        reference_simulate("net", x, 4)  # type: ignore[arg-type]
