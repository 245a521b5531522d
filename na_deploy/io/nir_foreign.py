"""Import of a NIR graph made by another framework (no "na_deploy" metadata) -> FloatNet, mode "zero", p = 1,
v(0) = 0 (NIR states no initial membrane). Input units: NIR does not state them; a FloatNet sees raw pixels
0..255 (C4), so the graph's input is taken as pixel * `input_scale` (default 1/255: images in [0, 1], as
torchvision's ToTensor gives and as foreign nets are trained), folded into the weights out of the Input and
recorded as the InputNode's channel_scale. Supported: Input, Output, IF (uniform r and v_threshold, v_reset 0),
LIF / CubaLIF where they are an IF (no leak: tau = r = inf, r = tau/dt as snnTorch writes it; CubaLIF also
tau_syn = dt = NIR_DT so the current clears each step), Affine, Linear, Conv2d (integer padding, dilation 1),
SumPool2d / AvgPool2d (padding 0), Flatten, uniform Scale; one synaptic op per path between two neurons.
Several edges into one neuron are summed. A spike of a FloatNet node carries its threshold (C2), so weights
out of a neuron are divided by its threshold; r (IF) multiplies the weights and biases into it. An IF that
feeds the Output directly becomes the accumulating readout (class = argmax of its summed input); else the
Output's inputs are the readout. Neuron parameters given as one scalar (Norse's writer) take the shape
that the op into the neuron produces. Anything else raises one line naming the node (ModelError: a node kind or a
leak na-deploy cannot express; IRError: a graph that does not chain).
"""
from __future__ import annotations

import nir
import numpy as np

from na_deploy.errors import IRError, ModelError
from na_deploy.ir import (INPUT_NAME, ZERO, AvgPool2d, Conv2d, Dense, FloatNet, Identity, InputNode, NeuronNode,
                          ReadoutNode, Synapse)

NIR_DT = 1e-4  # the time step snnTorch's NIR reader and writer assume (CubaLIF import)
DEFAULT_INPUT_SCALE = 1.0 / 255.0  # NIR input = pixel / 255 (images in [0, 1])

_NEURONS = (nir.IF, nir.LIF, nir.CubaLIF)
_OPS = (nir.Affine, nir.Linear, nir.Conv2d, nir.SumPool2d, nir.AvgPool2d)
_PASS = (nir.Flatten, nir.Scale)


def _pair(v) -> tuple[int, int]:
    return tuple(int(a) for a in np.broadcast_to(np.ravel(v), 2))


def _one(key: str, what: str, a) -> float:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0 or np.any(a != a.flat[0]):
        raise ModelError(f"NIR node {key!r}: {what} differs across neurons; na-deploy needs one value per node")
    return float(a.flat[0])


def _neuron_params(key: str, n) -> tuple[float, float]:
    """(threshold, input gain) of an IF-equivalent NIR neuron; ModelError naming a leak it cannot express."""
    th = _one(key, "v_threshold", n.v_threshold)
    if np.any(np.asarray(n.v_reset) != 0):
        raise ModelError(f"NIR node {key!r}: v_reset != 0; na-deploy's IF neuron resets to 0")
    if isinstance(n, nir.IF):
        return th, _one(key, "r", n.r)
    tau = n.tau if isinstance(n, nir.LIF) else n.tau_mem
    if np.any(np.isfinite(np.asarray(tau, dtype=np.float64))) or np.any(np.isfinite(np.asarray(n.r, dtype=float))):
        raise ModelError(f"NIR node {key!r}: {type(n).__name__} with membrane leak (tau={_one(key, 'tau', tau):g}, "
                         "r finite) cannot be expressed by na-deploy's IF neuron (needs tau = r = inf, no leak)")
    if isinstance(n, nir.CubaLIF):
        ts, w_in = _one(key, "tau_syn", n.tau_syn), _one(key, "w_in", n.w_in)
        if not (np.isclose(ts, NIR_DT, rtol=1e-9) and np.isclose(w_in * NIR_DT / ts, 1.0, rtol=1e-9)):
            raise ModelError(f"NIR node {key!r}: CubaLIF synaptic current with tau_syn={ts:g} (w_in={w_in:g}) "
                             f"outlives one step of dt={NIR_DT:g}; na-deploy's IF neuron cannot express it")
    return th, 1.0


