"""The provenance chain (C8): checkpoint -> FloatNet -> IntNet (-> export bundle), recorded and checked.

Recording (`provenance_records`, re-exported here): every artifact's meta holds
`made_from = {"kind", "file" (base name), "sha256"}` of what it was made from. `convert_checkpoint` records the
checkpoint in the FloatNet; `save_net_pair` (used by `na-deploy convert` and the pipeline alike) writes the
FloatNet, then the IntNet recording the FloatNet; the Lava bundle's manifest records the IntNet.

Checking (`check_chain(int_net_path, against_path, target)`): `against_path` is the QAT checkpoint (links
ckpt -> FloatNet -> IntNet; the FloatNet is the sibling file named in the IntNet's record) or the FloatNet
(one link). A link is intact when (1) the later artifact records the earlier one and the recorded SHA-256 is
the earlier file's, and (2) re-deriving the later artifact from the earlier file gives the same content:
FloatNet == convert_checkpoint(ckpt) (every array and field, and the meta except `made_from`, the legacy
`source` / `convert_s` and `na_deploy_version`), IntNet == target.to_fixed_point(FloatNet, max_timesteps=the
IntNet's) (every array and field; the IntNet's meta is used only to find its FloatNet and its max_timesteps).
The first differing node is named with its fields, e.g. "node conv1: weight differs from
to_fixed_point(net.float.nad.h5): 64 of 288 entries, first at (0, 0, 1, 1): -12 in net.nad.h5 vs 12".
The target object is passed in: the core never imports a target.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

import h5py
import numpy as np

from na_deploy.errors import NaDeployError
from na_deploy.io import load_net, save_net
from na_deploy.io.nad_h5 import as_dict_meta
from na_deploy.ir import FloatNet, IntNet, NeuronModel
from na_deploy.io.made_from import (FLOAT_SUFFIX, KINDS, NET_SUFFIX, RERUN_ADVICE, checkpoint_record, float_net_record,
                                    float_path_for, made_from, sha256_file)

# FloatNet meta keys a re-derivation may change without changing the network: the record itself (the file's
# name may differ), the wall time and checkpoint path of files written before the chain, the version string
UNCOMPARED_META = ("made_from", "convert_s", "source", "na_deploy_version")

Net = Union[FloatNet, IntNet]


def save_net_pair(fnet: FloatNet, inet: IntNet, float_path: str | os.PathLike,
                  net_path: str | os.PathLike) -> None:
    """Write the FloatNet, then the IntNet recording it (`made_from`, kind float_net), both atomically.
    What `na-deploy convert` and `na-deploy pipeline` both write."""
    save_net(fnet, float_path)
    inet.meta.pop("float_net", None)  # the legacy record: made_from replaces it
    inet.meta["made_from"] = made_from("float_net", float_path)
    save_net(inet, net_path)


# ------------------------------------------------------------------------------------------ report
@dataclass(frozen=True)
class Link:
    """One link of the chain: `to` was made from `frm`; `reason` says why it is broken ("" when intact)."""

    frm: str
    to: str
    ok: bool
    reason: str = ""

    def to_dict(self) -> dict:
        return {"from": self.frm, "to": self.to, "ok": self.ok, "reason": self.reason}


@dataclass
class ChainReport:
    """The links from `against` to `net`, oldest first; `ok` when every link is intact."""

    net: str
    against: str
    links: list[Link] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.links) and all(link.ok for link in self.links)

    @property
    def broken(self) -> Optional[str]:
        """The first broken link as one line ("FROM -> TO: reason"), None when the chain is intact."""
        for link in self.links:
            if not link.ok:
                return f"{link.frm} -> {link.to}: {link.reason}"
        return None

    def to_dict(self) -> dict:
        return {"ok": self.ok, "net": self.net, "against": self.against, "broken": self.broken,
                "links": [link.to_dict() for link in self.links]}


# --------------------------------------------------------------------------------------- comparison
def _plain(v: Any) -> Any:
    """A node / op field as a comparable value: arrays and sequences as arrays, neuron models by name."""
    if isinstance(v, NeuronModel):
        return v.name
    if isinstance(v, (np.ndarray, list, tuple)):
        return np.asarray(v)
    if isinstance(v, np.generic):
        return v.item()
    return v


def _array_diff(a: np.ndarray, b: np.ndarray, file_label: str) -> Optional[str]:
    if a.shape != b.shape:
        return f"shape {a.shape} in {file_label} vs {b.shape}"
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    else:
        differ = a != b
    if not np.any(differ):
        return None
    idx = tuple(int(i) for i in np.argwhere(differ)[0])
    return (f"{int(np.count_nonzero(differ))} of {a.size} entries, first at {idx}: {a[idx].item()!r} in "
            f"{file_label} vs {b[idx].item()!r}")


def _value_diff(a: Any, b: Any, file_label: str) -> Optional[str]:
    """None when equal, else what differs ("3 in net.nad.h5 vs 127", or for arrays counts and the first)."""
    a, b = _plain(a), _plain(b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return _array_diff(np.asarray(a), np.asarray(b), file_label)
    return None if a == b else f"{a!r} in {file_label} vs {b!r}"


def _fields_of(obj: Any) -> list[tuple[str, Any]]:
    """(name, value) of every dataclass field of a node, its synapses' ops included (weights first)."""
    out: list[tuple[str, Any]] = []
    inputs = getattr(obj, "inputs", None)
    if inputs is not None:
        out.append(("inputs", len(inputs)))
        for i, syn in enumerate(inputs):
            pre = "" if len(inputs) == 1 else f"input {i} "
            out += [(pre + "op", syn.op.kind)]
            out += [(pre + f.name, getattr(syn.op, f.name)) for f in fields(syn.op)]
            out += [(pre + "source", syn.source), (pre + "exponent", syn.exponent)]
    out += [(f.name, getattr(obj, f.name)) for f in fields(obj) if f.name != "inputs"]
    return out


