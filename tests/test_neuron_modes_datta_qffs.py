"""Neuron modes "negative" (QFFS signed spikes) and "accumulate" (Datta's accumulate-then-fire), contract C2 / C3 /
C5 / C6: the rules by hand, the float SNN equal to the integer reference on exactly representable nets (every
mode), signed counts and event counts, one run per T for a windowed model, the fit bound, the converter."""
import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from na_deploy.convert.neuron_modes import NEURON_MODES, apply_neuron_mode, convert_inference_mode, mode_of
from na_deploy.errors import ConversionError
from na_deploy.simulate.float_snn import simulate_float
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.hw_targets.loihi2.fit import (accumulate_membrane_interval, check_fit, membrane_interval, node_bound,
                                             op_interval)
from na_deploy.hw_targets.loihi2.limits import LOIHI2
from na_deploy.hw_targets.loihi2.reference.fast import reference_simulate, reference_simulate_multi
from na_deploy.hw_targets.loihi2.reference.slow import slow_reference_simulate
from na_deploy.ir import Dense, FloatNet, Identity, IntNet, NeuronNode, ReadoutNode, Synapse, replace_nodes
from na_deploy.ir.neuron import ACCUMULATE, NEGATIVE, SUBTRACT
from na_deploy.testing import random_inputs, random_intnet


