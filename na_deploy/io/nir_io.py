"""NIR in and out: `to_nir(net)` / `from_nir(graph)`, files `write_nir` / `load_nir` (`nir` 1.0.8, HDF5).

Export (FloatNet or IntNet): each neuron node = its synaptic ops feeding one `nir.IF` (r = 1, v_threshold =
threshold, v_reset = 0); several edges into one IF are summed (residual adds); relays are IF nodes (role
"relay"). conv2d -> `Conv2d` (groups written as zero blocks: nir 1.0.8 types grouped convs wrongly); dense ->
`Linear`/`Affine` (after `Flatten` from a map); avgpool2d -> `SumPool2d` (gain 1) / `AvgPool2d` (1/(kh*kw)) /
a depthwise-as-dense `Conv2d`; identity -> a 1x1 `Conv2d` (maps) or `Linear` of w*I. The bias rides on the first
conv/dense input (or input 0). The readout is the `Output`: its value per step is the readout current, the
readout potential its sum over T. IntNet weights: mantissa << e (e >= 0) or mantissa * 2**e (e < 0, where
the target floors); a FloatNet spike carries th (C2): a `Scale` after its IF. Mode "zero" is NIR's IF except
the pre-charge; "subtract" and the pre-charge travel in metadata (`nir_warnings`). Metadata key "na_deploy"
(JSON) on the graph, every IF and the Output restores the net exactly (names, order, scales, p, role, neuron
model, bias_exp, exponents, channel scale, meta).

A graph without that metadata (another framework's) is imported by `na_deploy.io.nir_foreign`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path
from typing import Union

import nir
import numpy as np

from na_deploy.atomic import atomic_write_bytes
from na_deploy.checks import one_line
from na_deploy.errors import IRError, ModelError
from na_deploy.ir import (INPUT_NAME, ZERO, AvgPool2d, Conv2d, Dense, FloatNet, Identity, InputNode, IntNet,
                          IntNeuronNode, IntReadoutNode, NeuronNode, ReadoutNode, Synapse)
from na_deploy.io.nad_h5 import as_dict_meta

FORMAT_NAME = "na-deploy-nir"
FORMAT_VERSION = 1
META = "na_deploy"
OUTPUT_KEY = "output"
Net = Union[FloatNet, IntNet]


# ------------------------------------------------------------------------------------------- export
def _add(nodes: dict, key: str, node) -> str:
    if key in nodes:
        raise IRError(f"NIR export: node key {key!r} is used twice (rename the node)")
    nodes[key] = node
    return key


def _eff(net: Net, w, e: int):
    """The weight a NIR reader multiplies by: IntNet mantissa << e (e >= 0) or mantissa * 2**e (e < 0)."""
    if not isinstance(net, IntNet):
        return w
    if np.ndim(w) == 0:
        return int(w) << e if e >= 0 else float(np.ldexp(float(w), e))
    return np.asarray(w).astype(np.int64) << e if e >= 0 else np.ldexp(np.asarray(w, dtype=np.float64), e)


def _bias(net: Net, n) -> np.ndarray:
    return (n.bias_mant << n.bias_exp) if isinstance(net, IntNet) else np.asarray(n.bias, dtype=np.float64)


def _ungroup(w: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv weight (Cout, Cin/G, kh, kw) as the equal groups=1 weight (Cout, Cin, kh, kw), zeros
    outside the groups (nir 1.0.8 types a Conv2d's input as weight.shape[1] channels, ignoring groups)."""
    if groups == 1:
        return w
    cout, cin_g = w.shape[:2]
    full = np.zeros((cout, cin_g * groups, *w.shape[2:]), dtype=w.dtype)
    for o in range(cout):
        g = o // (cout // groups)
        full[o, g * cin_g:(g + 1) * cin_g] = w[o]
    return full


