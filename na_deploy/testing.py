"""Public helpers for a user's own test suite: `assert_bit_exact`, and random IR networks for property tests.

`assert_bit_exact(net, inputs, T, target)` runs `na_deploy.verify.bit_exact.verify` (the target's reference vs its
default backend, or the one given) and raises AssertionError naming the first mismatch (sample, node,
neuron, both values, step; `mismatch_message`); it returns the VerifyReport (contract C6, docs/contract.md). The core
never imports a target: pass one, e.g. `na_deploy.hw_targets.loihi2.TARGET` (the pytest fixture `na_bit_exact` in
`na_deploy.hw_targets.pytest_plugin` resolves target names for you).

Random IR networks for property tests (a target's reference vs its backend, file round trips):

`random_intnet(rng)` draws a small IntNet from several topologies (`TOPOLOGIES`: dense chain, conv chain,
conv+avgpool+dense, residual with identity shortcut and delay relay, residual with a strided 1x1 conv shortcut),
with integer parameters chosen so that exact ties v == threshold, negative biases and silent / saturated
neurons all occur; `random_inputs(rng, net, batch)` draws pixels for it. Weights obey the Loihi 2 backend's
rules: conv weights in [-128, 127] (exponent 0, Lava's Conv ignores weight_exp), dense weights even in
[-256, 254] (what Lava's Dense keeps unchanged). Numpy only, no torch.

This module sits on top of `na_deploy.verify` (it calls `verify`); the fixtures of this project's own tests
(`settle_batchnorm`, `ridge_digits_cnn`, `tampered`) live in tests/helpers.py.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from na_deploy.ir import (INPUT_NAME, AvgPool2d, Conv2d, Dense, Identity, InputNode, IntNet, IntNeuronNode,
                          IntReadoutNode, Synapse)
from na_deploy.verify.bit_exact import verify

TOPOLOGIES = ("dense_chain", "conv_chain", "conv_pool_dense", "residual_identity", "residual_conv")


class _Builder:
    def __init__(self, rng: np.random.Generator, input_shape, dense_exponents=(0,), pixel_max=255):
        self.rng = rng
        self.input = InputNode(input_shape, np.ones(input_shape[0]) / 255)
        self.nodes: list[IntNeuronNode] = []
        self.shapes = {INPUT_NAME: tuple(input_shape)}
        self.dense_exponents = tuple(dense_exponents)
        self.pixel_max = pixel_max

    def _wmax(self, source: str) -> int:
        # smaller weights from the graded pixel input so the first layer is not always saturated
        return 3 if source == INPUT_NAME else 127

    def conv(self, source, cout, k=3, stride=1, pad=1, groups=1):
        cin = self.shapes[source][0]
        m = self._wmax(source)
        w = self.rng.integers(-m, m + 1, size=(cout, cin // groups, k, k))
        return Synapse(source, Conv2d(w, stride, pad, groups))

    def dense(self, source, nout):
        nin = int(np.prod(self.shapes[source]))
        m = self._wmax(source)
        if source == INPUT_NAME:
            w = self.rng.integers(-m, m + 1, size=(nout, nin)) * 2
            e = 0
        else:
            w = self.rng.integers(-128, 128, size=(nout, nin)) * 2
            e = int(self.rng.choice(self.dense_exponents))
        return Synapse(source, Dense(w), e)

    def pool(self, source, k=2):
        return Synapse(source, AvgPool2d(k, k, int(self.rng.integers(1, 4))))

    def ident(self, source):
        return Synapse(source, Identity(int(self.rng.integers(1, 128))))

    def neuron(self, name, syns, role="layer"):
        shape = syns[0].op.out_shape(self.shapes[syns[0].source])
        th = int(self.rng.choice([1, 2, 3, 4, 7, 64, 255, 1000, 4097]))
        node = IntNeuronNode(
            name=name, shape=shape, inputs=syns, threshold=th,
            bias_mant=self.rng.integers(-th, th + 1, size=shape[0]) // int(self.rng.choice([1, 2, 8])),
            bias_exp=int(self.rng.integers(0, 3)),
            precharge=th // 2, scale=float(self.rng.uniform(0.01, 1)), p=int(self.rng.integers(1, 5)), role=role)
        self.nodes.append(node)
        self.shapes[name] = shape
        return name

    def relay(self, name, source):
        src = self.nodes[[n.name for n in self.nodes].index(source)]
        g = int(self.rng.integers(1, 100))
        node = IntNeuronNode(name=name, shape=src.shape, inputs=[Synapse(source, Identity(g))], threshold=g,
                             precharge=g // 2, scale=src.scale, p=src.p, role="relay")
        self.nodes.append(node)
        self.shapes[name] = src.shape
        return name

    def readout(self, syns, name="readout"):
        shape = syns[0].op.out_shape(self.shapes[syns[0].source])
        r = IntReadoutNode(name=name, shape=shape, inputs=syns,
                           bias_mant=self.rng.integers(-50, 51, size=shape[0]), bias_exp=int(self.rng.integers(0, 3)),
                           scale=1.0)
        return IntNet(self.input, self.nodes, r, meta={"target": "loihi2", "generator": "random_intnet"})


def random_intnet(rng: np.random.Generator, topology: str | None = None, size: int = 4,
                  dense_exponents=(0,)) -> IntNet:
    """A small random IntNet; `size` scales spatial size / channels (keep it small for Lava tests)."""
    topology = topology or str(rng.choice(TOPOLOGIES))
    c = int(rng.integers(1, 3))
    hw = int(size)
    if topology == "dense_chain":
        b = _Builder(rng, (int(rng.integers(2, 3 * size)),), dense_exponents)
        src = INPUT_NAME
        for i in range(int(rng.integers(1, 4))):
            src = b.neuron(f"fc{i}", [b.dense(src, int(rng.integers(2, 3 * size)))])
        return b.readout([b.dense(src, int(rng.integers(2, 6)))])
    b = _Builder(rng, (c, hw, hw), dense_exponents)
    ch = int(rng.integers(1, 4))
    if topology == "conv_chain":
        src = INPUT_NAME
        for i in range(int(rng.integers(1, 4))):
            src = b.neuron(f"conv{i}", [b.conv(src, ch)])
        return b.readout([b.dense(src, int(rng.integers(2, 6)))])
    if topology == "conv_pool_dense":
        a = b.neuron("conv0", [b.conv(INPUT_NAME, ch)])
        p = b.neuron("pool", [b.pool(a, 2)])
        f = b.neuron("fc", [b.dense(p, int(rng.integers(2, 8)))])
        return b.readout([b.dense(f, int(rng.integers(2, 6)))])
    if topology == "residual_identity":
        a = b.neuron("stem", [b.conv(INPUT_NAME, ch)])
        m = b.neuron("block.conv1", [b.conv(a, ch)])
        r = b.relay("stem.relay1", a)
        o = b.neuron("block.out", [b.conv(m, ch), b.ident(r)])
        return b.readout([b.dense(o, int(rng.integers(2, 6)))])
    if topology == "residual_conv":
        a = b.neuron("stem", [b.conv(INPUT_NAME, ch)])
        m = b.neuron("block.conv1", [b.conv(a, 2 * ch, stride=2)])
        r = b.relay("stem.relay1", a)
        o = b.neuron("block.out", [b.conv(m, 2 * ch), b.conv(r, 2 * ch, k=1, stride=2, pad=0)])
        return b.readout([b.dense(o, int(rng.integers(2, 6)))])
    raise ValueError(f"unknown topology {topology!r}; known: {TOPOLOGIES}")


def random_inputs(rng: np.random.Generator, net: IntNet, batch: int) -> np.ndarray:
    """uint8-range integer images for `net`'s input shape."""
    return rng.integers(0, 256, size=(batch, *net.input.shape)).astype(np.int64)


