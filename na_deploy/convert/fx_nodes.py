"""Graded nodes in the fx walk (contract C2, "Graded nodes"; issue 19 item 2).

A linear op between two activations usually composes with its neighbours into one exact synapse (`compose`).
Where it cannot (an average pool before a padded conv: the conv reads the zero padding of the pool's output;
MobileNetV2's linear bottleneck: a residual sum with no activation feeding the next block; a bias that the
next op's zero padding would make vary across positions), the walk *materialises* the affine map: a
`NeuronNode` running the graded model (`na_deploy.ir.neuron.GRADED`) whose synaptic inputs are the map's terms
and whose bias is the map's bias. It forwards its input sum every step as a graded spike, so the next op reads
exactly the map's value (zero padding included: the node's output is zero outside the map), one step later
(C3: `balance_delays` treats it as any node). The op that refused is then applied to the node's activation.

`Materializer.retry(fn, args)` is the whole interface: after `fn(*args)` refused (or produced a bias that
varies across a channel), every argument that is a composite map becomes a graded node and `fn` runs once more.
Materialising is always exact, so the older rules are tried first and registry models keep their bytes.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from na_deploy.convert.affine import Refusal, _bias_vector, _Lin
from na_deploy.ir import GRADED, NeuronNode, Synapse


def is_plain(lin: _Lin) -> bool:
    """The activation of one node itself (one identity term, not flattened, no bias): nothing to materialise."""
    if len(lin.terms) != 1 or lin.bias is not None:
        return False
    t = next(iter(lin.terms.values()))
    return t.op == "identity" and not t.flat


def bias_varies(lin: Any) -> bool:
    """True for a map whose bias is not one value per channel (an op's zero padding applied to a bias)."""
    if not isinstance(lin, _Lin) or lin.bias is None or len(lin.shape) != 3:
        return False
    b = np.asarray(lin.bias, dtype=np.float64).reshape(lin.shape[0], -1)
    return not np.allclose(b, b[:, :1], rtol=1e-12, atol=1e-12 * max(1.0, float(np.abs(b).max(initial=0.0))))


def graded_node(name: str, lin: _Lin, synapses: list[Synapse]) -> NeuronNode:
    """The graded node computing `lin` (threshold 1: its payload is the float sum itself; pre-charge 0)."""
    return NeuronNode(name=name, shape=lin.shape, inputs=synapses, threshold=1.0,
                      bias=_bias_vector(lin.bias, lin.shape, name), p=1, precharge=0.0, neuron=GRADED)


class Materializer:
    """Turns composite maps into graded nodes for one fx walk (`fx_walk._Converter`: its `synapses`, `path`,
    `nodes`, `p_by_node` and `env`, the value table, where a materialised map is replaced too, so every later
    reader of that fx value reads the node)."""

    def __init__(self, walker: Any):
        self.walker = walker
        self.done: dict[int, tuple[_Lin, _Lin]] = {}  # id(map) -> (the map, kept alive; the node's activation)

    def _taken(self, name: str) -> bool:
        w = self.walker
        return name in w.p_by_node or any(m.name == name for m in w.nodes)

    def materialize(self, lin: _Lin, n: Any) -> _Lin:
        """The graded node of `lin` (made once per map; named after fx node n's module path), as the activation
        map of that node."""
        if id(lin) in self.done:
            return self.done[id(lin)][1]
        where = self.walker.path(n)
        name, k = f"{where}.graded", 1
        while self._taken(name):
            k += 1
            name = f"{where}.graded{k}"
        self.walker.nodes.append(graded_node(name, lin, self.walker.synapses(lin, name, n)))
        out = _Lin.of_source(name, lin.shape)
        self.done[id(lin)] = (lin, out)
        env = self.walker.env
        for key, val in list(env.items()):
            if val is lin:
                env[key] = out
        return out

    def apply(self, fn: Callable[..., _Lin], args: tuple, kwargs: dict, n: Any
              ) -> tuple[Optional[_Lin], Optional[str]]:
        """(fn(*args, **kwargs), None); when fn refuses a composite map, or leaves a bias that varies across a
        channel, the maps become graded nodes and fn runs once more; (None, why) when it still refuses."""
        try:
            out = fn(*args, **kwargs)
            if not bias_varies(out) or not any(isinstance(a, _Lin) and a.bias is not None for a in args):
                return out, None
            why = None
        except Refusal as r:
            why = r.why
        retry = self.retry_args(args, n)
        if retry is None:
            return (out, None) if why is None else (None, why)
        try:
            return fn(*retry, **kwargs), None
        except Refusal as r:
            return None, r.why

    def retry_args(self, args: tuple, n: Any) -> Optional[tuple]:
        """`args` with every composite map materialised, or None when there is none (nothing to retry)."""
        out, changed = [], False
        for a in args:
            if isinstance(a, _Lin) and not is_plain(a):
                out.append(self.materialize(a, n))
                changed = True
            else:
                out.append(a)
        return tuple(out) if changed else None


__all__ = ["Materializer", "bias_varies", "graded_node", "is_plain"]
