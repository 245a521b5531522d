"""HDF5 serialization of the IR (`*.nad.h5`): flat, versioned, validated on load, byte-deterministic.

Layout (format version 1)::

    /                attrs: format="na-deploy-ir", format_version=1, flavour="float"|"int", meta (JSON)
    /input           attrs: shape;            dataset channel_scale
    /nodes/NNN       attrs: name, kind ("neuron"|"readout"), shape, every scalar field of the node class;
                     datasets: bias (float) or bias_mant (int)
    /nodes/NNN/inputs/MMM  attrs: source, op, exponent, op scalars (stride, padding, groups, kernel, weight)
                           dataset weight (Conv2d / Dense only)

Node and input order are the zero-padded group names. No timestamps are stored, so the same net gives the
same bytes. Attribute keys of version 1 that differ from the IR's field names: `levels` holds a neuron
node's `p`; `reset` holds the name of its neuron model (`na_deploy.ir.neuron`: "subtract", "zero", "negative",
"accumulate"). Inference options of the whole net live in meta: `offset_steps` (two-stage offset calibration,
rho; absent = 0; validated on load like every IR rule: an int >= 0, > 0 only for an all-subtract net).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
from pathlib import Path
from typing import Iterator, Union

import h5py
import numpy as np

from na_deploy.atomic import atomic_write_bytes
from na_deploy.checks import one_line
from na_deploy.errors import IRError
from na_deploy.ir import (OP_TYPES, AvgPool2d, Conv2d, Dense, FloatNet, Identity, InputNode, IntNet, IntNeuronNode,
                          IntReadoutNode, NeuronModel, NeuronNode, ReadoutNode, Synapse)

FORMAT_NAME = "na-deploy-ir"
FORMAT_VERSION = 1

# (HDF5 attribute key, node field) per node class, in file order
_NODE_FIELDS = {
    NeuronNode: (("threshold", "threshold"), ("levels", "p"), ("precharge", "precharge"), ("reset", "neuron"),
                 ("role", "role")),
    ReadoutNode: (),
    IntNeuronNode: (("threshold", "threshold"), ("bias_exp", "bias_exp"), ("precharge", "precharge"),
                    ("scale", "scale"), ("levels", "p"), ("reset", "neuron"), ("role", "role")),
    IntReadoutNode: (("bias_exp", "bias_exp"), ("scale", "scale")),
}


def as_dict_meta(meta: dict) -> str:
    """The net's meta dict as canonical JSON (sorted keys; arrays as lists)."""
    return json.dumps(meta, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


def _encode(value):
    """A node field as an HDF5 attribute value (a neuron model is stored by its name)."""
    return value.name if isinstance(value, NeuronModel) else value
_FLAVOURS = {"float": (FloatNet, NeuronNode, ReadoutNode), "int": (IntNet, IntNeuronNode, IntReadoutNode)}


def h5_group(parent: h5py.Group, name: str) -> h5py.Group:
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    gid = h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl)
    return h5py.Group(gid)


def h5_dataset(g: h5py.Group, name: str, data) -> None:
    g.create_dataset(name, data=np.ascontiguousarray(data), track_times=False)


_IN_MEMORY = itertools.count()


@contextlib.contextmanager
def h5_in_memory(path: str | Path, **kw) -> Iterator[h5py.File]:
    """An HDF5 file built in memory (core driver, no backing store: the same bytes as on disk) and then written
    to `path` atomically by plain Python I/O: HDF5 never sees a failed write, so EFBIG / ENOSPC / EACCES are
    one WriteError, no temp file is left and nothing can crash inside the HDF5 library (issue 22)."""
    f = h5py.File(f"na-deploy-{os.getpid()}-{next(_IN_MEMORY)}.h5", "w", driver="core", backing_store=False, **kw)
    try:
        yield f
        f.flush()
        image = f.id.get_file_image()
    finally:
        f.close()
    atomic_write_bytes(path, image)


