"""The netx format (lava-dl 0.6, `lava.lib.dl.netx.hdf5.Network`): which IntNets it expresses, the net it runs,
and its file, written here with h5py (lava-dl is the reader, never the writer). No Lava import.

netx builds a strict chain of blocks, each one synapse (Conv or Dense) and one population of Lava's stock
LIF (neuron type "CUBA" -> `LIF`, or `LIFReset` when `Network(reset_interval=...)` is given). An IntNet maps
onto it when (`netx_layers`, else ExportNotSupported naming the node):
  * every node has one input, from the node before it (the first from the input): no residual add, no relay
    (an Identity op), no pooling op left (our fixed point folds a pool into the next conv / dense);
  * every op is Conv2d or Dense with exponent 0 (netx writes no conv exponent and picks the dense one itself);
  * every neuron node is mode "zero": LIF(du = 4095, dv = 0) is IF with reset to 0, spike when v > vth << 6.

File (read by netx.utils.NetDict; every name below is netx's):
  layer/0   type "input", shape (C, H, W), no neuron: the first block gets the raw pixels as graded spikes
            (`Network(input_message_bits=8)`, contract C4)
  layer/i   type "conv": shape (Cout, H, W), weight (Cout, Cin/groups, kh, kw) in torch layout (netx flips and
            transposes it, as our Lava backend does), stride / padding / dilation (y, x), groups, bias (Cout,)
            type "flatten": before the first dense whose source is a map (netx's flatten turns Lava's
            (W, H, C) back into (C, H, W) order, the C order of our Dense weight columns)
            type "dense": shape (N,), weight (N, in), bias (N,)
  neuron    type "CUBA", vThMant = th, iDecay = 4096 (netx sets du = iDecay - 1 = 4095: u = a_in << 6 every
            step), vDecay = 0 (no leak), refDelay 1, gradedSpike 0. netx fixes bias_exp = 6, so bias_mant is our
            bias itself (the LIF adds bias_mant << 6 = 64 x bias to its v = 64 x ours): |bias| <= 4095.
  readout   the last dense block, a LIF that never fires: vThMant = 2^17 - 1 and `netx_rules` proves 64 x its
            accumulated potential stays within (-(2^23 - 1), vth << 6] for T steps; its v / 64 at its window
            end is our readout (C7).

What netx cannot carry: an initial v. Its per-sample reset is `LIFReset`: at every step t with t mod L =
offset, u = v = 0 and then that step's input is integrated. So the net netx runs has pre-charge 0 on every
node, the pre-charge folded into the bias for the export's T: `netx_runnable(net, T)` makes that net (and
says so in its meta), and the reference must simulate it.
Windows (C3): `Network(reset_interval=L, reset_offset=1)`, L = T + D (D: readout depth). netx offsets block j
(0-based) by 1 + reset_offset + j = j + 2, the first step of the window of depth j + 1 (our input sends on
steps 1..T of each slot, one step of delay per block), so every block, readout included, starts its window
at v = 0 exactly where the reference does; `netx_schedule` gives the numbers.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from na_deploy.errors import ExportNotSupported
from na_deploy.io import h5_dataset, h5_group
from na_deploy.io.nad_h5 import h5_in_memory
from na_deploy.ir import INPUT_NAME, Conv2d, Dense, IntNet, IntReadoutNode
from na_deploy.ir.graph import replace_nodes
from na_deploy.protocols import Violation
from na_deploy.rounding import round_half_up

from na_deploy.hw_targets.loihi2.fit import node_bound, rule_range
from na_deploy.hw_targets.loihi2.limits import LOIHI2, Loihi2Limits

NETX_FORMAT = "na-deploy-netx"
NETX_FORMAT_VERSION = 1
NETX_BIAS_EXP = 6  # netx's get_neuron_params: bias_exp = 6, always
INPUT_MESSAGE_BITS = 8  # raw uint8 pixels into the first block (C4)
RESET_OFFSET = 1  # Network(reset_offset=1): block j resets at slot step j + 2
PRECHARGE_NOTE = ("pre-charge folded into the bias (bias += round_half_up(pre-charge / T) per step, pre-charge 0): "
                  "netx's LIFReset re-arms v = 0 at each window start and its file has no initial v")


def _neuron_fields(vth: int) -> dict:
    return {"type": "CUBA", "vThMant": int(vth), "iDecay": 4096, "vDecay": 0, "refDelay": 1, "gradedSpike": 0}


def netx_layers(net: IntNet) -> list:
    """The nodes of `net` in chain order (readout last); ExportNotSupported naming the first node netx cannot
    express, and why."""
    if not isinstance(net, IntNet):
        raise ExportNotSupported(f"netx export needs an IntNet (after fixed point), got {type(net).__name__}")
    for node in net.all_nodes():  # a residual add first: it is why a branch exists at all
        if len(node.inputs) != 1:
            srcs = ", ".join(s.source for s in node.inputs)
            raise ExportNotSupported(f"netx cannot express node {node.name}: it adds {len(node.inputs)} inputs "
                                     f"({srcs}); netx builds a strict chain of conv/dense blocks, no residual add "
                                     "(export it with --format lava)")
    prev = INPUT_NAME
    for node in net.all_nodes():
        where = f"netx cannot express node {node.name}"
        syn = node.inputs[0]
        if syn.source != prev:
            raise ExportNotSupported(f"{where}: its input comes from {syn.source}, not from the node before it "
                                     f"({prev}); netx builds a strict chain")
        if not isinstance(syn.op, (Conv2d, Dense)):
            what = "a relay (identity op)" if syn.op.kind == "identity" else f"op {syn.op.kind}"
            raise ExportNotSupported(f"{where}: {what} from {syn.source}; netx blocks are conv or dense only "
                                     "(pools must be folded into the next conv/dense)")
        if syn.exponent != 0:
            raise ExportNotSupported(f"{where}: weight exponent {syn.exponent} from {syn.source}; allowed: 0 "
                                     "(netx writes no conv exponent and chooses the dense one itself)")
        if isinstance(syn.op, Conv2d) and len(node.shape) != 3:
            raise ExportNotSupported(f"{where}: conv into shape {node.shape}; netx conv blocks are (C, H, W) maps")
        if not isinstance(node, IntReadoutNode) and node.neuron.name != "zero":
            raise ExportNotSupported(f"{where}: neuron model {node.neuron.name!r}; netx's neuron is Lava's stock "
                                     "LIF (reset to 0), allowed: 'zero' (convert with --neuron zero)")
        if isinstance(node, IntReadoutNode) and not isinstance(syn.op, Dense):
            raise ExportNotSupported(f"{where}: the readout's op is {syn.op.kind}; allowed: dense")
        prev = node.name
    return net.all_nodes()


def netx_runnable(net: IntNet, timesteps: int) -> IntNet:
    """The net netx runs for T = `timesteps`: `net` with each neuron node's pre-charge pc folded into its bias,
    b' = b + round_half_up(pc / T) per step (bias_exp 0), and pre-charge 0; `net` itself if it has no pre-charge.
    The same total charge reaches the window's end, spread over its T steps instead of given at its start.
    Measured on the digits net in mode "zero" (`benchmarks/experiments/measure_netx_precharge.py`, 360 test images,
    T = 1/2/4/8/16/32): 98.61/98.89/99.44/99.44/99.17/99.17 % folded, 33.06/87.78/98.33/98.89/98.89/98.89 % with the
    pre-charge dropped, 98.61/98.61/99.17/99.17/99.17/99.17 % for the
    source net. Refuses (ExportNotSupported) what netx cannot express."""
    netx_layers(net)
    if all(n.precharge == 0 for n in net.nodes):
        return net
    T = int(timesteps)
    nodes = [dataclasses.replace(n, bias_mant=n.bias + round_half_up(n.precharge / T).astype(np.int64), bias_exp=0,
                                 precharge=0) for n in net.nodes]
    return replace_nodes(net, nodes, netx={"changed": PRECHARGE_NOTE, "timesteps": T,
                                           "precharge_was": {n.name: int(n.precharge) for n in net.nodes}})


def netx_schedule(net: IntNet, timesteps: int) -> dict:
    """The `netx.hdf5.Network` keyword arguments that run `net` sample after sample, T = `timesteps`."""
    depth = net.depths()[net.readout.name]
    return {"input_message_bits": INPUT_MESSAGE_BITS, "reset_interval": int(timesteps) + depth,
            "reset_offset": RESET_OFFSET}


def netx_rules(net: IntNet, timesteps: int, limits: Loihi2Limits = LOIHI2) -> list[Violation]:
    """What netx's fixed choices add to the stock-LIF rules of the fit check: bias_exp = 6 (so |bias| <= 4095),
    no initial v, and a readout LIF that must never fire or saturate within T steps."""
    out: list[Violation] = []
    lo, hi = limits.bias_mant_min, limits.bias_mant_max
    for node in net.all_nodes():
        out += rule_range(node.name, "bias_mant (netx: bias_exp is always 6, so bias_mant = bias)",
                          np.asarray(node.bias), lo, hi, "13-bit signed")
        if not isinstance(node, IntReadoutNode) and node.precharge != 0:
            out.append(Violation(node.name, "pre-charge (netx has no initial v)", int(node.precharge), 0,
                                 "run the net `netx_runnable` makes (pre-charge folded into the bias): "
                                 "`na-deploy export --format netx` writes it"))
    r, b = net.readout, node_bound(net.readout, timesteps, limits)
    a_lo, a_hi = limits.lif_a_in_range
    out += rule_range(r.name, "a_in (readout LIF register, per-step synaptic sum)", int(max(b.synaptic, key=abs)),
                      a_lo, a_hi, "16-bit signed")
    m_lo, m_hi = b.membrane
    floor = -(limits.state_max >> limits.lif_shift)  # 64 x this is the LIF's lowest v
    out += rule_range(r.name, f"readout potential (the readout LIF never fires: v <= vth << 6 for T={timesteps})",
                      int(m_hi), floor, limits.lif_vth_max, "vThMant = 2^17 - 1; export for a smaller T")
    out += rule_range(r.name, f"readout potential (64 x it within the 24-bit v for T={timesteps})",
                      int(m_lo), floor, limits.lif_vth_max, "export for a smaller T")
    return out


def _scalar(g: h5py.Group, key: str, value: int) -> None:
    """A 0-d integer dataset (netx prints and uses groups / neuron fields as scalars)."""
    g.create_dataset(key, data=np.int64(value), track_times=False)


def _layer(parent: h5py.Group, i: int, kind: str) -> h5py.Group:
    g = h5_group(parent, str(i))
    h5_dataset(g, "type", np.array([kind.encode("ascii")], dtype="S10"))
    return g


def _neuron(g: h5py.Group, vth: int) -> None:
    gn = h5_group(g, "neuron")
    for key, value in _neuron_fields(vth).items():
        if isinstance(value, str):
            h5_dataset(gn, key, np.array([value.encode("ascii")], dtype="S10"))
        else:
            _scalar(gn, key, value)


def _write_layers(f: h5py.File, net: IntNet, limits: Loihi2Limits) -> None:
    layers, shapes = h5_group(f, "layer"), net.shapes()
    h5_dataset(_layer(layers, 0, "input"), "shape", np.asarray(net.input.shape, dtype=np.int64))
    i = 1
    for node in netx_layers(net):
        syn = node.inputs[0]
        if isinstance(syn.op, Dense) and len(shapes[syn.source]) != 1 and syn.source != INPUT_NAME:
            _layer(layers, i, "flatten")
            i += 1
        g = _layer(layers, i, syn.op.kind if syn.op.kind == "dense" else "conv")
        h5_dataset(g, "shape", np.asarray(node.shape, dtype=np.int64))
        h5_dataset(g, "weight", np.asarray(syn.op.weight, dtype=np.int64))
        if isinstance(syn.op, Conv2d):
            for key, value in (("stride", syn.op.stride), ("padding", syn.op.padding), ("dilation", (1, 1))):
                h5_dataset(g, key, np.asarray(value, dtype=np.int64))
            _scalar(g, "groups", syn.op.groups)
        h5_dataset(g, "bias", np.asarray(node.bias, dtype=np.int64).reshape(-1))
        _neuron(g, limits.lif_vth_max if isinstance(node, IntReadoutNode) else node.threshold)
        i += 1


def write_netx(net: IntNet, path: str | Path, timesteps: int, limits: Loihi2Limits = LOIHI2,
               made_from: dict[str, Any] | None = None) -> Path:
    """Write the netx file of `net` (which must be `netx_runnable`: pre-charge 0) atomically, byte-deterministic.
    The root attributes (ignored by netx) record the format, T, the Network keyword arguments and `made_from`."""
    netx_layers(net)
    if any(n.precharge != 0 for n in net.nodes):
        raise ExportNotSupported("write_netx: the net has a pre-charge; write the net `netx_runnable(net)` makes")
    path = Path(path)
    with h5_in_memory(path, track_order=False, libver=("earliest", "v110")) as f:  # a failed write: one line
        f.attrs["format"] = NETX_FORMAT
        f.attrs["format_version"] = NETX_FORMAT_VERSION
        f.attrs["timesteps"] = int(timesteps)
        f.attrs["network_kwargs"] = json.dumps(netx_schedule(net, timesteps), sort_keys=True)
        f.attrs["made_from"] = json.dumps(made_from or {}, sort_keys=True)
        _write_layers(f, net, limits)
    return path


__all__ = ["netx_layers", "netx_runnable", "netx_schedule", "netx_rules", "write_netx", "NETX_FORMAT",
           "PRECHARGE_NOTE", "INPUT_MESSAGE_BITS"]
