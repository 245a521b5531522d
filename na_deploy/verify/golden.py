"""Golden traces: a file of reference spike counts that later runs (another backend, a re-export, a new
toolchain) must reproduce exactly, and the content hash of a net (`net_digest`).

File format (`*.golden.npz`, format "na-deploy-golden", version 1): a zip archive of `.npy` members (deflated)
that `numpy.load(path, allow_pickle=False)` reads. Keys:

    format            0-d str      "na-deploy-golden"
    format_version    0-d int64    1
    timesteps         0-d int64    T the trace was recorded at
    sample_ids        (N,) int64   which samples of the data set these are (e.g. test-set indices)
    inputs            (N, *input_shape) uint8 (int64 if a value is outside 0..255)   the samples themselves
    node_names        (K,) str     the neuron nodes, in topological order
    counts_0000 ...   (N, *node_shape) spike counts of node_names[k] over its window, stored in the
                      smallest integer dtype that holds them (int64 on load)
    readout_name      0-d str      the readout node's name
    readout           (N, classes) int64 final readout potentials
    info              0-d str      JSON (sorted keys): net_digest, timesteps, toolchain versions, target, meta

Deterministic bytes: the archive is written here member by member (sorted key order, fixed 1980-01-01
timestamps, fixed permissions, deflate level 6), so the same content gives the same bytes with the same zlib;
`compare_golden` compares contents, never bytes. Written atomically (temp file + rename).

`net_digest(net)` hashes the IR content, not a file: a re-export (or a FloatNet -> IntNet run) with equal
content has the same digest, whatever the meta (timings, paths) and the HDF5 layout. Encoding (version 1):
SHA-256 over a sequence of records, each `len(key) key tag len(payload) payload` (lengths as 8-byte
little-endian), tag b"J" for a JSON scalar/list (sorted keys, Python `repr` floats: exact) or b"A" for an
array (payload: JSON header {"dtype": little-endian dtype str, "shape": [...]} + NUL + C-order bytes). The
records, in order: "digest" = "na-deploy-net/1", "flavour"; "input.shape", "input.channel_scale"; then for
every node (neuron nodes in topological order, then the readout) with prefix "node.<i>.": "name", "kind"
("neuron"|"readout"), "shape", every other field of the node in sorted field-name order (bias / bias_mant as
arrays, the neuron model by its name), and per synapse with prefix "node.<i>.syn.<j>.": "source", "op" (its
kind), "exponent", then the op's fields in sorted order (weight arrays as arrays, scalars as JSON).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import io
import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from na_deploy.atomic import atomic_path
from na_deploy.checks import check_npz_members
from na_deploy.errors import NaDeployError
from na_deploy.ir import FloatNet, IntNet, NeuronModel
from na_deploy.protocols import Trace

FORMAT_NAME = "na-deploy-golden"
FORMAT_VERSION = 1
DIGEST_VERSION = "na-deploy-net/1"
TOOLCHAIN = ("na-deploy", "lava-nc", "lava-dl", "torch", "numpy")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_SMALL_INTS = (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64)


class GoldenError(NaDeployError):
    """A golden file that cannot be written or read (names the file and the key), or a trace that does not fit
    the golden file's shape (T, samples)."""


# ------------------------------------------------------------------------------------------ net digest
def _record(h: "hashlib._Hash", key: str, tag: bytes, payload: bytes) -> None:
    k = key.encode()
    h.update(struct.pack("<Q", len(k)) + k + tag + struct.pack("<Q", len(payload)) + payload)


def _put(h: "hashlib._Hash", key: str, value: Any) -> None:
    """One record: arrays (numpy) with dtype and shape, everything else as canonical JSON."""
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        head = json.dumps({"dtype": dt.str, "shape": list(a.shape)}, sort_keys=True).encode()
        _record(h, key, b"A", head + b"\0" + a.astype(dt, copy=False).tobytes(order="C"))
        return
    if isinstance(value, NeuronModel):
        value = value.name
    elif isinstance(value, np.generic):
        value = value.item()
    elif isinstance(value, tuple):
        value = [v.item() if isinstance(v, np.generic) else v for v in value]
    _record(h, key, b"J", json.dumps(value, sort_keys=True, allow_nan=True).encode())


