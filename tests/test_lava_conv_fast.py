"""`ConvFast` (hw_targets/loihi2/lava/processes/conv_fast.py) computes exactly what Lava's own `Conv` fixed_pt model
computes (C6): the same integers, the same one-step delay, the same layouts / padding / stride / dilation /
groups, binarised binary messages, the 24-bit wrap; and a whole net through the Lava backend gives the same
trace with `ConvFast` as with Lava's `Conv` and as the reference.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.testing import random_inputs, random_intnet

lb = pytest.importorskip("na_deploy.hw_targets.loihi2.lava.backend")
from lava.magma.core.run_conditions import RunSteps  # noqa: E402  (after lava_backend: fork start method)
from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402
from lava.proc.conv import utils as lava_conv_utils  # noqa: E402
from lava.proc.conv.process import Conv  # noqa: E402
from lava.proc.io.sink import RingBuffer as Sink  # noqa: E402
from lava.proc.io.source import RingBuffer as Source  # noqa: E402

from na_deploy.hw_targets.loihi2.lava import graph as lava_graph  # noqa: E402
from na_deploy.hw_targets.loihi2.lava.processes import conv_fast  # noqa: E402
from na_deploy.hw_targets.loihi2.lava.processes.conv_fast import ConvFast, conv_lava_exact, signed_wrap  # noqa: E402

pytestmark = pytest.mark.lava

CFG = Loihi2SimCfg(select_tag="fixed_pt")


def _random_case(rng: np.random.Generator, i: int):
    """A random small conv: groups 1..3, kernel 1..3 per axis, stride 1..2, padding 0..2, dilation 1..2."""
    G = int(rng.choice([1, 1, 2, 3]))
    cg, kg = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    kw, kh = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    W = int(rng.integers(dilation[0] * (kw - 1) + 1, 9))
    H = int(rng.integers(dilation[1] * (kh - 1) + 1, 9))
    wmax = 1 << 20 if i % 7 == 0 else 255  # every 7th case: sums past 2^23 exercise the 24-bit wrap
    w = rng.integers(-wmax, wmax + 1, size=(G * kg, kw, kh, cg)).astype(np.int32)
    if i % 2 == 0:
        s = rng.random((W, H, G * cg)) < 0.3
    else:  # graded: 8-bit pixels, or signed payloads (signed neuron models send z in {-1, 0, 1} and more)
        s = rng.integers(0 if i % 4 == 1 else -255, 256, size=(W, H, G * cg)).astype(np.int32)
    return s, w, stride, padding, dilation, G


def test_conv_equals_lava_utils_conv_on_random_cases():
    """300 random cases (binary, graded unsigned and signed inputs): conv_lava_exact, cast to int32 and wrapped
    to 24 bits, equals Lava's utils.conv (scipy convolve2d per channel pair) cast and wrapped the same way."""
    rng = np.random.default_rng(18)
    wrapped = 0
    for i in range(300):
        s, w, stride, padding, dilation, G = _random_case(rng, i)
        ref = lava_conv_utils.conv(s, w, w.shape[1:3], stride, padding, dilation, G)
        got = conv_lava_exact(s, w, stride, padding, dilation, G)
        assert got.shape == ref.shape, (i, got.shape, ref.shape)
        assert np.array_equal(signed_wrap(got.astype(np.int32)), lava_conv_utils.signed_clamp(ref, bits=24)), i
        wrapped += int(np.any(np.abs(got) >= 1 << 23))
    assert wrapped >= 5  # the wrap was exercised, not only small sums


