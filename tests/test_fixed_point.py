"""Loihi 2 fixed point (contract C5) and fit checks: FloatNet -> IntNet is valid, fits, obeys Lava's weight rules,
agrees with the float SNN on predictions, and crafted nets that break each rule are reported by node and limit.

`random_floatnet` (also used by test_reference.py) draws small FloatNets of several topologies, with residual
adds (identity and strided 1x1 conv shortcuts, relays inserted by balance_delays), average pooling and dense
chains, weights scaled so that the float SNN is neither silent nor saturated.
"""
from __future__ import annotations

import numpy as np
import pytest

from na_deploy.convert.delays import balance_delays
from na_deploy.errors import FitError
from na_deploy.ir import (INPUT_NAME, AvgPool2d, Conv2d, Dense, FloatNet, Identity, InputNode, IntNet, IntNeuronNode,
                          NeuronNode, ReadoutNode, Synapse)
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.hw_targets.loihi2.fit import check_fit, static_bounds
from na_deploy.hw_targets.loihi2.fixed_point import (round_half_away, round_half_up, to_fixed_point,
                                                     to_fixed_point_with_report)
from na_deploy.hw_targets.loihi2.limits import LOIHI2, Loihi2Limits
from na_deploy.hw_targets.loihi2.reference.fast import reference_simulate
from na_deploy.simulate.torch_ops import compile_op
from na_deploy.testing import random_intnet

FLOAT_TOPOLOGIES = ("dense_chain", "conv_chain", "conv_pool_dense", "residual_identity", "residual_conv")


# ------------------------------------------------------------------------------ random FloatNets
class _FloatBuilder:
    def __init__(self, rng, input_shape):
        self.rng = rng
        self.input = InputNode(input_shape, np.ones(input_shape[0]) / 255)
        self.nodes: list[NeuronNode] = []
        self.shapes = {INPUT_NAME: tuple(input_shape)}
        self.th = {INPUT_NAME: 1.0}

    def _gain(self, source, fan_in):
        # current per step ~ threshold: payload is 0..255 (pixels) or th_src (spikes)
        unit = 255.0 * 0.5 if source == INPUT_NAME else self.th[source] * 0.5
        return 1.5 / (unit * np.sqrt(fan_in))

    def conv(self, source, cout, k=3, stride=1, pad=1):
        cin = self.shapes[source][0]
        w = self.rng.normal(size=(cout, cin, k, k)) * self._gain(source, cin * k * k)
        return Synapse(source, Conv2d(w, stride, pad))

    def dense(self, source, nout):
        nin = int(np.prod(self.shapes[source]))
        return Synapse(source, Dense(self.rng.normal(size=(nout, nin)) * self._gain(source, nin)))

    def neuron(self, name, syns):
        shape = syns[0].op.out_shape(self.shapes[syns[0].source])
        th = float(self.rng.uniform(0.3, 3.0))
        p = int(self.rng.choice([1, 2, 4]))
        b = self.rng.normal(size=shape[0]) * 0.2 * th
        self.nodes.append(NeuronNode(name=name, shape=shape, inputs=syns, threshold=th, bias=b, p=p))
        self.shapes[name], self.th[name] = shape, th
        return name

    def readout(self, syns):
        shape = syns[0].op.out_shape(self.shapes[syns[0].source])
        r = ReadoutNode(name="readout", shape=shape, inputs=syns, bias=self.rng.normal(size=shape[0]) * 0.1)
        return FloatNet(self.input, self.nodes, r, meta={"generator": "random_floatnet"})