def save_net(net: Union[FloatNet, IntNet], path: str | Path) -> None:
    """Write `net` atomically (built in memory, then temp file + rename: `h5_in_memory`)."""
    with h5_in_memory(path, track_order=False, libver=("earliest", "v110")) as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["flavour"] = net.flavour
        f.attrs["meta"] = as_dict_meta(net.meta)
        gi = h5_group(f, "input")
        gi.attrs["shape"] = np.asarray(net.input.shape, dtype=np.int64)
        h5_dataset(gi, "channel_scale", net.input.channel_scale)
        gn = h5_group(f, "nodes")
        for i, node in enumerate(net.all_nodes()):
            g = h5_group(gn, f"{i:04d}")
            g.attrs["name"] = node.name
            g.attrs["kind"] = "readout" if i == len(net.nodes) else "neuron"
            g.attrs["shape"] = np.asarray(node.shape, dtype=np.int64)
            for key, fld in _NODE_FIELDS[type(node)]:
                g.attrs[key] = _encode(getattr(node, fld))
            if net.flavour == "float":
                h5_dataset(g, "bias", node.bias)
            else:
                h5_dataset(g, "bias_mant", node.bias_mant)
            gs = h5_group(g, "inputs")
            for j, syn in enumerate(node.inputs):
                _write_synapse(h5_group(gs, f"{j:04d}"), syn)


def _write_synapse(g: h5py.Group, syn: Synapse) -> None:
    op = syn.op
    g.attrs["source"] = syn.source
    g.attrs["op"] = op.kind
    g.attrs["exponent"] = syn.exponent
    if isinstance(op, (Conv2d, Dense)):
        h5_dataset(g, "weight", op.weight)
    else:
        g.attrs["weight"] = op.weight
    if isinstance(op, Conv2d):
        g.attrs["stride"] = np.asarray(op.stride, dtype=np.int64)
        g.attrs["padding"] = np.asarray(op.padding, dtype=np.int64)
        g.attrs["groups"] = op.groups
    if isinstance(op, AvgPool2d):
        g.attrs["kernel"] = np.asarray(op.kernel, dtype=np.int64)
        g.attrs["stride"] = np.asarray(op.stride, dtype=np.int64)


def _attr(g: h5py.Group, key: str, path: Path):
    if key not in g.attrs:
        raise IRError(f"{path}: {g.name} is missing attribute {key!r} (corrupt or not a .nad.h5 file)")
    v = g.attrs[key]
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    return v


def _text(g: h5py.Group, key: str, path: Path) -> str:
    """A string attribute (a format name, kind, op, node or source name); IRError naming it otherwise."""
    v = _attr(g, key, path)
    if not isinstance(v, str):
        raise IRError(f"{path}: {g.name} attribute {key!r} is a {type(v).__name__}; allowed: a string")
    return v


MAX_ELEMENTS = 2 ** 31
"""The most elements one dataset or node shape of a .nad.h5 may declare: checked before anything is read or
allocated, so a hostile file cannot ask for terabytes (issue 22)."""


def _check_size(shape, what: str, path: Path) -> None:
    """IRError unless the declared `shape` holds at most MAX_ELEMENTS elements."""
    n = 1
    for s in shape:
        n *= max(int(s), 0)
    if n > MAX_ELEMENTS:
        raise IRError(f"{path}: {what} declares shape {tuple(int(s) for s in shape)} ({n} elements); allowed: at "
                      f"most {MAX_ELEMENTS} elements")


def _data(g: h5py.Group, key: str, path: Path) -> np.ndarray:
    if key not in g:
        raise IRError(f"{path}: {g.name} is missing dataset {key!r} (corrupt or not a .nad.h5 file)")
    ds = g[key]
    if not isinstance(ds, h5py.Dataset):
        raise IRError(f"{path}: {g.name}/{key} is not a dataset (corrupt or not a .nad.h5 file)")
    _check_size(ds.shape or (), f"{g.name}/{key}", path)
    return ds[()]


def _shape(g: h5py.Group, path: Path) -> tuple:
    """A node's or the input's declared shape, within the element budget."""
    shape = tuple(_attr(g, "shape", path))
    _check_size(shape, f"{g.name} shape", path)
    return shape