def _regroup(full: np.ndarray, groups: int) -> np.ndarray:
    if groups == 1:
        return full
    cout, cin_g = full.shape[0], full.shape[1] // groups
    return np.stack([full[o, (o // (cout // groups)) * cin_g:(o // (cout // groups) + 1) * cin_g]
                     for o in range(cout)])


def _depthwise(c: int, k, stride, w, bias, in_hw) -> nir.Conv2d:
    wt = _ungroup(np.full((c, 1, *k), w, dtype=np.asarray(w).dtype), c)
    return nir.Conv2d(input_shape=tuple(in_hw), weight=wt, stride=tuple(stride), padding=(0, 0), dilation=(1, 1),
                      groups=1, bias=bias)


def _op_node(net: Net, syn: Synapse, src_shape, bias):
    """The NIR node of one synapse (`bias` is the node's bias when this input carries it, else None)."""
    op, w = syn.op, _eff(net, syn.op.weight, syn.exponent)
    zero_b = np.zeros(int(op.out_shape(src_shape)[0]), dtype=np.int64 if isinstance(net, IntNet) else np.float64)
    b = zero_b if bias is None else bias
    if isinstance(op, Conv2d):
        return nir.Conv2d(input_shape=tuple(src_shape[1:]), weight=_ungroup(w, op.groups), stride=op.stride,
                          padding=op.padding, dilation=(1, 1), groups=1, bias=b)
    if isinstance(op, Dense):
        return nir.Linear(weight=w) if bias is None else nir.Affine(weight=w, bias=b)
    if isinstance(op, AvgPool2d):
        k, s, z = np.array(op.kernel), np.array(op.stride), np.zeros(2, dtype=np.int64)
        if bias is None and w == 1:
            return nir.SumPool2d(kernel_size=k, stride=s, padding=z)
        if bias is None and isinstance(net, FloatNet) and w == 1.0 / (op.kernel[0] * op.kernel[1]):
            return nir.AvgPool2d(kernel_size=k, stride=s, padding=z)
        return _depthwise(src_shape[0], op.kernel, op.stride, w, b, src_shape[1:])
    if len(src_shape) == 3:  # identity on a map: depthwise 1x1 conv
        return _depthwise(src_shape[0], (1, 1), (1, 1), w, b, src_shape[1:])
    if len(src_shape) != 1:
        raise IRError(f"NIR export: identity input from a source of shape {src_shape} (only maps and vectors)")
    eye = np.eye(src_shape[0], dtype=np.asarray(w).dtype) * w
    return nir.Linear(weight=eye) if bias is None else nir.Affine(weight=eye, bias=b)


def _syn_meta(syn: Synapse, key: str) -> dict:
    op = syn.op
    m = {"key": key, "source": syn.source, "op": op.kind, "exponent": syn.exponent}
    if isinstance(op, (Conv2d, Dense)):
        m["dtype"] = str(np.asarray(op.weight).dtype)
        m["sha256"] = _digest(op.weight)
    else:
        m["weight"] = op.weight
    if isinstance(op, Conv2d):
        m.update(stride=list(op.stride), padding=list(op.padding), groups=op.groups)
    if isinstance(op, AvgPool2d):
        m.update(kernel=list(op.kernel), stride=list(op.stride))
    return m


def _synapses(net: Net, n, nodes: dict, edges: list, out_key: dict) -> tuple[list, dict]:
    """Add node n's synapse nodes; returns (their keys, the 'inputs' / 'bias_carrier' metadata)."""
    shapes = net.shapes()
    bias = _bias(net, n)
    carrier = next((j for j, s in enumerate(n.inputs) if isinstance(s.op, (Conv2d, Dense))), None)
    if carrier is None and np.any(bias != 0):
        carrier = 0
    keys, metas = [], []
    for j, s in enumerate(n.inputs):
        key = _add(nodes, f"{n.name}.in{j}", _op_node(net, s, shapes[s.source], bias if j == carrier else None))
        src = out_key[s.source]
        if isinstance(s.op, Dense) and len(shapes[s.source]) > 1:
            src = edges.append((src, f"{key}.flatten")) or _add(nodes, f"{key}.flatten", nir.Flatten(
                input_type={"input": np.array(shapes[s.source])}, start_dim=0, end_dim=-1))
        edges.append((src, key))
        keys.append(key)
        metas.append(_syn_meta(s, key))
    return keys, {"inputs": metas, "bias_carrier": carrier}


def _digest(a) -> str:
    """SHA-256 of an IR array's dtype, shape and bytes: the import checks the graph's weights against it."""
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()


def _node_meta(net: Net, n) -> dict:
    m = {"name": n.name, "bias_sha256": _digest(n.bias_mant if isinstance(net, IntNet) else n.bias)}
    if isinstance(n, (NeuronNode, IntNeuronNode)):
        m.update(kind="neuron", threshold=n.threshold, precharge=n.precharge, p=n.p, neuron=n.neuron.name,
                 reset=n.neuron.name, role=n.role)
    else:
        m["kind"] = "readout"
    if isinstance(net, IntNet):
        m.update(bias_exp=n.bias_exp, scale=n.scale)
    return m


def to_nir(net: Net) -> nir.NIRGraph:
    """The NIR graph of a FloatNet or IntNet (module docstring: the mapping and what travels in metadata)."""
    if not isinstance(net, (FloatNet, IntNet)):
        raise IRError(f"to_nir needs a FloatNet or IntNet, got {type(net).__name__}")
    graded = [n.name for n in net.nodes if n.neuron.graded]
    if graded:
        raise IRError(f"NIR export: node {graded[0]} is a graded node (a linear op between two activations, contract "
                      "C2); NIR has no non-spiking graded neuron here; allowed: nets without graded nodes")
    is_int = isinstance(net, IntNet)
    nodes = {INPUT_NAME: nir.Input(input_type={"input": np.array(net.input.shape)})}
    edges: list = []
    out_key = {INPUT_NAME: INPUT_NAME}
    for n in net.nodes:
        keys, m = _synapses(net, n, nodes, edges, out_key)
        th = np.full(n.shape, n.threshold, dtype=np.int64 if is_int else np.float64)
        meta = {META: json.dumps({**_node_meta(net, n), **m}, sort_keys=True)}
        out_key[n.name] = _add(nodes, n.name, nir.IF(r=np.ones(n.shape), v_threshold=th,
                                                     v_reset=np.zeros(n.shape), metadata=meta))
        edges += [(k, n.name) for k in keys]
        if not is_int:  # a FloatNet spike carries the threshold (C2)
            out_key[n.name] = _add(nodes, f"{n.name}.payload", nir.Scale(scale=np.full(n.shape, n.threshold)))
            edges.append((n.name, out_key[n.name]))
    r = net.readout
    keys, m = _synapses(net, r, nodes, edges, out_key)
    meta = {META: json.dumps({**_node_meta(net, r), **m}, sort_keys=True)}
    _add(nodes, OUTPUT_KEY, nir.Output(output_type={"output": np.array(r.shape)}, metadata=meta))
    edges += [(k, OUTPUT_KEY) for k in keys]
    info = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "flavour": net.flavour,
            "meta": as_dict_meta(net.meta), "input_shape": list(net.input.shape),
            "channel_scale": [float(v) for v in net.input.channel_scale], "order": [n.name for n in net.nodes]}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={META: json.dumps(info, sort_keys=True)})