def random_floatnet(rng: np.random.Generator, topology: str | None = None, size: int = 6) -> FloatNet:
    """A small random FloatNet, delay-balanced (relays inserted where a shortcut skips a node)."""
    topology = topology or str(rng.choice(FLOAT_TOPOLOGIES))
    c, ch = int(rng.integers(1, 3)), int(rng.integers(2, 5))
    if topology == "dense_chain":
        b = _FloatBuilder(rng, (int(rng.integers(4, 4 * size)),))
        src = INPUT_NAME
        for i in range(int(rng.integers(1, 4))):
            src = b.neuron(f"fc{i}", [b.dense(src, int(rng.integers(4, 4 * size)))])
        return b.readout([b.dense(src, int(rng.integers(2, 6)))])
    b = _FloatBuilder(rng, (c, size, size))
    if topology == "conv_chain":
        src = INPUT_NAME
        for i in range(int(rng.integers(1, 4))):
            src = b.neuron(f"conv{i}", [b.conv(src, ch)])
        net = b.readout([b.dense(src, int(rng.integers(2, 6)))])
    elif topology == "conv_pool_dense":
        a = b.neuron("conv0", [b.conv(INPUT_NAME, ch)])
        p = b.neuron("pool", [Synapse(a, AvgPool2d(2, 2, 0.25))])
        f = b.neuron("fc", [b.dense(p, int(rng.integers(3, 9)))])
        net = b.readout([b.dense(f, int(rng.integers(2, 6)))])
    elif topology == "residual_identity":
        a = b.neuron("stem", [b.conv(INPUT_NAME, ch)])
        m = b.neuron("block.conv1", [b.conv(a, ch)])
        o = b.neuron("block.out", [b.conv(m, ch), Synapse(a, Identity(1.0))])
        net = b.readout([b.dense(o, int(rng.integers(2, 6)))])
    elif topology == "residual_conv":
        a = b.neuron("stem", [b.conv(INPUT_NAME, ch)])
        m = b.neuron("block.conv1", [b.conv(a, 2 * ch, stride=2)])
        o = b.neuron("block.out", [b.conv(m, 2 * ch), b.conv(a, 2 * ch, k=1, stride=2, pad=0)])
        net = b.readout([b.dense(o, int(rng.integers(2, 6)))])
    else:
        raise ValueError(topology)
    return balance_delays(net)


def random_pixels(rng, net, batch: int) -> np.ndarray:
    return rng.integers(0, 256, size=(batch, *net.input.shape)).astype(np.uint8)


def float_snn(net: FloatNet, x: np.ndarray, T: int) -> np.ndarray:
    """Test oracle: the FloatNet SNN of na_deploy.ir (unpipelined, float64) -> readout potentials (B, K)."""
    import torch

    pay = {INPUT_NAME: torch.as_tensor(x, dtype=torch.float64).unsqueeze(0).expand(T, *x.shape)}
    for n in net.all_nodes():
        cur = sum(compile_op(s.op, torch.float64)(pay[s.source].reshape(-1, *pay[s.source].shape[2:]))
                  .reshape(T, x.shape[0], *n.shape) for s in n.inputs)
        cur = cur + torch.as_tensor(n.bias).reshape((-1,) + (1,) * (len(n.shape) - 1))
        if isinstance(n, ReadoutNode):
            return cur.sum(0).numpy()
        v, zs = torch.full(cur.shape[1:], n.precharge, dtype=torch.float64), []
        for t in range(T):
            v = v + cur[t]
            z = (v >= n.threshold).double()
            v = v - z * n.threshold
            zs.append(z * n.threshold)
        pay[n.name] = torch.stack(zs)


# ---------------------------------------------------------------------------------------- tests
def test_rounding_modes_are_the_documented_ones():
    np.testing.assert_array_equal(round_half_away([-2.5, -1.5, -0.5, 0.5, 1.5, 2.49]), [-3, -2, -1, 1, 2, 2])
    np.testing.assert_array_equal(round_half_up([0.5, 1.5, 2.5, 2.49]), [1, 2, 3, 2])


