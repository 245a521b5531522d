"""Delay balancing (C3): make every path into a node the same number of hops by inserting relay nodes.

A spike takes one step per synaptic hop on the target. A shortcut that skips k nodes gets k relay
populations in front of its op: a relay is an IF node with an Identity input of gain 1, the source's
threshold and pre-charge th/2, so it re-emits every spike of its source exactly one step later
(v0 = th/2; +th -> spikes, back to th/2; no input -> stays at th/2). Relays are ordinary neuron nodes
(role="relay"), so every backend and simulator handles them with no special case. A graded source (a graded
node, contract C2) gets graded relays: the graded model with threshold 1, each forwarding its input sum (the
source's payload) one step later.
"""
from __future__ import annotations

from na_deploy.errors import IRError
from na_deploy.ir import INPUT_NAME, FloatNet, Identity, NeuronNode, Synapse


def balance_delays(net: FloatNet) -> FloatNet:
    """Return a FloatNet whose every node's inputs arrive with equal hop counts (relays inserted)."""
    depth = {INPUT_NAME: 0}
    out_nodes: list[NeuronNode] = []
    by_name = {n.name: n for n in net.nodes}
    relay_of: dict[tuple[str, int], str] = {}  # (source, depth reached) -> relay node name

    def delayed(src: str, target_depth: int) -> str:
        """Name of a node emitting `src`'s spikes at depth `target_depth` (relay chain, shared)."""
        name = src
        for d in range(depth[src] + 1, target_depth + 1):
            key = (src, d)
            if key not in relay_of:
                if name == INPUT_NAME:
                    raise IRError("a shortcut from the input (graded pixels) cannot be delay-relayed; "
                                  "start residual paths after the first neuron layer")
                s = by_name[src]
                rname = f"{src}.relay{d - depth[src]}"
                kw = (dict(threshold=1.0, precharge=0.0, neuron=s.neuron) if s.neuron.graded
                      else dict(threshold=s.threshold))
                out_nodes.append(NeuronNode(name=rname, shape=s.shape, inputs=[Synapse(name, Identity(1.0))],
                                            p=s.p, role="relay", **kw))
                depth[rname] = d
                relay_of[key] = rname
            name = relay_of[key]
        return name

    def rebuild(n):
        want = max(depth[s.source] for s in n.inputs)
        syns = [Synapse(delayed(s.source, want), s.op, s.exponent) for s in n.inputs]
        depth[n.name] = want + 1
        return type(n)(**{**{f: getattr(n, f) for f in n.__dataclass_fields__}, "inputs": syns})

    for n in net.nodes:
        out_nodes.append(rebuild(n))
    readout = rebuild(net.readout)
    return FloatNet(input=net.input, nodes=out_nodes, readout=readout, meta=dict(net.meta))
