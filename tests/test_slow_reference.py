"""The literal integer reference (the executable IntNet semantics) against hand-computed cases (C2, C3, C7)."""
import numpy as np

from na_deploy.hw_targets.loihi2.reference.slow import slow_reference_simulate
from na_deploy.integer import shift
from na_deploy.integer import wrap_signed as wrap
from na_deploy.ir import Dense, Identity, InputNode, IntNet, IntNeuronNode, IntReadoutNode, Synapse


def _one_layer(w, th, bias=0, pc=None, readout_w=2):
    inp = InputNode((1,))
    a = IntNeuronNode("a", (1,), [Synapse("input", Dense(np.array([[w]])))], threshold=th,
                      bias_mant=np.array([bias]), precharge=th // 2 if pc is None else pc)
    r = IntReadoutNode("r", (1,), [Synapse("a", Dense(np.array([[readout_w]])))])
    return IntNet(inp, [a], r)


def test_constant_current_gives_round_half_up_of_rate_C2():
    """With pre-charge floor(th/2), T steps of constant integer current I (0 <= I <= th) give exactly
    clip(floor(T*I/th + 1/2), 0, T) spikes: the quantized ANN level with ties rounded up (C1/C2)."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        th = int(rng.integers(1, 40))
        w = int(rng.integers(0, 2 * th + 2)) * 2
        x = int(rng.integers(0, 3))
        T = int(rng.integers(1, 9))
        tr = slow_reference_simulate(_one_layer(w, th), np.array([[x]]), T)
        I = w * x
        want = min(max(int(np.floor(T * I / th + 0.5)), 0), T)
        assert tr.spike_counts["a"][0, 0] == want, (th, w, x, T)
        assert tr.readout[0, 0] == 2 * want


def test_ties_and_negative_bias():
    # v starts at 2, current 2 -> v == th == 4 exactly: a spike (v >= th), then v = 0.
    tr = slow_reference_simulate(_one_layer(2, 4), np.array([[1]]), 4)
    assert tr.spike_counts["a"][0, 0] == 2
    # a negative bias larger than the input silences the neuron; the membrane goes negative and stays there
    tr = slow_reference_simulate(_one_layer(2, 4, bias=-3), np.array([[1]]), 6)
    assert tr.spike_counts["a"][0, 0] == 0


def test_pipeline_window_and_relay_C3():
    """A relay delays its source by exactly one hop and the readout sees every spike of its T-window:
    the pipelined run equals the unpipelined theory."""
    inp = InputNode((1,))
    a = IntNeuronNode("a", (1,), [Synapse("input", Dense(np.array([[2]])))], threshold=6, precharge=3)
    rel = IntNeuronNode("a.relay1", (1,), [Synapse("a", Identity(5))], threshold=5, precharge=2, role="relay")
    b = IntNeuronNode("b", (1,), [Synapse("a", Dense(np.array([[10]])))], threshold=10, precharge=5)
    r = IntReadoutNode("r", (2,), [Synapse("b", Dense(np.array([[2], [0]]))),
                                   Synapse("a.relay1", Dense(np.array([[0], [2]])))],
                       bias_mant=np.array([1, 0]))
    net = IntNet(inp, [a, rel, b], r)
    assert net.depths() == {"input": 0, "a": 1, "a.relay1": 2, "b": 2, "r": 3}
    for T in (1, 2, 3, 7, 12):
        tr = slow_reference_simulate(net, np.array([[1]]), T)
        ca = tr.spike_counts["a"][0, 0]
        assert ca == min(max(int(np.floor(T * 2 / 6 + 0.5)), 0), T)
        assert tr.spike_counts["a.relay1"][0, 0] == ca == tr.spike_counts["b"][0, 0]
        assert list(tr.readout[0]) == [2 * ca + T, 2 * ca]
        assert tr.predictions[0] == (0 if 2 * ca + T > 2 * ca else 1)


def test_argmax_ties_break_low_C7():
    inp = InputNode((1,))
    a = IntNeuronNode("a", (1,), [Synapse("input", Dense(np.array([[2]])))], threshold=2, precharge=1)
    r = IntReadoutNode("r", (3,), [Synapse("a", Dense(np.array([[0], [2], [2]])))])
    tr = slow_reference_simulate(IntNet(inp, [a], r), np.array([[1]]), 3)
    assert list(tr.readout[0]) == [0, 6, 6] and tr.predictions[0] == 1


def test_shift_and_wrap():
    assert list(shift(np.array([5, -5, 7]), -1)) == [2, -3, 3]
    assert list(shift(np.array([5, -5]), 2)) == [20, -20]
    wrapped = wrap(np.array([2**23 - 1, 2**23, -(2**23), -(2**23) - 1]), 24)
    assert list(wrapped) == [2**23 - 1, -(2**23), -(2**23), 2**23 - 1]


def test_shift_and_wrap_give_the_same_integers_on_numpy_and_torch():
    """na_deploy.integer writes each rule once, with integer operators only: the numpy engines, the Lava models
    and the fast reference's torch engine (CUDA) run the same expression and get the same integers."""
    import torch

    v = np.array([0, 5, -5, 2**23 - 1, 2**23, -(2**23) - 1, 2**30 + 7, -(2**31) + 3], dtype=np.int64)
    for dtype in (np.int64, np.int32):
        x = v.astype(dtype)
        for bits in (8, 16, 24):
            assert np.array_equal(wrap(torch.from_numpy(x), bits).numpy(), wrap(x, bits)), (dtype, bits)
        for e in (-3, -1, 0, 2):
            assert np.array_equal(shift(torch.from_numpy(x), e).numpy(), shift(x, e)), (dtype, e)
    assert list(wrap(v, 24)) == [((int(a) + 2**23) % 2**24) - 2**23 for a in v]