@pytest.mark.parametrize("seed", range(10))
def test_C5_intnet_from_floatnet_is_valid_fits_and_obeys_lava_weight_rules(seed):
    rng = np.random.default_rng(seed)
    net = random_floatnet(rng, FLOAT_TOPOLOGIES[seed % len(FLOAT_TOPOLOGIES)])
    inet, rep = to_fixed_point_with_report(net, max_timesteps=64)
    assert isinstance(inet, IntNet) and inet.meta["target"] == "loihi2" and inet.meta["max_timesteps"] == 64
    assert check_fit(inet) == []
    assert [n.name for n in inet.all_nodes()] == [n.name for n in net.all_nodes()]
    for n in inet.all_nodes():
        for s in n.inputs:
            w = np.asarray(s.op.weight)
            assert np.issubdtype(w.dtype, np.integer) or float(w).is_integer()
            if isinstance(s.op, Dense):  # even, unchanged by Lava's clip/truncate
                assert np.all(w % 2 == 0) and w.min() >= -254 and w.max() <= 254
                assert 0 <= s.exponent <= 7
            elif isinstance(s.op, Identity):  # a diagonal Sparse: non-zero 8-bit gain, weight_exp allowed
                assert 1 <= abs(int(w)) <= 127 and 0 <= s.exponent <= 7
            else:  # conv2d / avgpool: int8, exponent 0 (Lava's Conv ignores weight_exp)
                assert -128 <= int(np.min(w)) and int(np.max(w)) <= 127 and s.exponent == 0
        assert -4096 <= n.bias_mant.min() and n.bias_mant.max() <= 4095 and 0 <= n.bias_exp <= 7
        if isinstance(n, IntNeuronNode):
            assert n.threshold >= 1 and n.precharge == n.threshold // 2
    for b in static_bounds(inet).values():  # C5: the static bound inside 24 bits
        assert max(abs(x) for iv in (*b.synapses, b.current, b.membrane) for x in iv) <= 2 ** 23 - 1
    # the report has one row per node with its scale; weight rounding error <= half a mantissa step
    assert [r.node for r in rep.nodes] == [n.name for n in inet.all_nodes()]
    for r, n in zip(rep.nodes, inet.all_nodes()):
        assert r.scale == n.scale and 0 <= r.zero_share <= 1
        full = [s for s in r.synapses if s.max_abs_int in (127, 254)]  # the inputs that set the scale
        if r.limited_by == "weights":
            assert full and all(s.max_rel_error <= 0.5 / 126.5 + 1e-9 for s in full), r


def test_C5_mantissa_range_is_used_and_relays_copy_spikes_exactly():
    rng = np.random.default_rng(3)
    net = random_floatnet(rng, "residual_identity")
    inet = to_fixed_point(net, max_timesteps=32)
    for n in inet.all_nodes():
        peak = max(int(np.abs(np.asarray(s.op.weight)).max()) for s in n.inputs)
        assert peak >= 120, f"{n.name}: mantissa range unused ({peak})"
    relays = [n for n in inet.nodes if n.role == "relay"]
    assert relays, "residual_identity needs a relay (C3)"
    for r in relays:  # gain == threshold, pre-charge th//2: each spike re-emitted one step later
        assert r.inputs[0].op.weight == r.threshold and r.precharge == r.threshold // 2
        src = inet.node(r.inputs[0].source)
        x = random_pixels(rng, inet, 8)
        tr = reference_simulate(inet, x, 16)
        np.testing.assert_array_equal(tr.spike_counts[r.name], tr.spike_counts[src.name])


def test_C5_residual_node_shares_one_scale_across_its_inputs():
    rng = np.random.default_rng(4)
    net = random_floatnet(rng, "residual_conv")
    inet = to_fixed_point(net, max_timesteps=32)
    out, fout = inet.node("block.out"), net.node("block.out")
    for si, sf in zip(out.inputs, fout.inputs):  # int weight * scale ~ float weight * source threshold
        v = net.node(sf.source).threshold
        real = np.asarray(sf.op.weight) * v
        np.testing.assert_allclose(np.asarray(si.op.weight) * 2.0 ** si.exponent * out.scale, real,
                                   atol=0.5 * out.scale * 2.0 ** si.exponent + 1e-12)


@pytest.mark.parametrize("topology", FLOAT_TOPOLOGIES)
def test_C5_integer_snn_agrees_with_float_snn_predictions(topology):
    agree, total = 0, 0
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        net = random_floatnet(rng, topology, size=6)
        inet = to_fixed_point(net, max_timesteps=32)
        x = random_pixels(rng, net, 64)
        pf = np.argmax(float_snn(net, x.astype(np.float64), 16), axis=1)
        pi = reference_simulate(inet, x, 16).predictions
        agree += int((pf == pi).sum())
        total += len(x)
    assert agree / total >= 0.85, f"{topology}: integer vs float SNN prediction agreement {agree / total:.3f}"