def nir_warnings(net: Net) -> list[str]:
    """What a NIR reader that ignores na-deploy's metadata runs differently from `net` (one line each)."""
    out = []
    sub = [n.name for n in net.nodes if n.neuron.name != ZERO.name]
    if sub:
        out.append(f"{len(sub)} node(s) ({', '.join(sub[:4])}{', ...' if len(sub) > 4 else ''}) use mode "
                   "'subtract' (v >= th, reset by subtraction, pre-charge): it travels in NIR metadata; a reader "
                   "that ignores it runs them as IF with reset to zero (v > th) and v starting at 0")
    pre = [n.name for n in net.nodes if n.neuron.name == ZERO.name and n.precharge != 0]
    if pre:
        out.append(f"{len(pre)} zero-mode node(s) have a pre-charge (v at window start), which NIR cannot state: "
                   "it travels in metadata; a reader that ignores it starts v at 0")
    if isinstance(net, IntNet) and any(s.exponent < 0 for n in net.all_nodes() for s in n.inputs):
        out.append("synapses with negative exponents are written as mantissa * 2**e; the target floors "
                   "(y >> -e) where a NIR reader multiplies exactly")
    return out


def write_nir(net: Net, path: str | Path) -> list[str]:
    """Write `net` as a NIR HDF5 file atomically (built in memory first, issue 22); returns `nir_warnings(net)`."""
    graph = to_nir(net)
    image = io.BytesIO()  # built in memory, then written by plain Python I/O: a failed write is one WriteError
    nir.write(image, graph)
    atomic_write_bytes(path, image.getvalue())
    return nir_warnings(net)