def mismatch_message(report: Any) -> str:
    """One line naming what differs in a VerifyReport (or its dict): counts, first sample / node / neuron / step."""
    rep = report if isinstance(report, dict) else report.to_dict()
    m = rep["first_mismatch"]
    if m is None:
        return f"bit-exact: {rep['samples']} samples at T={rep['timesteps']} on {rep['backend']}"
    step = f", window step {m['step']}" if m.get("step") else ""
    neuron = tuple(m["neuron"]) if m.get("neuron") is not None else ()
    return (f"not bit-exact on {rep['backend']} at T={rep['timesteps']}: {rep['mismatching_samples']} of "
            f"{rep['samples']} samples differ; first at sample {m['sample']}, node {m['node']}, neuron {neuron}: "
            f"reference {m['reference']}, backend {m['lava']}{step}")


def assert_bit_exact(net: IntNet, inputs: np.ndarray, timesteps: int, target: Any, backend: Optional[Any] = None,
                     **verify_kwargs: Any):
    """Assert that `backend` (default: `target.backend()`) reproduces `target`'s reference simulation of `net`
    on `inputs` at T = `timesteps` exactly (every node's spike counts and the readout potentials of every
    sample, contract C6); return the VerifyReport. Raises AssertionError with `mismatch_message` otherwise.
    `verify_kwargs` go to `na_deploy.verify.bit_exact.verify` (locate, sample_ids, and the backend's run options such as
    timeout_s). Nets failing the target's fit check raise FitError, as in verify."""
    backend = target.backend() if backend is None else backend
    report = verify(net, inputs, timesteps, target, backend, **verify_kwargs)
    if not report.equal:
        raise AssertionError(mismatch_message(report))
    return report