def test_C5_membrane_bound_contains_every_trajectory():
    """The closed-form static membrane bound (fit.membrane_interval) holds for random and extreme currents."""
    from na_deploy.hw_targets.loihi2.fit import membrane_interval

    rng = np.random.default_rng(0)
    for _ in range(400):
        th = int(rng.integers(1, 50))
        pc, T = int(rng.integers(0, th)), int(rng.integers(1, 30))
        lo = int(rng.integers(-60, 40))
        hi = lo + int(rng.integers(0, 80))
        blo, bhi = membrane_interval(np.array([float(lo)]), np.array([float(hi)]), th, pc, T)
        for _ in range(8):
            cur = rng.integers(lo, hi + 1, size=T) if rng.random() < 0.5 else np.full(T, rng.choice([lo, hi]))
            v = pc
            for i in cur:
                v += int(i)
                assert blo <= v <= bhi
                v -= th * (v >= th)
                assert blo <= v <= bhi


def test_C5_first_layer_scale_coarsens_to_keep_the_membrane_in_24_bits():
    """A strong negative pixel current over many steps: the scale is raised (not a silent wrap)."""
    inp = InputNode((1, 4, 4))
    w = -np.ones((2, 1, 3, 3)) * 0.5
    w[0, 0, 0, 0] = 0.6
    n0 = NeuronNode(name="c0", shape=(2, 4, 4), inputs=[Synapse(INPUT_NAME, Conv2d(w, 1, 1))], threshold=30.0)
    r = ReadoutNode(name="readout", shape=(2,), inputs=[Synapse("c0", Dense(np.ones((2, 32))))])
    net = FloatNet(inp, [n0], r)
    i_short, rep_short = to_fixed_point_with_report(net, max_timesteps=4)
    i_long, rep_long = to_fixed_point_with_report(net, max_timesteps=256)
    assert rep_short.nodes[0].limited_by == "weights"
    assert rep_long.nodes[0].limited_by.startswith("24-bit bound")
    assert i_long.node("c0").scale > i_short.node("c0").scale
    assert check_fit(i_long) == [] and static_bounds(i_long)["c0"].membrane[0] >= -2 ** 23


def test_C5_unfittable_floatnet_fails_with_fit_error_naming_node_and_limit():
    """Thresholds far below the weights: at T=256 the scale must be so coarse that th rounds to 0."""
    inp = InputNode((4,))
    n0 = NeuronNode(name="fc0", shape=(3,), inputs=[Synapse(INPUT_NAME, Dense(-np.ones((3, 4)) * 1000))],
                    threshold=1e-3)
    r = ReadoutNode(name="readout", shape=(2,), inputs=[Synapse("fc0", Dense(np.ones((2, 3))))])
    with pytest.raises(FitError, match=r"node fc0: threshold .*>= 1"):
        to_fixed_point(FloatNet(inp, [n0], r), max_timesteps=256)


def test_to_fixed_point_is_pure_and_deterministic():
    rng = np.random.default_rng(7)
    net = random_floatnet(rng, "conv_pool_dense")
    before = [np.copy(s.op.weight) for n in net.all_nodes() for s in n.inputs]
    a, b = to_fixed_point(net, max_timesteps=16), to_fixed_point(net, max_timesteps=16)
    after = [s.op.weight for n in net.all_nodes() for s in n.inputs]
    assert all(np.array_equal(x, y) for x, y in zip(before, after))
    for na, nb in zip(a.all_nodes(), b.all_nodes()):
        assert na.scale == nb.scale and np.array_equal(na.bias_mant, nb.bias_mant)
        assert all(np.array_equal(np.asarray(x.op.weight), np.asarray(y.op.weight))
                   for x, y in zip(na.inputs, nb.inputs))


