"""The network graph of the IR: `FloatNet` and `IntNet`, a DAG of one `InputNode`, neuron nodes in
topological order and one readout node (see `na_deploy.ir` for the semantics).

Serialization is not here: `na_deploy.io` reads and writes `*.nad.h5` (as NIR keeps read/write outside ir/).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

import numpy as np

from na_deploy.errors import IRError
from na_deploy.ir.nodes import INPUT_NAME, InputNode, IntNeuronNode, IntReadoutNode, NeuronNode, ReadoutNode
from na_deploy.ir.ops import Shape, Synapse, is_int_array
from na_deploy.ir.timing import check_offset_steps, offset_steps  # noqa: F401  (offset_steps: simulate/, verify/ import it here)


@dataclass(eq=False)
class _Net:
    input: InputNode
    nodes: list
    readout: Any
    meta: dict = field(default_factory=dict)

    flavour: ClassVar[str] = ""
    _neuron_type: ClassVar[type] = object
    _readout_type: ClassVar[type] = object

    def __post_init__(self) -> None:
        self.nodes = list(self.nodes)
        self.meta = dict(self.meta)
        self.validate()

    # -- graph helpers
    def all_nodes(self) -> list:
        """Neuron nodes then the readout (topological order)."""
        return [*self.nodes, self.readout]

    def node(self, name: str):
        if name == INPUT_NAME:
            return self.input
        for n in self.all_nodes():
            if n.name == name:
                return n
        raise IRError(f"no node named {name!r}")

    def shapes(self) -> dict[str, Shape]:
        out = {INPUT_NAME: self.input.shape}
        for n in self.all_nodes():
            out[n.name] = n.shape
        return out

    def depths(self) -> dict[str, int]:
        """Hop count from the input (C3): input 0; a node is 1 + the depth of its sources.

        Raises IRError if a node's sources disagree (unbalanced paths; see `na_deploy.convert.delays`)."""
        d = {INPUT_NAME: 0}
        for n in self.all_nodes():
            src = {s.source: d[s.source] for s in n.inputs}
            if len(set(src.values())) != 1:
                raise IRError(f"node {n.name}: inputs arrive with different hop counts {src} (C3); "
                              "balance the paths (na_deploy.convert.delays.balance_delays) before simulating")
            d[n.name] = 1 + next(iter(src.values()))
        return d

    def is_balanced(self) -> bool:
        try:
            self.depths()
            return True
        except IRError:
            return False

    def validate(self) -> None:
        if not isinstance(self.input, InputNode):
            raise IRError(f"{type(self).__name__}.input must be an InputNode")
        seen = {INPUT_NAME: self.input.shape}
        for i, n in enumerate(self.all_nodes()):
            want = self._readout_type if i == len(self.nodes) else self._neuron_type
            if not isinstance(n, want):
                raise IRError(f"{type(self).__name__}: node {getattr(n, 'name', i)!r} must be a {want.__name__}, "
                              f"got {type(n).__name__}")
            if n.name in seen:
                raise IRError(f"duplicate node name {n.name!r}")
            for s in n.inputs:
                if s.source not in seen:
                    raise IRError(f"node {n.name}: source {s.source!r} is not an earlier node (graph must be "
                                  "topologically ordered)")
                self._check_synapse(n, s)
                out = s.op.out_shape(seen[s.source])
                if tuple(out) != tuple(n.shape):
                    raise IRError(f"node {n.name}: input from {s.source} ({s.op.kind}) has shape {tuple(out)}, "
                                  f"node shape is {tuple(n.shape)}")
            seen[n.name] = n.shape
        _check_offset_steps(self)

    def _check_synapse(self, node, syn: Synapse) -> None:
        raise NotImplementedError


def _check_offset_steps(net) -> None:
    """meta offset_steps (absent or None: no calibration) by the IR's one rule, `timing.check_offset_steps`."""
    rho = net.meta.get("offset_steps", 0)
    if rho is not None:
        check_offset_steps(rho, "meta offset_steps", net.nodes)


@dataclass(eq=False)
class FloatNet(_Net):
    """Float-valued converted network (BN folded), the output of `na_deploy.convert`."""

    flavour: ClassVar[str] = "float"
    _neuron_type: ClassVar[type] = NeuronNode
    _readout_type: ClassVar[type] = ReadoutNode

    def _check_synapse(self, node, syn: Synapse) -> None:
        if syn.exponent != 0:
            raise IRError(f"node {node.name}: FloatNet synapses have exponent 0, got {syn.exponent}")
        w = np.asarray(syn.op.weight)
        if not np.all(np.isfinite(w)):
            raise IRError(f"node {node.name}: input from {syn.source} has non-finite weights")


@dataclass(eq=False)
class IntNet(_Net):
    """Integer (fixed-point) network for one target; `meta['target']` names it."""

    flavour: ClassVar[str] = "int"
    _neuron_type: ClassVar[type] = IntNeuronNode
    _readout_type: ClassVar[type] = IntReadoutNode

    def _check_synapse(self, node, syn: Synapse) -> None:
        w = np.asarray(syn.op.weight)
        if not is_int_array(w):
            raise IRError(f"node {node.name}: input from {syn.source} ({syn.op.kind}) must have integer "
                          f"weights in an IntNet, got {w.dtype}")


def replace_nodes(net: _Net, nodes: Iterable, readout=None, **meta: Any):
    """A copy of `net` with new nodes (and optionally readout / extra meta)."""
    return type(net)(input=net.input, nodes=list(nodes), readout=readout if readout is not None else net.readout,
                     meta={**net.meta, **meta})