class _Foreign:
    """A NIR graph without na-deploy metadata -> FloatNet (mode zero, p = 1, v(0) = 0)."""

    def __init__(self, graph: nir.NIRGraph, input_scale: float = DEFAULT_INPUT_SCALE):
        if not (np.isfinite(input_scale) and input_scale > 0):
            raise ModelError(f"input_scale {input_scale!r}: allowed: a finite number > 0 (NIR input = pixel * it)")
        self.g, self.preds, self.input_scale = graph, {k: [] for k in graph.nodes}, float(input_scale)
        for a, b in graph.edges:
            self.preds[b].append(a)
        for k, n in graph.nodes.items():
            if not isinstance(n, (nir.Input, nir.Output, *_NEURONS, *_OPS, *_PASS)):
                raise ModelError(f"NIR node {k!r}: {type(n).__name__} is not supported; supported: Input, Output, "
                                 "IF, LIF/CubaLIF without leak, Affine, Linear, Conv2d, SumPool2d, AvgPool2d, "
                                 "Flatten, Scale")
        ins = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
        outs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Output)]
        if len(ins) != 1 or len(outs) != 1:
            raise IRError(f"NIR graph: needs exactly one Input and one Output node, has {ins} and {outs}")
        self.inp, self.out = ins[0], outs[0]
        self.names = {self.inp: INPUT_NAME}
        self.th = {self.inp: 1.0 / self.input_scale}  # mult = gain / th[src]: one pixel is input_scale
        self.shape = {INPUT_NAME: tuple(int(v) for v in np.asarray(graph.nodes[self.inp].input_type["input"]))}

    def _path(self, key: str) -> tuple[str, list]:
        """Walk back from `key` to a neuron or the Input: (source key, the op/pass nodes in forward order)."""
        chain = []
        while not isinstance(self.g.nodes[key], (nir.Input, *_NEURONS)):
            if len(self.preds[key]) != 1:
                raise IRError(f"NIR node {key!r}: has {len(self.preds[key])} inputs; only neurons and the Output "
                              "may sum several inputs")
            chain.insert(0, key)
            key = self.preds[key][0]
        return key, chain

    def _synapse(self, key: str, gain: float, dest: str) -> tuple[Synapse, np.ndarray | None]:
        src, chain = self._path(key)
        ops = [k for k in chain if isinstance(self.g.nodes[k], _OPS)]
        if len(ops) > 1:
            raise ModelError(f"NIR nodes {ops}: {len(ops)} synaptic ops in a row before {dest!r}; na-deploy's IR "
                             "has one op per path between neurons")
        mult = gain / self.th[src]
        for k in chain:
            if isinstance(self.g.nodes[k], nir.Scale):
                mult *= _one(k, "Scale.scale", self.g.nodes[k].scale)
        if not ops:
            return Synapse(self.names[src], Identity(mult)), None
        k, n = ops[0], self.g.nodes[ops[0]]
        bias = np.asarray(n.bias, dtype=np.float64) * gain if isinstance(n, (nir.Affine, nir.Conv2d)) else None
        if isinstance(n, (nir.Affine, nir.Linear)):
            return Synapse(self.names[src], Dense(np.asarray(n.weight, dtype=np.float64) * mult)), bias
        if isinstance(n, nir.Conv2d):
            pad = (0, 0) if isinstance(n.padding, str) and n.padding == "valid" else n.padding
            if isinstance(pad, str) or np.any(np.asarray(n.dilation) != 1):
                raise ModelError(f"NIR node {k!r}: Conv2d padding={n.padding!r} dilation={n.dilation!r}; "
                                 "supported: integer padding, dilation 1")
            op = Conv2d(np.asarray(n.weight, dtype=np.float64) * mult, _pair(n.stride), _pair(pad), int(n.groups))
            return Synapse(self.names[src], op), bias
        kern = _pair(n.kernel_size)
        if np.any(np.asarray(n.padding) != 0):
            raise ModelError(f"NIR node {k!r}: {type(n).__name__} with padding {n.padding}; supported: padding 0")
        w = mult / (kern[0] * kern[1]) if isinstance(n, nir.AvgPool2d) else mult
        return Synapse(self.names[src], AvgPool2d(kern, _pair(n.stride), w)), None

    def _node(self, key: str, preds: list, gain: float, cls, **kw):
        syns, bias = [], None
        for p in preds:
            s, b = self._synapse(p, gain, key)
            syns.append(s)
            bias = b if bias is None else (bias if b is None else bias + b)
        name = key.replace("/", ".") if key != INPUT_NAME else "input_"
        shape = kw.pop("shape") or tuple(syns[0].op.out_shape(self.shape[syns[0].source]))
        node = cls(name=name, shape=shape, inputs=syns, bias=bias, **kw)
        self.shape[name] = node.shape
        return node

    def _order(self) -> list[str]:
        order, seen = [], set()

        def visit(k):
            if k in seen:
                return
            seen.add(k)
            for p in self.preds[k]:
                visit(p)
            if isinstance(self.g.nodes[k], _NEURONS):
                order.append(k)
        visit(self.out)
        return order

    def floatnet(self) -> FloatNet:
        order, last = self._order(), self.preds[self.out]
        as_readout = len(last) == 1 and isinstance(self.g.nodes[last[0]], _NEURONS)
        nodes = []
        for k in order[:-1] if as_readout else order:
            th, gain = _neuron_params(k, self.g.nodes[k])
            shape = tuple(int(v) for v in np.shape(self.g.nodes[k].v_threshold))  # () (Norse): from the op
            node = self._node(k, self.preds[k], gain, NeuronNode, shape=shape, threshold=th, p=1, precharge=0.0,
                              neuron=ZERO)
            nodes.append(node)
            self.names[k], self.th[k] = node.name, th
        rk, rpreds, gain = (last[0], self.preds[last[0]], _neuron_params(last[0], self.g.nodes[last[0]])[1]) \
            if as_readout else (self.out, last, 1.0)
        shape = tuple(int(v) for v in np.ravel(self.g.nodes[self.out].output_type["output"]))
        readout = self._node(rk, rpreds, gain, ReadoutNode, shape=shape)
        meta = {"model": "nir-import", "imported_from": "nir", "neuron": ZERO.name, "p": 1,
                "nir_input": f"pixel * {self.input_scale:.10g}",
                "readout": "the IF feeding the NIR Output, read as an accumulator" if as_readout else "NIR Output"}
        return FloatNet(InputNode(self.shape[INPUT_NAME], np.array([self.input_scale])), nodes, readout, meta)


def foreign_floatnet(graph: nir.NIRGraph, input_scale: float = DEFAULT_INPUT_SCALE) -> FloatNet:
    """A foreign NIR graph as a FloatNet (module docstring); its input is pixel * input_scale."""
    return _Foreign(graph, input_scale).floatnet()