def load_intnet(path: str | Path) -> IntNet:
    """`load_net` for a file that must hold an IntNet (after fixed point); IRError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise IRError(f"{path}: file not found; allowed: an IntNet .nad.h5 written by `na-deploy convert`")
    net = load_net(path)
    if not isinstance(net, IntNet):
        raise IRError(f"{path}: holds a {type(net).__name__}; allowed: an IntNet (after fixed point, "
                      "`na-deploy convert`)")
    return net


def _read_synapse(g: h5py.Group, path: Path) -> Synapse:
    kind = _text(g, "op", path)
    if kind not in OP_TYPES:
        raise IRError(f"{path}: {g.name} has unknown op {kind!r}; known: {sorted(OP_TYPES)}")
    if kind == "conv2d":
        op = Conv2d(_data(g, "weight", path), tuple(_attr(g, "stride", path)), tuple(_attr(g, "padding", path)),
                    _attr(g, "groups", path))
    elif kind == "dense":
        op = Dense(_data(g, "weight", path))
    elif kind == "avgpool2d":
        op = AvgPool2d(tuple(_attr(g, "kernel", path)), tuple(_attr(g, "stride", path)), _attr(g, "weight", path))
    else:
        op = Identity(_attr(g, "weight", path))
    return Synapse(_text(g, "source", path), op, _attr(g, "exponent", path))


def load_net(path: str | Path) -> Union[FloatNet, IntNet]:
    """Read and validate a `.nad.h5` file; every problem is an IRError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise IRError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise IRError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {e}") from None
    try:
        with f:
            fmt = _text(f, "format", path)
            if fmt != FORMAT_NAME:
                raise IRError(f"{path}: format is {fmt!r}, expected {FORMAT_NAME!r}")
            ver = _attr(f, "format_version", path)
            if not isinstance(ver, int) or ver != FORMAT_VERSION:
                raise IRError(f"{path}: format_version {ver} is not supported (this na-deploy reads version "
                              f"{FORMAT_VERSION}); re-run `na-deploy convert` with this version")
            flavour = _text(f, "flavour", path)
            if flavour not in _FLAVOURS:
                raise IRError(f"{path}: flavour {flavour!r} unknown; expected 'float' or 'int'")
            net_t, neuron_t, readout_t = _FLAVOURS[flavour]
            meta = json.loads(_attr(f, "meta", path))
            gi = f["input"] if "input" in f else None
            if gi is None or "nodes" not in f:
                raise IRError(f"{path}: missing /input or /nodes group (corrupt or not a .nad.h5 file)")
            inp = InputNode(_shape(gi, path), _data(gi, "channel_scale", path))
            keys = sorted(f["nodes"].keys())
            if not keys:
                raise IRError(f"{path}: /nodes is empty")
            nodes = []
            for i, k in enumerate(keys):
                g = f["nodes"][k]
                kind = _text(g, "kind", path)
                want = "readout" if i == len(keys) - 1 else "neuron"
                if kind != want:
                    raise IRError(f"{path}: node {k} is a {kind!r}, expected {want!r} (the readout is last)")
                cls = readout_t if kind == "readout" else neuron_t
                kw = {fld: _attr(g, key, path) for key, fld in _NODE_FIELDS[cls]}
                bias_key = "bias" if flavour == "float" else "bias_mant"
                kw[bias_key] = _data(g, bias_key, path)
                if "inputs" not in g:
                    raise IRError(f"{path}: node {k} has no inputs group")
                syns = [_read_synapse(g["inputs"][m], path) for m in sorted(g["inputs"].keys())]
                nodes.append(cls(name=_text(g, "name", path), shape=_shape(g, path), inputs=syns, **kw))
            return net_t(input=inp, nodes=nodes[:-1], readout=nodes[-1], meta=meta)
    except IRError as e:
        msg = one_line(e)  # an IR check may quote an array, whose repr spans lines
        raise IRError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise IRError(f"{path}: corrupt .nad.h5 file ({type(e).__name__}: {one_line(e)})") from None