def test_target_object_implements_the_protocol():
    from na_deploy.protocols import Target

    assert isinstance(TARGET, Target) and TARGET.name == "loihi2" and TARGET.limits == LOIHI2
    rng = np.random.default_rng(0)
    net = random_floatnet(rng, "conv_chain")
    inet = TARGET.to_fixed_point(net, max_timesteps=8)
    assert TARGET.check_fit(inet) == []
    x = random_pixels(rng, inet, 3)
    multi = TARGET.reference_simulate_multi(inet, x, [2, 8])
    np.testing.assert_array_equal(multi[8].readout, TARGET.reference_simulate(inet, x, 8).readout)


# ----------------------------------------------------------------------- crafted fit violations
def _base() -> IntNet:
    return random_intnet(np.random.default_rng(0), "conv_pool_dense", size=4)


def _with(net: IntNet, name: str, **changes) -> IntNet:
    nodes = []
    for n in net.all_nodes():
        if n.name == name:
            kw = {f: getattr(n, f) for f in n.__dataclass_fields__}
            kw.update(changes)
            n = type(n)(**kw)
        nodes.append(n)
    return IntNet(net.input, nodes[:-1], nodes[-1], dict(net.meta))


def _one_synapse(net: IntNet, name: str, syn: Synapse) -> IntNet:
    return _with(net, name, inputs=[syn])


def _relay(op, exponent=0) -> IntNet:
    """residual_identity net whose relay gets identity synapse `op` (threshold kept above the gain)."""
    n = random_intnet(np.random.default_rng(1), "residual_identity", size=4)
    return _with(n, "stem.relay1", inputs=[Synapse("stem", op, exponent)], threshold=1000, precharge=500)


def _hit(violations, node, quantity, limit):
    return [v for v in violations if v.node == node and quantity in v.quantity and v.limit == limit]


def test_fit_base_net_fits():
    assert check_fit(_base()) == []