def _node_diffs(a: Any, b: Any, file_label: str) -> list[str]:
    """'field: what differs' for every differing field of two nodes (type first)."""
    if type(a) is not type(b):
        return [f"type: {type(a).__name__} in {file_label} vs {type(b).__name__}"]
    fa, fb = _fields_of(a), _fields_of(b)
    if [k for k, _ in fa] != [k for k, _ in fb]:  # different synapse counts or ops: name the first
        return [next((f"{k}: {va!r} in {file_label} vs {vb!r}" for (k, va), (_, vb) in zip(fa, fb)
                      if _value_diff(va, vb, file_label)), f"fields: {len(fa)} in {file_label} vs {len(fb)}")]
    out = []
    for (k, va), (_, vb) in zip(fa, fb):
        d = _value_diff(va, vb, file_label)
        if d:
            out.append(f"{k}: {d}")
    return out


def _meta_diffs(a: dict, b: dict, file_label: str) -> list[str]:
    """Differing meta keys (both through canonical JSON, as the file stores them), UNCOMPARED_META aside."""
    a, b = json.loads(as_dict_meta(a)), json.loads(as_dict_meta(b))
    keys = sorted((set(a) | set(b)) - set(UNCOMPARED_META))
    return [f"meta {k}: {a.get(k, '<absent>')!r} in {file_label} vs {b.get(k, '<absent>')!r}"
            for k in keys if a.get(k, "<absent>") != b.get(k, "<absent>")]