# ------------------------------------------------------------------------------ import (our own graphs)
def _mantissa(key: str, what: str, a, e: int) -> np.ndarray:
    """The integer mantissas of an IntNet array written as mantissa << e (e >= 0) or mantissa * 2**e (e < 0);
    IRError naming the NIR node when a value is not finite, not an integer or not a multiple of 2**e (an edited
    graph: values are refused, never cast, issue 22)."""
    a = np.asarray(a)
    m = np.ldexp(a.astype(np.float64), -e) if e < 0 else a
    if m.dtype.kind == "f":
        if not np.all(np.isfinite(m)) or np.any(m != np.floor(m)) or np.any(np.abs(m) >= 2.0 ** 62):
            raise IRError(f"NIR node {key!r}: {what} has non-finite or non-integer values; an IntNet's {what} are "
                          "integer mantissas (the graph was edited?)")
        m = m.astype(np.int64)
    elif m.dtype.kind not in "iu":
        raise IRError(f"NIR node {key!r}: {what} has dtype {m.dtype}; allowed: integers in an IntNet")
    m = m.astype(np.int64)
    if e > 0 and np.any((m >> e) << e != m):
        raise IRError(f"NIR node {key!r}: {what} has values that are not multiples of 2**{e} (mantissa << exponent "
                      "of the na-deploy metadata; the graph was edited?)")
    return m >> e if e > 0 else m


def _checked(key: str, what: str, a: np.ndarray, digest) -> np.ndarray:
    """`a` when it matches the export's SHA-256 `digest` (absent in older files), else IRError naming the node."""
    if digest is not None and _digest(a) != digest:
        raise IRError(f"NIR node {key!r}: {what} differs from the values the na-deploy metadata records "
                      "(SHA-256); the graph was edited after `na-deploy export --format nir`")
    return a


def _restore_syn(node, m: dict, is_int: bool) -> Synapse:
    e = int(m["exponent"])
    kind = m["op"]
    if kind in ("conv2d", "dense"):
        w = np.asarray(node.weight)
        if is_int:
            w = _mantissa(m["key"], "weight", w, e)
        elif not np.all(np.isfinite(w.astype(np.float64))):
            raise IRError(f"NIR node {m['key']!r}: weight has non-finite values")
        w = w.astype(m["dtype"])
        if kind == "conv2d":
            w = _regroup(w, int(m["groups"]))
        w = _checked(m["key"], "weight", w, m.get("sha256"))
        op = (Conv2d(w, tuple(m["stride"]), tuple(m["padding"]), m["groups"]) if kind == "conv2d" else Dense(w))
    elif kind == "avgpool2d":
        op = AvgPool2d(tuple(m["kernel"]), tuple(m["stride"]), m["weight"])
    else:
        op = Identity(m["weight"])
    return Synapse(m["source"], op, e)


def _restore_node(graph: nir.NIRGraph, key: str, is_int: bool):
    m = json.loads(graph.nodes[key].metadata[META])
    syns = [_restore_syn(graph.nodes[s["key"]], s, is_int) for s in m["inputs"]]
    shape = tuple(int(v) for v in np.asarray(graph.nodes[key].input_type["input"]))
    c = m["bias_carrier"]
    b = np.asarray(graph.nodes[m["inputs"][c]["key"]].bias) if c is not None else np.zeros(shape[0])
    kw = dict(name=m["name"], shape=shape, inputs=syns)
    if is_int:
        bias = _mantissa(key if c is None else m["inputs"][c]["key"], "bias", b, int(m["bias_exp"]))
        kw.update(bias_mant=_checked(key, "bias", bias, m.get("bias_sha256")), bias_exp=m["bias_exp"],
                  scale=m["scale"])
    else:
        kw["bias"] = _checked(key, "bias", b.astype(np.float64), m.get("bias_sha256"))
    if m["kind"] == "readout":
        return (IntReadoutNode if is_int else ReadoutNode)(**kw)
    kw.update(threshold=m["threshold"], precharge=m["precharge"], p=m["p"], neuron=m["neuron"], role=m["role"])
    return (IntNeuronNode if is_int else NeuronNode)(**kw)


def _same(a, b) -> bool:
    if isinstance(a, dict) or isinstance(b, dict):
        return (isinstance(a, dict) and isinstance(b, dict) and set(a) == set(b)
                and all(_same(a[k], b[k]) for k in a))
    try:
        return np.array_equal(np.asarray(a), np.asarray(b))
    except (TypeError, ValueError):
        return False