def _fields(obj: Any, skip: Iterable[str]) -> list[tuple[str, Any]]:
    return sorted((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name not in set(skip))


def net_digest(net: Union[FloatNet, IntNet]) -> str:
    """SHA-256 (hex) of the net's IR content in the canonical encoding of the module docstring (meta excluded)."""
    if not isinstance(net, (FloatNet, IntNet)):
        raise GoldenError(f"net_digest needs a FloatNet or IntNet, got {type(net).__name__}")
    h = hashlib.sha256()
    _put(h, "digest", DIGEST_VERSION)
    _put(h, "flavour", net.flavour)
    _put(h, "input.shape", tuple(net.input.shape))
    _put(h, "input.channel_scale", np.asarray(net.input.channel_scale))
    for i, node in enumerate(net.all_nodes()):
        pre = f"node.{i}."
        _put(h, pre + "name", node.name)
        _put(h, pre + "kind", "readout" if node is net.readout else "neuron")
        _put(h, pre + "shape", tuple(node.shape))
        for name, value in _fields(node, ("name", "shape", "inputs")):
            _put(h, pre + name, value)
        for j, syn in enumerate(node.inputs):
            sp = f"{pre}syn.{j}."
            _put(h, sp + "source", syn.source)
            _put(h, sp + "op", syn.op.kind)
            _put(h, sp + "exponent", syn.exponent)
            for name, value in _fields(syn.op, ()):
                _put(h, sp + name, value)
    return h.hexdigest()


def toolchain_versions(packages: Sequence[str] = TOOLCHAIN) -> dict[str, Optional[str]]:
    """Installed versions of the packages that decide a trace (None for a missing one)."""
    out: dict[str, Optional[str]] = {}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = None
    return out


# ------------------------------------------------------------------------------------------ the file
@dataclass
class Golden:
    """A loaded golden file: per-node spike counts (int64) and readout potentials of N samples at T."""

    path: str
    timesteps: int
    sample_ids: np.ndarray
    inputs: np.ndarray
    spike_counts: dict[str, np.ndarray]
    readout_name: str
    readout: np.ndarray
    net_digest: str
    versions: dict
    info: dict

    @property
    def samples(self) -> int:
        return int(len(self.sample_ids))

    def trace(self) -> Trace:
        """The stored counts as a Trace (what `target.reference_simulate` gave when the file was written)."""
        return Trace(timesteps=self.timesteps, spike_counts=dict(self.spike_counts), readout=self.readout,
                     extra={"golden": self.path})


def _compact(a: np.ndarray) -> np.ndarray:
    """Integer counts in the smallest integer dtype that holds their range (deterministic in the content)."""
    a = np.asarray(a)
    lo, hi = int(a.min()), int(a.max())
    for dt in _SMALL_INTS:
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return a.astype(dt)
    return a.astype(np.int64)


def _check_write(net: IntNet, inputs: np.ndarray, trace: Trace, ids: np.ndarray, T: int, path: Path) -> None:
    n = len(ids)
    if n == 0 or len(np.unique(ids)) != n or ids.min() < 0:
        raise GoldenError(f"{path}: sample_ids must be distinct non-negative integers, one per sample (at least one)")
    if int(trace.timesteps) != T:
        raise GoldenError(f"{path}: the trace was recorded at T={trace.timesteps}, not T={T}")
    if inputs.shape != (n, *net.input.shape):
        raise GoldenError(f"{path}: inputs have shape {inputs.shape}, expected ({n}, "
                          f"{', '.join(map(str, net.input.shape))}) for {n} sample ids")
    for node in net.nodes:
        c = trace.spike_counts.get(node.name)
        if c is None or tuple(np.shape(c)) != (n, *node.shape):
            got = "missing" if c is None else f"shape {tuple(np.shape(c))}"
            raise GoldenError(f"{path}: trace counts of node {node.name} are {got}, expected {(n, *node.shape)}")
    if tuple(np.shape(trace.readout)) != (n, *net.readout.shape):
        raise GoldenError(f"{path}: trace readout has shape {tuple(np.shape(trace.readout))}, expected "
                          f"{(n, *net.readout.shape)}")


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An npz archive (members `<key>.npy` in sorted order) with no timestamps: same arrays, same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[key]), allow_pickle=False)
            zi = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            zi.create_system = 3
            zf.writestr(zi, member.getvalue(), compresslevel=6)
    return buf.getvalue()