def compare_nets(got: Net, want: Net, file_label: str, derived_label: str, meta: bool = False) -> Optional[str]:
    """None when `got` (read from `file_label`) has the content of `want` (made by `derived_label`); else one
    line naming the first differing node and its differing fields (and how many other nodes differ)."""
    pre = f"differs from {derived_label}:"
    inp = _node_diffs(got.input, want.input, file_label)
    if inp:
        return f"input {pre} " + "; ".join(inp)
    names_a, names_b = [n.name for n in got.all_nodes()], [n.name for n in want.all_nodes()]
    if names_a != names_b:
        return f"node list {pre} {names_a} in {file_label} vs {names_b}"
    bad = [(n.name, d) for n, m in zip(got.all_nodes(), want.all_nodes()) if (d := _node_diffs(n, m, file_label))]
    if bad:
        name, diffs = bad[0]
        first, *rest = diffs
        k, _, what = first.partition(": ")
        more = f" (+{len(bad) - 1} more node(s) differ)" if len(bad) > 1 else ""
        return f"node {name}: {k} {pre} {what}" + "".join(f"; {d}" for d in rest) + more
    if meta:
        md = _meta_diffs(got.meta, want.meta, file_label)
        if md:
            return f"{md[0].partition(':')[0]} {pre}{md[0].partition(':')[2]}" + "".join(f"; {d}" for d in md[1:])
    return None


def _roundtrip(net: Net) -> Net:
    """`net` as its file reads back (so both sides of a comparison have the types load_net gives)."""
    with tempfile.TemporaryDirectory(prefix="na-deploy-chain-") as d:
        save_net(net, Path(d) / "net.nad.h5")
        return load_net(Path(d) / "net.nad.h5")


# -------------------------------------------------------------------------------------------- chain
def _load_flavour(path: Path, cls: type, allowed: str) -> Net:
    """load_net(path), refusing the other flavour (one line naming the file and what is allowed)."""
    net = load_net(path)
    if not isinstance(net, cls):
        got = "a FloatNet" if isinstance(net, FloatNet) else "a fixed-point IntNet"
        raise NaDeployError(f"{path}: is {got}; allowed: {allowed}")
    return net


def _load_qat_checkpoint(path: Path):
    """The checkpoint at `path`; one-line errors for a file that is no checkpoint or no QAT checkpoint."""
    from na_deploy.training.checkpoint import load_checkpoint
    from na_deploy.errors import CheckpointError

    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; allowed as the start of the chain: a QAT checkpoint or a FloatNet "
                              f"(*{FLOAT_SUFFIX})") from None
    if ckpt.kind != "qat":
        raise CheckpointError(f"{path}: is a {ckpt.kind!r} checkpoint; allowed: the QAT checkpoint the nets were "
                              "converted from (or the FloatNet)")
    return ckpt


def _sha_mismatch(path: Path, rec: dict, what: str, later: str) -> Optional[str]:
    """Why `path` is not the file `rec` records (None when its SHA-256 is the recorded one)."""
    sha = sha256_file(path)
    if sha == rec["sha256"]:
        return None
    return (f"{path.name} is not the {what} {later} was made from: its SHA-256 {sha[:12]}... differs from the "
            f"recorded {rec['sha256'][:12]}... (of {rec.get('file')})")


def _ckpt_to_float(ckpt_p: Path, ckpt: Any, float_p: Path, fnet: FloatNet) -> Link:
    """Link checkpoint -> FloatNet: the FloatNet's record, the checkpoint's hash, convert_checkpoint again."""
    frm, to = str(ckpt_p), str(float_p)
    rec = checkpoint_record(fnet.meta)
    if rec is None:
        return Link(frm, to, False, f"{float_p.name} records no checkpoint (no made_from: written before na-deploy "
                                    f"recorded the chain); {RERUN_ADVICE}")
    why = _sha_mismatch(ckpt_p, rec, "checkpoint", float_p.name)
    if why:
        return Link(frm, to, False, why)
    from na_deploy.convert import convert_checkpoint
    from na_deploy.convert.bias_shift import bias_shift_of
    from na_deploy.convert.neuron_modes import mode_of

    label = f"convert_checkpoint({ckpt_p.name})"
    try:
        derived = convert_checkpoint(ckpt, self_check=False, **mode_of(fnet.meta),  # in the mode it was made
                                     **bias_shift_of(fnet.meta))
    except NaDeployError as e:
        return Link(frm, to, False, f"{label} fails: {e}")
    diff = compare_nets(fnet, _roundtrip(derived), float_p.name, label, meta=True)
    return Link(frm, to, diff is None, diff or "")