def test_conv_lava_layout_is_torch_conv2d():
    """With the project's weight mapping (lava/layout.py conv_weights_for_lava), ConvFast's conv is the IR's
    conv2d (reference/slow.py int_op) on (C, H, W) maps, strided, padded and grouped."""
    from na_deploy.hw_targets.loihi2.lava.layout import conv_weights_for_lava, from_lava_layout, to_lava_layout
    from na_deploy.hw_targets.loihi2.reference.slow import int_op
    from na_deploy.ir import Conv2d

    rng = np.random.default_rng(3)
    for groups, stride, pad in ((1, 1, 1), (2, 2, 1), (4, 1, 0), (1, 2, 2)):
        x = rng.integers(0, 2, size=(4, 7, 6)).astype(np.int64)
        op = Conv2d(rng.integers(-128, 128, size=(8, 4 // groups, 3, 3)), stride, pad, groups=groups)
        want = int_op(op, x)
        got = conv_lava_exact(to_lava_layout(x[None], x.shape)[0], conv_weights_for_lava(op.weight),
                              op.stride[::-1], op.padding[::-1], 1, groups)
        assert np.array_equal(from_lava_layout(got[None], want.shape)[0], want)


def _run_pair(data: np.ndarray, kw: dict, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """A stock Conv and a ConvFast fed by the same source (data: (W, H, C, steps)) in one Lava runtime;
    their outputs (X, Y, Cout, steps), in that order."""
    src = Source(data=data)
    sinks = []
    for cls in (Conv, ConvFast):
        conv = cls(input_shape=data.shape[:3], **kw)
        sink = Sink(shape=conv.a_out.shape, buffer=steps)
        src.s_out.connect(conv.s_in)
        conv.a_out.connect(sink.a_in)
        sinks.append(sink)
    try:
        src.run(condition=RunSteps(num_steps=steps), run_cfg=CFG)
        out = tuple(s.data.get().astype(np.int64) for s in sinks)
    finally:
        src.stop()
    return out


def test_fast_model_equals_lava_conv_model_in_a_runtime():
    """In one Lava runtime, Conv and ConvFast on the same input stream (6 steps): equal outputs every step,
    the first step zeros (one step of delay); binary messages (num_message_bits = 0) binarise a graded
    input with negative values the same way; graded 8-bit input; groups, stride, padding, dilation."""
    rng = np.random.default_rng(5)
    steps = 6
    binary = rng.integers(-3, 4, size=(6, 5, 4, steps)) * (rng.random((6, 5, 4, steps)) < 0.4)
    graded = rng.integers(0, 256, size=(5, 7, 3, steps))
    cases = [
        (binary, dict(weight=rng.integers(-128, 128, size=(6, 3, 3, 2)).astype(np.int32), padding=(1, 0),
                      stride=(2, 1), groups=2, num_message_bits=0)),
        (graded, dict(weight=rng.integers(-128, 128, size=(4, 2, 3, 3)).astype(np.int32), padding=1,
                      dilation=(1, 2), num_message_bits=8)),
    ]
    for k, (data, kw) in enumerate(cases):
        a, b = _run_pair(data, kw, steps)
        assert np.array_equal(a, b), k
        assert not a[..., 0].any() and a[..., 1:].any(), k  # delayed by one step, and not trivially zero


def test_fast_model_reads_128_and_more_groups():
    """A 2x2 pooling over 128 channels (a grouped conv, groups = 128) in a Lava runtime equals the numpy conv.
    Lava's own Conv model declares `groups` int8, so 128 groups wrap to -128 and its output is all zeros
    (checked here too): ConvFast declares groups int32; up to 127 groups both agree (tests above)."""
    rng = np.random.default_rng(1)
    C, steps = 128, 3
    data = (rng.random((4, 4, C, steps)) < 0.5).astype(np.int32)
    stock, fast = _run_pair(data, dict(weight=np.ones((C, 2, 2, 1), np.int32), stride=2, groups=C), steps)
    for t in range(steps - 1):
        assert np.array_equal(fast[..., t + 1], conv_lava_exact(data[..., t], np.ones((C, 2, 2, 1)), 2, 0, 1, C))
    assert fast.any() and not stock.any()


def test_lava_graph_uses_conv_fast_and_equals_stock_conv_and_reference(monkeypatch):
    """A residual net (strided 3x3 and 1x1 convs) and a conv -> pool net through the Lava backend: the graphs'
    conv and pool synapses are ConvFast; both traces equal the reference's, and the residual net's equals the
    trace with Lava's stock Conv swapped back in."""
    rng = np.random.default_rng(7)
    nets = [random_intnet(rng, "residual_conv", size=6), random_intnet(rng, "conv_pool_dense", size=6)]
    traces, xs = [], [random_inputs(rng, net, 2) for net in nets]
    for net, x in zip(nets, xs):
        graph = lava_graph.build_lava_graph(net, 3, x)
        convs = [p for ps in graph.synapses.values() for p in ps if isinstance(p, Conv)]
        assert convs and all(type(p) is ConvFast for p in convs)
        ref = TARGET.reference_simulate(net, x, 3)
        traces.append((ref, TARGET.backend().run(net, x, 3)))
        assert sum(int(c.sum()) for c in ref.spike_counts.values()) > 0
    monkeypatch.setattr(conv_fast, "ConvFast", Conv)  # what lava_graph._conv_process builds
    g = lava_graph.build_lava_graph(nets[0], 3, xs[0])
    assert {type(p) for ps in g.synapses.values() for p in ps if isinstance(p, Conv)} == {Conv}
    stock = TARGET.backend().run(nets[0], xs[0], 3)
    assert np.array_equal(stock.readout, traces[0][1].readout)
    traces.append((traces[0][0], stock))
    for ref, tr in traces:
        assert np.array_equal(tr.readout, ref.readout)
        for name, counts in ref.spike_counts.items():
            assert np.array_equal(tr.spike_counts[name], counts), name


def test_conv_fast_module_has_no_torch_and_no_side_effects():
    """Lava executes every module of processes/ while searching for models: conv_fast imports no torch and
    runs nothing at import beyond definitions."""
    path = Path(lava_graph.__file__).parent / "processes" / "conv_fast.py"
    tree = ast.parse(path.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "torch" not in names
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign, ast.Expr)
    assert all(isinstance(n, allowed) for n in tree.body)


# ------------------------------------------------------------ issue 13 item 7: the ResNet-18 smoke preset, its data
def test_resnet18_smoke_preset_is_a_valid_pipeline_config():
    """cifar10-resnet18-smoke: resnet18, p = 2, verify 2 samples at T = 4, timesteps (1, 2, 4); a valid config."""
    from dataclasses import fields

    from na_deploy.pipeline.run import PipelineConfig
    from na_deploy.pipeline.presets import PRESETS, resolve_config

    defaults = {f.name: f.default for f in fields(PipelineConfig)}
    c = resolve_config(defaults, "cifar10-resnet18-smoke", {})
    assert (c["model"], c["p"], c["verify_samples"], c["verify_timesteps"], tuple(c["timesteps"])) == (
        "resnet18", 2, 2, 4, (1, 2, 4))
    assert c["epochs_fp"] <= 4 and c["epochs_qat"] <= 4  # a few epochs
    assert set(PRESETS["cifar10-resnet18-smoke"]["ours"]) <= set(defaults)
    PipelineConfig(**c).validate()


def test_cifar_like_generator_is_deterministic_and_loads(tmp_path):
    """benchmarks/data/make_cifar_like_npz.py: same seed -> same bytes; another seed -> other bytes; the file loads
    as a 10-class 3x32x32 uint8 data set with every class in both splits."""
    import subprocess
    import sys

    from na_deploy.data.arrays import load_dataset

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "make_cifar_like_npz.py"
    paths = [tmp_path / n for n in ("a.npz", "b.npz", "c.npz")]
    for p, seed in zip(paths, (0, 0, 1)):
        subprocess.run([sys.executable, str(script), str(p), "--train", "30", "--test", "20", "--seed", str(seed)],
                       check=True, capture_output=True)
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b and a != c
    ds = load_dataset(str(paths[0]))
    assert ds.x_train.shape == (30, 3, 32, 32) and ds.x_train.dtype == np.uint8 and ds.num_classes == 10
    assert set(ds.y_test.tolist()) == set(range(10))