CRAFTED = {
    # name: (builder, node, quantity fragment, limit)
    "conv weight 128": (lambda n: _one_synapse(n, "conv0", Synapse(INPUT_NAME, Conv2d(
        np.full((n.node("conv0").shape[0], n.input.shape[0], 3, 3), 128), 1, 1))), "conv0", "conv weight",
        "[-128, 127]"),
    "conv weight -129": (lambda n: _one_synapse(n, "conv0", Synapse(INPUT_NAME, Conv2d(
        np.full((n.node("conv0").shape[0], n.input.shape[0], 3, 3), -129), 1, 1))), "conv0", "conv weight",
        "[-128, 127]"),
    "conv exponent": (lambda n: _one_synapse(n, "conv0", Synapse(INPUT_NAME, n.node("conv0").inputs[0].op, 1)),
                      "conv0", "conv exponent", "== 0"),
    "dense odd": (lambda n: _one_synapse(n, "fc", Synapse("pool", Dense(
        np.asarray(n.node("fc").inputs[0].op.weight) + 1))), "fc", "dense weight parity", "multiple of 2"),
    "dense 256": (lambda n: _one_synapse(n, "fc", Synapse("pool", Dense(
        np.full_like(np.asarray(n.node("fc").inputs[0].op.weight), 256)))), "fc", "dense weight (from pool)",
        "[-256, 254]"),
    "dense inhibitory -256": (lambda n: _one_synapse(n, "fc", Synapse("pool", Dense(
        np.full_like(np.asarray(n.node("fc").inputs[0].op.weight), -256)))), "fc", "all-non-positive",
        "[-254, 0]"),
    "dense exponent": (lambda n: _one_synapse(n, "fc", Synapse("pool", n.node("fc").inputs[0].op, 8)), "fc",
                       "dense exponent", "[-8, 7]"),
    "pool gain": (lambda n: _one_synapse(n, "pool", Synapse("conv0", AvgPool2d(2, 2, 200))), "pool",
                  "avgpool gain", "[-128, 127]"),
    "pool exponent": (lambda n: _one_synapse(n, "pool", Synapse("conv0", AvgPool2d(2, 2, 1), 2)), "pool",
                      "avgpool2d exponent", "== 0"),
    "identity gain": (lambda n: _relay(Identity(128)), "stem.relay1", "identity gain", "[-128, 127]"),
    "identity gain 0": (lambda n: _relay(Identity(0)), "stem.relay1", "identity gain", "non-zero"),
    "identity exponent": (lambda n: _relay(Identity(3), -9), "stem.relay1", "identity exponent", "[-8, 7]"),
    "threshold": (lambda n: _with(n, "fc", threshold=2 ** 23), "fc", "threshold", f"[1, {2 ** 23 - 1}]"),
    "precharge": (lambda n: _with(n, "fc", precharge=-2 ** 23 - 1), "fc", "precharge",
                  f"[{-2 ** 23}, {2 ** 23 - 1}]"),
    "bias mantissa": (lambda n: _with(n, "conv0", bias_mant=np.full(n.node("conv0").shape[0], 4096)), "conv0",
                      "bias_mant", "[-4096, 4095]"),
    "bias exponent": (lambda n: _with(n, "conv0", bias_exp=8), "conv0", "bias_exp", "[0, 7]"),
    "readout bias": (lambda n: _with(n, "readout", bias_mant=np.full(n.readout.shape[0], -5000)), "readout",
                     "bias_mant", "[-4096, 4095]"),
    "membrane over T": (lambda n: _with(n, "fc", bias_mant=np.full(n.node("fc").shape[0], -4096), bias_exp=7),
                        "fc", "membrane bound (T=256)", f"[{-2 ** 23}, {2 ** 23 - 1}]"),
    "accumulator": (lambda n: _one_synapse(n, "conv0", Synapse(INPUT_NAME, Conv2d(
        np.full((n.node("conv0").shape[0], n.input.shape[0], 3, 3), 20000), 1, 1))), "conv0",
        "synaptic accumulator bound (from input)", f"[{-2 ** 23}, {2 ** 23 - 1}]"),
    "readout potential": (lambda n: _with(n, "readout", bias_mant=np.full(n.readout.shape[0], 4095), bias_exp=7),
                          "readout", "readout potential bound (T=256)", f"[{-2 ** 23}, {2 ** 23 - 1}]"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_C5_crafted_violation_is_reported_with_node_and_limit(case):
    build, node, quantity, limit = CRAFTED[case]
    v = check_fit(build(_base()))
    assert _hit(v, node, quantity, limit), f"{case}: expected {node}/{quantity}/{limit}, got {[str(x) for x in v]}"
    assert all(x.node == node for x in v), [str(x) for x in v]


def test_C3_fit_reports_unbalanced_paths():
    n = random_intnet(np.random.default_rng(1), "residual_identity", size=4)
    conv, ident = n.node("block.out").inputs
    skip = _with(n, "block.out", inputs=[conv, Synapse("stem", ident.op)])  # shortcut bypassing the relay
    assert _hit(check_fit(skip), "block.out", "input hop counts", "all equal (C3)")


def test_limits_dataclass_is_frozen_and_overridable():
    with pytest.raises(Exception):
        LOIHI2.state_bits = 16  # type: ignore[misc]
    small = Loihi2Limits(state_bits=12)
    v = check_fit(_base(), small)
    assert any("bound" in x.quantity and x.limit == "[-2048, 2047]" for x in v)


@pytest.mark.lava
def test_target_imports_lava_lazily_even_after_a_progress_bar():
    """Importing the target never imports Lava; a tqdm bar (which fixes the multiprocessing context) before the
    first Lava use must not break Lava's import (it sets the start method to fork). Fresh interpreter."""
    import subprocess
    import sys

    code = (
        "import sys, multiprocessing as mp\n"
        "import numpy as np\n"
        "from tqdm.auto import tqdm\n"
        "from na_deploy.hw_targets.loihi2 import TARGET\n"
        "from na_deploy.testing import random_intnet\n"
        "assert not any(m.startswith('lava') for m in sys.modules), 'target import pulled in lava'\n"
        "list(tqdm(range(2), disable=True))\n"
        "assert mp.get_start_method(allow_none=True) == 'fork'\n"
        "g = TARGET.backend().build(random_intnet(np.random.default_rng(0), 'dense_chain'))\n"
        "assert 'lava' in sys.modules and mp.get_start_method() == 'fork'\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def _depthwise_with_dead_channel(outlier: float = 300.0, n_out: int = 1):
    """conv (3 -> 16) then a depthwise 3x3 whose first `n_out` channels carry weights `outlier` x the others: the
    BN fold of a depthwise conv fed by a dead channel (running variance ~ 0), MobileNetV2's features.1 case."""
    rng = np.random.default_rng(3)
    inp = InputNode((3, 6, 6), np.ones(3) / 255)
    c0 = NeuronNode(name="c0", shape=(16, 6, 6), threshold=2.0, p=2,
                    inputs=[Synapse(INPUT_NAME, Conv2d(rng.normal(size=(16, 3, 3, 3)) * 0.004, 1, 1))])
    w = rng.normal(size=(16, 1, 3, 3)) * 0.3
    w[:n_out] *= outlier
    dw = NeuronNode(name="dw", shape=(16, 6, 6), threshold=2.0, p=2, bias=rng.normal(size=16) * 0.2,
                    inputs=[Synapse("c0", Conv2d(w, 1, 1, groups=16))])
    r = ReadoutNode(name="readout", shape=(4,), inputs=[Synapse("dw", Dense(rng.normal(size=(4, 576)) * 0.05))])
    return FloatNet(inp, [c0, dw], r)


def test_C5_rule3_a_few_outlier_channels_saturate_and_the_rest_keep_their_scale():
    """Rule 3: one depthwise channel with weights ~300x the others left the threshold at 0 units (refused). Now
    that channel saturates at +-127, the node's scale is what the other 15 channels alone give (so their integer
    weights are exactly those of the net without the outlier), the threshold gets >= 8 units, and the report and
    the IntNet's meta name the channel."""
    net = _depthwise_with_dead_channel()
    inet, rep = to_fixed_point_with_report(net, max_timesteps=8)
    row = next(n for n in rep.nodes if n.node == "dw")
    assert row.saturated == [0] and row.limited_by.startswith("weights (channels saturated)")
    assert inet.meta["saturated_channels"] == {"dw": [0]}
    assert row.threshold_int >= 8 and row.synapses[0].saturated_share > 0
    q = np.asarray(inet.node("dw").inputs[0].op.weight)
    assert np.abs(q[0]).max() == LOIHI2.conv_weight_max and np.abs(q).max() == LOIHI2.conv_weight_max
    calm = _depthwise_with_dead_channel(outlier=1.0)
    calm_q = np.asarray(to_fixed_point(calm, max_timesteps=8).node("dw").inputs[0].op.weight)
    assert np.array_equal(q[1:], calm_q[1:])
    assert check_fit(inet, LOIHI2, 8) == []
    assert "saturated: node dw, output channel(s) [0]" in rep.format()
    x = np.random.default_rng(0).integers(0, 256, (2, 3, 6, 6))
    assert reference_simulate(inet, x, 8).readout.shape == (2, 4)


def test_C5_rule3_too_many_outlier_channels_are_refused_and_a_calm_net_is_unchanged():
    """More than MAX_SATURATED_SHARE (1/8) of the channels: no saturation, the old refusal naming the node; a
    net with no outlier gets no saturation and no meta key (its bytes are those of before rule 3)."""
    with pytest.raises(FitError, match=r"node dw: threshold = 0 .*>= 1"):
        to_fixed_point(_depthwise_with_dead_channel(outlier=1000.0, n_out=3), max_timesteps=8)
    calm, rep = to_fixed_point_with_report(_depthwise_with_dead_channel(outlier=1.0), max_timesteps=8)
    assert "saturated_channels" not in calm.meta and all(not n.saturated for n in rep.nodes)
    assert all(s.saturated_share == 0 for n in rep.nodes for s in n.synapses)


@pytest.mark.lava
def test_C5_C6_rule3_saturated_net_is_bit_exact_on_lava():
    """The saturated channel's clipped mantissas are ordinary integers: reference == Lava (C6) on 2 samples."""
    from na_deploy.verify.bit_exact import verify

    inet = to_fixed_point(_depthwise_with_dead_channel(), max_timesteps=8)
    x = np.random.default_rng(1).integers(0, 256, (2, 3, 6, 6)).astype("uint8")
    assert verify(inet, x, 8, TARGET, TARGET.backend("lava", inet)).equal