def pow2_net(seed: int, topology: str, mode: str = "subtract") -> IntNet:
    """A random IntNet with power-of-two thresholds (relays: gain = threshold), so that its float twin's
    weights q / th_src and payloads z * th_src are exact in float64; every node in `mode`."""
    rng = np.random.default_rng(seed)
    base = random_intnet(rng, topology)
    nodes = []
    for n in base.nodes:
        th = int(2 ** rng.integers(1, 7))
        inputs = [Synapse(n.inputs[0].source, Identity(th))] if n.role == "relay" else n.inputs
        nodes.append(replace(n, threshold=th, precharge=th // 2, inputs=inputs))
    net = replace_nodes(base, nodes)
    return net if mode == "subtract" else convert_inference_mode(net, mode)


def float_twin(inet: IntNet) -> FloatNet:
    """The FloatNet with the same integers (weights from a neuron divided by its threshold: a spike carries th)."""
    th = {n.name: n.threshold for n in inet.nodes}

    def syns(node):
        out = []
        for s in node.inputs:
            s = copy.deepcopy(s)
            d = float(th.get(s.source, 1))
            s.op.weight = (np.asarray(s.op.weight, dtype=np.float64) / d if hasattr(s.op.weight, "shape")
                           else float(s.op.weight) / d)
            out.append(s)
        return out

    nodes = [NeuronNode(n.name, n.shape, syns(n), threshold=float(n.threshold), bias=n.bias.astype(np.float64),
                        p=n.p, precharge=float(n.precharge), neuron=n.neuron, role=n.role) for n in inet.nodes]
    r = inet.readout
    return FloatNet(inet.input, nodes, ReadoutNode(r.name, r.shape, syns(r), bias=r.bias.astype(np.float64)),
                    dict(inet.meta))


def test_negative_rule_by_hand():
    """th = 4, pc = 2: +1 at v >= th; -1 only when v < 0 and the window's net count c > 0 (never below 0)."""
    v, c, zs = np.array([2]), np.array([0]), []
    for i in (3, -6, -3, 9, 5, -20):
        v = v + i
        v, z = NEGATIVE.fire_and_reset(v, 4, c)
        c = c + z
        zs.append(int(z[0]))
    # v: 5 -> +1 (v 1, c 1); -5 -> -1 (v -1, c 0); -4: c = 0, no spike; 5 -> +1; 6 -> +1 (c 2); -18 -> -1 (v -14)
    assert zs == [1, -1, 0, 1, 1, -1] and int(v[0]) == -14 and int(c[0]) == 1
    assert NEGATIVE.signed and NEGATIVE.stateful and not NEGATIVE.windowed and NEGATIVE.default_precharge(4.0) == 2


def test_accumulate_window_by_hand():
    """T = 4: v_T = pc + sum I, n = clip(floor(v_T / th), 0, T) spikes, leading (1..1 0..0)."""
    cur = np.array([[3, 10, -2, 1], [3, 10, -2, 6], [3, 10, -2, 0], [3, 10, -2, 0]])
    v = np.full(4, 3)
    z = np.empty((4, 4), dtype=bool)
    ACCUMULATE.run_window(v, cur, 7, 4, z)
    assert z.sum(axis=0).tolist() == [2, 4, 0, 1] and v.tolist() == [1, 15, -5, 3]
    assert all(np.array_equal(z[:, k], np.arange(4) < z[:, k].sum()) for k in range(4))  # leading spikes
    assert ACCUMULATE.emit_delay(5) == 5 and SUBTRACT.emit_delay(5) == 0


@pytest.mark.parametrize("mode", ["subtract", "negative", "accumulate"])
@pytest.mark.parametrize("topology", ["conv_pool_dense", "residual_conv", "dense_chain"])
def test_float_snn_equals_the_integer_reference_on_exact_nets(mode, topology):
    """The float SNN (float64) and the integer reference run the same dynamics: on a net whose float twin is
    exact, per-neuron counts, readout potentials and spike messages are equal at every T (C2, C6)."""
    inet = pow2_net(7, topology, mode)
    x = random_inputs(np.random.default_rng(1), inet, 6)
    Ts = [1, 3, 6]
    fr = simulate_float(float_twin(inet), x, Ts, device="cpu", dtype=torch.float64, count_timesteps=Ts,
                        progress=False)
    ref = reference_simulate_multi(inet, x, Ts, device="cpu")
    for t in Ts:
        for n in inet.nodes:
            assert np.array_equal(fr.counts[t][n.name], ref[t].spike_counts[n.name]), (t, n.name)
            assert fr.events[t][n.name] == int(ref[t].events()[n.name].sum()), (t, n.name)
        assert np.array_equal(fr.potentials[t], ref[t].readout.astype(np.float64)), t
    assert sum(fr.spikes[6].values()) > 0


@pytest.mark.parametrize("topology,seed", [("conv_pool_dense", 7), ("residual_identity", 0), ("dense_chain", 1),
                                           ("residual_conv", 4)])
def test_negative_spikes_net_counts_and_messages_C6(topology, seed):
    """spike_counts = net count in [0, T]; event_counts = messages = #(+1) + #(-1) >= the net count, and the
    difference is even (each -1 undoes a +1); fast == slow for both, numpy and torch engines."""
    net = pow2_net(seed, topology, "negative")  # seeds whose samples send negative spikes
    x = random_inputs(np.random.default_rng(2), net, 5)
    T = 7
    slow = slow_reference_simulate(net, x, T)
    negatives = 0
    for engine in ("numpy", "torch"):
        fast = reference_simulate(net, x, T, device="cpu", engine=engine)
        for k in slow.spike_counts:
            c, e = fast.spike_counts[k], fast.event_counts[k]
            assert np.array_equal(c, slow.spike_counts[k]) and np.array_equal(e, slow.event_counts[k]), (engine, k)
            assert c.min() >= 0 and c.max() <= T and np.all(e >= c) and np.all((e - c) % 2 == 0)
            negatives += int((e - c).sum()) // 2
        assert np.array_equal(fast.readout, slow.readout)
    assert negatives > 0  # the sample really sends negative spikes
    sub = reference_simulate(replace_nodes(net, [replace(n, neuron=SUBTRACT) for n in net.nodes]), x, T)
    assert sub.event_counts is None and sub.events() is sub.spike_counts


def test_accumulate_runs_each_T_separately_and_counts_are_the_rounded_level():
    """Counts at T are not prefixes (the fire phase follows T accumulate steps): reference_simulate_multi
    equals one run per T; the first layer's count is clip(floor((pc + T * I) / th), 0, T) for its constant
    current I."""
    net = pow2_net(5, "conv_chain", "accumulate")
    x = random_inputs(np.random.default_rng(3), net, 4)
    multi = reference_simulate_multi(net, x, [2, 3, 5], device="cpu")
    for t in (2, 3, 5):
        one = reference_simulate(net, x, t, device="cpu")
        assert all(np.array_equal(multi[t].spike_counts[k], one.spike_counts[k]) for k in one.spike_counts)
        assert np.array_equal(multi[t].readout, one.readout)
        first = net.nodes[0]
        w = torch.as_tensor(first.inputs[0].op.weight, dtype=torch.float64)
        cur = torch.nn.functional.conv2d(torch.as_tensor(x, dtype=torch.float64), w, padding=1).numpy()
        cur = cur.astype(np.int64) + first.bias.reshape(-1, 1, 1)
        want = np.clip(np.floor_divide(first.precharge + t * cur, first.threshold), 0, t)
        assert np.array_equal(one.spike_counts[first.name], want)


def test_fit_bound_covers_signed_inputs_and_accumulation():
    """Signed payloads: a synapse's interval takes the |w| sums; the membrane closed forms hold for random
    current sequences (negative: subtract's form with signed currents; accumulate: T steps without reset)."""
    op = Dense(np.array([[3, -2, 4], [-5, 0, 1]]))
    lo, hi = op_interval(op, 1, 2)
    slo, shi = op_interval(op, 1, 2, pmin=-1)
    assert lo.tolist() == [-2, -5] and hi.tolist() == [7, 1] and slo.tolist() == [-9, -6] and shi.tolist() == [9, 6]
    rng = np.random.default_rng(0)
    for _ in range(300):
        th, T = int(rng.integers(1, 40)), int(rng.integers(1, 12))
        pc = th // 2
        i_lo, i_hi = sorted(rng.integers(-3 * th, 3 * th, size=2).tolist())
        for model, interval in ((NEGATIVE, membrane_interval), (ACCUMULATE, accumulate_membrane_interval)):
            b_lo, b_hi = interval(np.array([float(i_lo)]), np.array([float(i_hi)]), th, pc, T)
            cur = rng.integers(i_lo, i_hi + 1, size=(T, 1))
            v, z = np.array([pc]), np.empty((T, 1), dtype=model.spike_dtype)
            if model is ACCUMULATE:
                seen = [pc + int(cur[:t + 1].sum()) for t in range(T)]
                model.run_window(v, cur, th, T, z)
                seen.append(int(v[0]))
            else:
                seen, c = [pc], np.array([0])
                for t in range(T):
                    v = v + cur[t]
                    seen.append(int(v[0]))
                    v, zz = model.fire_and_reset(v, th, c)
                    c = c + zz
                    seen.append(int(v[0]))
            assert b_lo <= min(seen) and max(seen) <= b_hi, (model.name, th, pc, i_lo, i_hi, T, seen)


def test_the_fit_check_knows_the_new_models_and_their_bounds():
    net = pow2_net(1, "conv_pool_dense")
    neg, acc = convert_inference_mode(net, "negative"), convert_inference_mode(net, "accumulate")
    assert {"negative", "accumulate"} <= set(LOIHI2.neuron_models)
    assert check_fit(neg) == [] and check_fit(acc) == [] and TARGET.check_fit(neg, 8) == []
    fc = net.nodes[-1].name  # fed by spikes: the signed bound is wider, the accumulate bound grows with T
    assert node_bound(neg.nodes[-1], 8, signed_sources={"pool"}).current[0] < node_bound(net.nodes[-1], 8).current[0]
    assert node_bound(acc.nodes[-1], 64).membrane[1] > node_bound(net.nodes[-1], 64).membrane[1], fc


def test_convert_inference_mode_is_pure_and_refuses_what_it_cannot_do():
    """The pure entry point (FloatNet or IntNet, mode, offset) -> net; the input net is left as it was."""
    net = pow2_net(2, "dense_chain")
    neg = convert_inference_mode(net, "negative")
    assert all(n.neuron is NEGATIVE for n in neg.nodes) and all(n.neuron is SUBTRACT for n in net.nodes)
    assert neg.meta["neuron_mode"] == {"mode": "negative"} and mode_of(neg.meta) == {"neuron": "negative"}
    assert [n.threshold for n in neg.nodes] == [n.threshold for n in net.nodes]
    assert convert_inference_mode(net, "subtract") is net
    with pytest.raises(ConversionError, match="mode zero from an IntNet"):
        convert_inference_mode(net, "zero")
    with pytest.raises(ConversionError, match="the net must come from the subtract conversion"):
        convert_inference_mode(neg, "accumulate")
    with pytest.raises(ConversionError, match="offset calibration needs neuron mode subtract"):
        convert_inference_mode(net, "negative", offset_steps=2)
    with pytest.raises(ConversionError, match="unknown neuron mode 'leaky'; allowed: subtract, zero, negative"):
        convert_inference_mode(net, "leaky")
    fnet = float_twin(net)
    facc = apply_neuron_mode(fnet, "accumulate")
    assert all(n.neuron is ACCUMULATE for n in facc.nodes) and facc.meta["neuron_mode"] == {"mode": "accumulate"}
    assert NEURON_MODES == ("subtract", "zero", "negative", "accumulate")