def write_golden(path: str | Path, net: IntNet, inputs: Any, trace: Trace, sample_ids: Any, T: int,
                 versions: Optional[dict] = None, meta: Optional[dict] = None) -> Path:
    """Store `trace` (the reference's counts of `inputs` at T) as a golden file; returns its path.

    `sample_ids`: one per sample (e.g. the test-set indices), distinct. `versions`: default
    `toolchain_versions()`. `meta`: extra JSON-able facts recorded in `info` (e.g. the backend label)."""
    path = Path(path)
    if not isinstance(net, IntNet):
        raise GoldenError(f"{path}: golden traces are of an IntNet, got {type(net).__name__}")
    ids = np.asarray(sample_ids).reshape(-1)
    if not np.issubdtype(ids.dtype, np.integer) and ids.size:
        raise GoldenError(f"{path}: sample_ids must be integers, got {ids.dtype}")
    ids = ids.astype(np.int64)
    x = np.asarray(inputs)
    if not np.issubdtype(x.dtype, np.integer) and x.dtype != np.bool_:
        raise GoldenError(f"{path}: inputs must be integer pixels, got {x.dtype}")
    _check_write(net, x, trace, ids, int(T), path)
    x = x.astype(np.uint8) if 0 <= x.min() and x.max() <= 255 else x.astype(np.int64)
    versions = toolchain_versions() if versions is None else versions
    info = {"net_digest": net_digest(net), "timesteps": int(T), "versions": dict(versions),
            "target": net.meta.get("target"), "meta": dict(meta or {})}
    arrays = {"format": np.asarray(FORMAT_NAME), "format_version": np.asarray(FORMAT_VERSION, dtype=np.int64),
              "timesteps": np.asarray(int(T), dtype=np.int64), "sample_ids": ids, "inputs": x,
              "node_names": np.asarray([n.name for n in net.nodes], dtype=str),
              "readout_name": np.asarray(net.readout.name),
              "info": np.asarray(json.dumps(info, sort_keys=True, default=str)),
              "readout": np.asarray(trace.readout, dtype=np.int64)}
    for k, node in enumerate(net.nodes):
        arrays[f"counts_{k:04d}"] = _compact(trace.spike_counts[node.name])
    data = npz_bytes(arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------ reading
_KEYS = ("format", "format_version", "timesteps", "sample_ids", "inputs", "node_names", "readout_name",
         "readout", "info")


def _get(z: Any, key: str, path: Path, ndim: Optional[int] = None, kind: str = "") -> np.ndarray:
    """One member of the archive, with its dimensionality and dtype kind ("i" integer, "U" str) checked."""
    if key not in z.files:
        raise GoldenError(f"{path}: missing key {key!r} (corrupt or not a golden file)")
    try:
        a = z[key]
    except Exception as e:  # noqa: BLE001 -- numpy's .npy reader raises many types (SyntaxError too) on bad bytes
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GoldenError(f"{path}: key {key!r} cannot be read ({msg})") from None
    if ndim is not None and a.ndim != ndim:
        raise GoldenError(f"{path}: key {key!r} has {a.ndim} dimensions, expected {ndim}")
    if kind == "i" and not np.issubdtype(a.dtype, np.integer):
        raise GoldenError(f"{path}: key {key!r} has dtype {a.dtype}, expected an integer type")
    if kind == "U" and a.dtype.kind != "U":
        raise GoldenError(f"{path}: key {key!r} has dtype {a.dtype}, expected a string")
    return a


def _rows(a: np.ndarray, n: int, key: str, path: Path) -> np.ndarray:
    if a.ndim < 2 or a.shape[0] != n:
        raise GoldenError(f"{path}: key {key!r} has shape {a.shape}, expected ({n}, ...) (one row per sample id)")
    return a


def _read(z: Any, path: Path) -> Golden:
    fmt = str(_get(z, "format", path, 0, "U"))
    if fmt != FORMAT_NAME:
        raise GoldenError(f"{path}: key 'format' is {fmt!r}, expected {FORMAT_NAME!r}")
    ver = int(_get(z, "format_version", path, 0, "i"))
    if ver != FORMAT_VERSION:
        raise GoldenError(f"{path}: key 'format_version' is {ver}; this na-deploy reads version {FORMAT_VERSION} "
                          "(re-record it with `na-deploy verify --write-golden`)")
    T = int(_get(z, "timesteps", path, 0, "i"))
    if T < 1:
        raise GoldenError(f"{path}: key 'timesteps' is {T}, expected >= 1")
    ids = _get(z, "sample_ids", path, 1, "i").astype(np.int64)
    n = len(ids)
    if n == 0 or len(np.unique(ids)) != n:
        raise GoldenError(f"{path}: key 'sample_ids' must hold at least one id, each once")
    inputs = _rows(_get(z, "inputs", path, None, "i"), n, "inputs", path)
    names = [str(v) for v in _get(z, "node_names", path, 1, "U")]
    if len(set(names)) != len(names):
        raise GoldenError(f"{path}: key 'node_names' repeats a name")
    want = {f"counts_{k:04d}" for k in range(len(names))}
    extra = sorted(k for k in z.files if k not in want and k not in _KEYS)
    if extra:
        raise GoldenError(f"{path}: unexpected key {extra[0]!r} (node_names lists {len(names)} nodes)")
    counts = {nm: _rows(_get(z, f"counts_{k:04d}", path, None, "i"), n, f"counts_{k:04d}", path).astype(np.int64)
              for k, nm in enumerate(names)}
    readout = _rows(_get(z, "readout", path, 2, "i"), n, "readout", path).astype(np.int64)
    try:
        info = json.loads(str(_get(z, "info", path, 0, "U")))
    except json.JSONDecodeError as e:
        raise GoldenError(f"{path}: key 'info' is not JSON ({e.msg})") from None
    digest = info.get("net_digest") if isinstance(info, dict) else None
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise GoldenError(f"{path}: key 'info' holds no net_digest (64 hex digits)")
    return Golden(path=str(path), timesteps=T, sample_ids=ids, inputs=inputs, spike_counts=counts,
                  readout_name=str(_get(z, "readout_name", path, 0, "U")), readout=readout, net_digest=digest,
                  versions=dict(info.get("versions") or {}), info=info)


def load_golden(path: str | Path) -> Golden:
    """Read and validate a golden file; every problem is a one-line GoldenError naming the file (and key)."""
    path = Path(path)
    if not path.is_file():
        raise GoldenError(f"{path}: no such golden file")
    try:
        check_npz_members(path, GoldenError, "golden file")  # before numpy allocates what a header claims
        with np.load(path, allow_pickle=False) as z:
            return _read(z, path)
    except GoldenError:
        raise
    except Exception as e:  # noqa: BLE001 -- numpy's readers raise many types on bad bytes
        msg = str(e).splitlines()[0] if str(e) else ""
        raise GoldenError(f"{path}: not a readable golden file (truncated or corrupt?): {type(e).__name__}: "
                          f"{msg}") from None


# ------------------------------------------------------------------------------------------ comparing
def digest_note(golden: Golden, net: Any) -> Optional[str]:
    """A note (not a difference) when `net`'s content is not the one the golden file was recorded with."""
    return None if net is None else _note(golden, net_digest(net))


def _note(golden: Golden, now: str) -> Optional[str]:
    if now == golden.net_digest:
        return None
    return (f"the net's content differs from the one {Path(golden.path).name} was recorded with (net digest "
            f"{now[:12]} vs {golden.net_digest[:12]}); its traces are compared all the same")


def _check_trace(golden: Golden, trace: Trace) -> None:
    if int(trace.timesteps) != golden.timesteps:
        raise GoldenError(f"{golden.path}: recorded at T={golden.timesteps}, the trace is at T={trace.timesteps}; "
                          f"run with --timesteps {golden.timesteps}")
    if trace.batch != golden.samples:
        raise GoldenError(f"{golden.path}: holds {golden.samples} samples, the trace has {trace.batch}; run the "
                          "golden file's own inputs")


def _structure_difference(golden: Golden, trace: Trace) -> Optional[dict]:
    """A node present on one side only, or of another shape (reported at the first sample)."""
    first = int(golden.sample_ids[0])
    for name, g in [*golden.spike_counts.items(), (golden.readout_name, golden.readout)]:
        got = trace.readout if name == golden.readout_name else trace.spike_counts.get(name)
        if got is None:
            return {"sample": first, "position": 0, "node": name, "neuron": None, "golden": "present", "got": "missing"}
        if tuple(np.shape(got)) != g.shape:
            return {"sample": first, "position": 0, "node": name, "neuron": None,
                    "golden": f"shape {g.shape[1:]}", "got": f"shape {tuple(np.shape(got))[1:]}"}
    for name in trace.spike_counts:
        if name not in golden.spike_counts:
            return {"sample": first, "position": 0, "node": name, "neuron": None, "golden": "missing", "got": "present"}
    return None


def _value_difference(golden: Golden, trace: Trace) -> Optional[dict]:
    """The first (sample, then node in order with the readout last, then neuron) whose value differs."""
    pairs = [(k, g, np.asarray(trace.spike_counts[k])) for k, g in golden.spike_counts.items()]
    pairs.append((golden.readout_name, golden.readout, np.asarray(trace.readout)))
    n = golden.samples
    bad = np.zeros(n, dtype=bool)
    for _, g, t in pairs:
        bad |= (g != t).reshape(n, -1).any(axis=1)
    if not bad.any():
        return None
    s = int(np.flatnonzero(bad)[0])
    for name, g, t in pairs:
        if not np.array_equal(g[s], t[s]):
            idx = tuple(int(i) for i in np.argwhere(g[s] != t[s])[0])
            return {"sample": int(golden.sample_ids[s]), "position": s, "node": name, "neuron": list(idx),
                    "golden": int(g[s][idx]), "got": int(t[s][idx])}
    return None  # unreachable: bad[s] means some pair differs at s


def compare_golden(golden: Golden, trace: Trace, net: Any = None) -> Optional[dict]:
    """None when `trace` (of the golden file's own inputs, at its T) equals the golden counts and readout
    exactly; else the first difference {sample (its id), position (row), node, neuron, golden, got}, plus a
    `note` when `net` is given and its digest is not the recorded one (a note, never a difference: golden
    traces are meant to survive re-exports). GoldenError when T or the number of samples differ."""
    _check_trace(golden, trace)
    diff = _structure_difference(golden, trace) or _value_difference(golden, trace)
    note = digest_note(golden, net) if diff is not None else None
    return diff if not note else {**diff, "note": note}


def golden_report(golden: Golden, trace: Trace, net: Any = None) -> dict:
    """The verify report's "golden" entry: file, samples, T, equal, first_difference, both digests, note."""
    diff = compare_golden(golden, trace)
    now = None if net is None else net_digest(net)
    return {"file": golden.path, "samples": golden.samples, "timesteps": golden.timesteps, "equal": diff is None,
            "first_difference": diff, "net_digest": golden.net_digest, "net_digest_now": now,
            "note": None if now is None else _note(golden, now), "versions": dict(golden.versions)}

__all__ = ["write_golden", "load_golden", "compare_golden", "golden_report", "digest_note", "net_digest",
           "toolchain_versions", "Golden", "GoldenError", "FORMAT_NAME", "FORMAT_VERSION", "npz_bytes"]