def check_graph_matches(graph: nir.NIRGraph, net: Net) -> None:
    """IRError naming the first NIR node where `graph` differs from `to_nir(net)` (the net its na-deploy
    metadata describes): node kinds, edges and every parameter (v_threshold, r, v_reset, weights, biases,
    shapes; metadata aside). A graph edited after export is refused, never replaced by the metadata's net."""
    want = to_nir(net)
    for key in sorted(set(graph.nodes) ^ set(want.nodes)):
        where = "the graph" if key in graph.nodes else "the na-deploy metadata"
        raise IRError(f"NIR node {key!r} is only in {where}: the graph and its metadata disagree (edited graph?)")
    have_e, want_e = {tuple(e) for e in graph.edges}, {tuple(e) for e in want.edges}
    for a, b in sorted(have_e ^ want_e):
        what = "added to" if (a, b) in have_e else "missing from"
        raise IRError(f"NIR node {b!r}: edge {a!r} -> {b!r} is {what} the graph the na-deploy metadata describes")
    for key in sorted(graph.nodes):
        have, node = graph.nodes[key], want.nodes[key]
        if type(have) is not type(node):
            raise IRError(f"NIR node {key!r} is a {type(have).__name__}; the na-deploy metadata describes a "
                          f"{type(node).__name__}")
        for f in dataclasses.fields(node):
            if f.name != "metadata" and not _same(getattr(have, f.name), getattr(node, f.name)):
                raise IRError(f"NIR node {key!r}: {f.name} differs from the net the na-deploy metadata describes "
                              "(the graph was edited after `na-deploy export --format nir`)")


def _from_ours(graph: nir.NIRGraph) -> Net:
    info = json.loads(graph.metadata[META])
    if info.get("format") != FORMAT_NAME or info.get("format_version") != FORMAT_VERSION:
        raise IRError(f"NIR graph: na-deploy metadata of format {info.get('format')!r} version "
                      f"{info.get('format_version')!r}; this na-deploy reads {FORMAT_NAME!r} {FORMAT_VERSION}")
    is_int = info["flavour"] == "int"
    inp = InputNode(tuple(info["input_shape"]), np.asarray(info["channel_scale"], dtype=np.float64))
    nodes = [_restore_node(graph, k, is_int) for k in info["order"]]
    readout = _restore_node(graph, OUTPUT_KEY, is_int)
    net = (IntNet if is_int else FloatNet)(inp, nodes, readout, json.loads(info["meta"]))
    check_graph_matches(graph, net)
    return net


def from_nir(graph: nir.NIRGraph, input_scale: float | None = None) -> Net:
    """A NIR graph as a net: ours (na-deploy metadata) restored exactly, a foreign one as a FloatNet (mode zero)
    whose input is pixel * input_scale (None: `nir_foreign.DEFAULT_INPUT_SCALE`, 1/255; ignored for ours)."""
    if not isinstance(graph, nir.NIRGraph):
        raise IRError(f"from_nir needs a nir.NIRGraph, got {type(graph).__name__}")
    if META not in (graph.metadata or {}):
        from na_deploy.io.nir_foreign import DEFAULT_INPUT_SCALE, foreign_floatnet

        return foreign_floatnet(graph, DEFAULT_INPUT_SCALE if input_scale is None else input_scale)
    try:
        return _from_ours(graph)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, json.JSONDecodeError) as e:
        raise IRError(f"NIR graph: na-deploy metadata is incomplete or corrupt ({type(e).__name__}: {e})") from None


def read_nir(path: str | Path) -> nir.NIRGraph:
    """`nir.read` with one-line IRErrors for a missing, corrupt or non-NIR file."""
    path = Path(path)
    if not path.is_file():
        raise IRError(f"{path}: no such file")
    try:
        return nir.read(path)
    except Exception as e:  # nir.read raises OSError, KeyError, ValueError, AssertionError, ... on bad files
        msg = (str(e).splitlines() or [""])[0][:200]
        raise IRError(f"{path}: not a readable NIR file ({type(e).__name__}: {msg})") from None


def load_nir(path: str | Path, input_scale: float | None = None) -> Net:
    """Read a NIR file and import it (`from_nir`); errors name the file."""
    path = Path(path)
    graph = read_nir(path)
    try:
        return from_nir(graph, input_scale)
    except (IRError, ModelError) as e:
        raise type(e)(f"{path}: {one_line(e)}") from None