def _float_to_int(float_p: Path, fnet: FloatNet, net_p: Path, inet: IntNet, target: Any) -> Link:
    """Link FloatNet -> IntNet: the IntNet's record, the FloatNet's hash, target.to_fixed_point again (at the
    IntNet's max_timesteps)."""
    frm, to = str(float_p), str(net_p)
    rec = float_net_record(inet.meta)
    if rec is None:
        return Link(frm, to, False, f"{net_p.name} records no FloatNet (no made_from: written before na-deploy "
                                    f"recorded the chain); {RERUN_ADVICE}")
    why = _sha_mismatch(float_p, rec, "FloatNet", net_p.name)
    if why:
        return Link(frm, to, False, why)
    label = f"to_fixed_point({float_p.name})"
    try:
        derived = target.to_fixed_point(fnet, max_timesteps=inet.meta.get("max_timesteps"))
    except NaDeployError as e:
        return Link(frm, to, False, f"{target.name} {label} fails: {e}")
    diff = compare_nets(inet, _roundtrip(derived), net_p.name, label)
    return Link(frm, to, diff is None, diff or "")


def recorded_float_path(net_path: str | os.PathLike, inet: IntNet) -> Path:
    """Where the IntNet's FloatNet is: the sibling file its record names, else the `convert` naming rule."""
    rec = float_net_record(inet.meta)
    return Path(net_path).with_name(rec["file"]) if rec and rec.get("file") else float_path_for(net_path)


def check_chain(int_net_path: str | os.PathLike, against_path: str | os.PathLike, target: Any) -> ChainReport:
    """Check the chain from `against_path` (a QAT checkpoint, or the FloatNet) to the IntNet at `int_net_path`.

    Raises NaDeployError (one line) for a request that cannot be checked: a file missing or unreadable, an
    IntNet given where the FloatNet belongs, a checkpoint that is not QAT. Everything the chain itself gets
    wrong (missing records, hashes, content, the FloatNet sibling missing) is a broken link in the report."""
    net_p, against_p = Path(int_net_path), Path(against_path)
    for p in (net_p, against_p):
        if not p.is_file():
            raise NaDeployError(f"{p}: file not found")
    inet = _load_flavour(net_p, IntNet, "the fixed-point IntNet written by `na-deploy convert` (e.g. net.nad.h5)")
    report = ChainReport(str(net_p), str(against_p))
    if h5py.is_hdf5(against_p):
        fnet = _load_flavour(against_p, FloatNet, f"the QAT checkpoint or the FloatNet (*{FLOAT_SUFFIX}) "
                                                  f"{net_p.name} was made from")
        report.links.append(_float_to_int(against_p, fnet, net_p, inet, target))
        return report
    ckpt = _load_qat_checkpoint(against_p)
    float_p = recorded_float_path(net_p, inet)
    try:
        fnet = _load_flavour(float_p, FloatNet, f"the FloatNet {net_p.name} was made from")
    except NaDeployError as e:
        why = str(e)
        if not float_p.is_file():
            why = (f"its FloatNet {float_p.name} is missing (keep the files `na-deploy convert` writes together)"
                   if float_net_record(inet.meta) else
                   f"{net_p.name} records no FloatNet and {float_p.name} is missing; {RERUN_ADVICE}")
        report.links += [Link(str(against_p), str(float_p), False, why), Link(str(float_p), str(net_p), False, why)]
        return report
    report.links.append(_ckpt_to_float(against_p, ckpt, float_p, fnet))
    report.links.append(_float_to_int(float_p, fnet, net_p, inet, target))
    return report


__all__ = ["KINDS", "sha256_file", "made_from", "float_net_record", "checkpoint_record", "float_path_for",
           "recorded_float_path", "save_net_pair", "check_chain", "compare_nets", "ChainReport", "Link",
           "FLOAT_SUFFIX", "NET_SUFFIX", "UNCOMPARED_META"]
