"""Issue 22, the fault-injection suite: a fuzzer over every loader. Property: whatever the file holds, a
loader gives a valid result or a one-line error of a `na_deploy.errors` type (or click's usage error), never
another exception (a traceback on the CLI).

Loaders: .nad.h5 (IntNet and FloatNet), NIR, npz data, golden .npz (and a .npy given as one), checkpoint (.pt),
image folder, verify shard JSON (`verify-merge`). Mutations of real files the tests make: byte flips,
overwritten runs, truncation; edited fields (a value replaced by NaN / inf / a fraction / a negative or huge
number / a string / an array of another shape or dtype, or deleted); huge declared sizes (an HDF5 dataset or a
.npy header declaring far more elements than the file holds). Hypothesis runs derandomized with a fixed number
of examples, so CI sees the same cases every time (hypothesis 6.148.7)."""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import click
import h5py
import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis", reason="the fuzzer needs hypothesis (the project's test extra)")
from hypothesis import HealthCheck, assume, given, settings, strategies as st  # noqa: E402

from na_deploy.errors import NaDeployError  # noqa: E402
from na_deploy.io import load_net, save_net  # noqa: E402
from na_deploy.io.nir_io import load_nir, write_nir  # noqa: E402
from na_deploy.ir import Dense, FloatNet, InputNode, NeuronNode, ReadoutNode, Synapse  # noqa: E402
from na_deploy.testing import random_intnet  # noqa: E402

EXAMPLES = 30
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

HOSTILE_SCALARS = [float("nan"), float("inf"), -float("inf"), -1, 0, 2.5, 1 << 40, -(1 << 63), "", "x", True]
HOSTILE_ARRAYS = [np.array([]), np.array([np.nan, 1.0]), np.array([[1.5, 2.0]]), np.array([1 << 31, 1 << 31]),
                  np.array(["a", "b"]), np.zeros((0, 3)), np.full((2, 2), np.inf), np.arange(3, dtype=np.int8)]
HOSTILE = HOSTILE_SCALARS + HOSTILE_ARRAYS


def outcome(load, *args):
    """`load(*args)`: its result, or None after a one-line error of an allowed type (any other exception
    propagates and fails the property)."""
    try:
        return load(*args)
    except (NaDeployError, click.UsageError) as e:
        msg = str(e)
        assert msg.strip() and "\n" not in msg.strip(), f"not one line: {msg!r}"
        return None


# ------------------------------------------------------------------------------------------ mutations
@st.composite
def byte_edits(draw, size: int):
    """(kind, position, length, byte) of one byte mutation of a file of `size` bytes."""
    kind = draw(st.sampled_from(["flip", "run", "truncate"]))
    pos = draw(st.integers(0, size - 1))
    return kind, pos, draw(st.integers(1, 64)), draw(st.integers(0, 255))


def mutate(data: bytes, edit) -> bytes:
    kind, pos, length, value = edit
    if kind == "truncate":
        return data[:pos]
    b = bytearray(data)
    if kind == "flip":
        b[pos] ^= value or 0xFF
    else:
        b[pos:pos + length] = bytes([value]) * len(b[pos:pos + length])
    return bytes(b)


def h5_items(path: Path) -> list[tuple[str, str]]:
    """("attr", "group/path@name") and ("dataset", "path") of every attribute and dataset of an HDF5 file."""
    out = []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            out.extend(("attr", f"{name}@{a}") for a in obj.attrs)
            if isinstance(obj, h5py.Dataset):
                out.append(("dataset", name))
        out.extend(("attr", f"/@{a}") for a in f.attrs)
        f.visititems(visit)
    return sorted(out)


def edit_h5(src: Path, dst: Path, item: tuple[str, str], value, how: str) -> None:
    """Copy `src` to `dst` with one attribute or dataset replaced by `value`, deleted, or (datasets) declared
    with a huge shape and no data."""
    shutil.copyfile(src, dst)
    kind, where = item
    with h5py.File(dst, "r+") as f:
        if kind == "attr":
            group, name = where.split("@", 1)
            if how == "delete":
                del f[group].attrs[name]
            else:
                f[group].attrs[name] = value
            return
        parent, name = where.rsplit("/", 1) if "/" in where else ("/", where)
        old = f[where]
        dtype = old.dtype
        del f[parent][name]
        if how == "huge":
            f[parent].create_dataset(name, shape=(1 << 20, 1 << 20), dtype=dtype, chunks=(16, 16))
        elif how != "delete":
            f[parent][name] = value


def h5_edit_case(draw, src: Path) -> tuple:
    item = draw(st.sampled_from(h5_items(src)))
    how = draw(st.sampled_from(["set", "delete", "huge"] if item[0] == "dataset" else ["set", "delete"]))
    return item, draw(st.sampled_from(HOSTILE)), how


def write_edited_h5(src: Path, dst: Path, case) -> None:
    item, value, how = case
    try:
        edit_h5(src, dst, item, value, how)
    except (TypeError, ValueError, OSError, KeyError):  # h5py cannot store that value there: not a case
        assume(False)


def npy_header_bytes(shape, dtype="<u1") -> bytes:
    """A .npy member whose header declares `shape` but which holds 16 bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue() + bytes(16)


def edit_npz(src: Path, dst: Path, key: str, value, how: str) -> None:
    """Copy the npz `src` to `dst` with member `key` replaced by `value`, deleted, or by a huge header."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename != f"{key}.npy":
                zout.writestr(info, zin.read(info))
            elif how == "huge":
                zout.writestr(info.filename, npy_header_bytes((100000, 100000)))
            elif how == "set":
                member = io.BytesIO()
                np.save(member, np.asarray(value), allow_pickle=False)
                zout.writestr(info.filename, member.getvalue())


def npz_edit_case(draw, keys: list[str]) -> tuple:
    return (draw(st.sampled_from(keys)), draw(st.sampled_from(HOSTILE)),
            draw(st.sampled_from(["set", "delete", "huge"])))


# ------------------------------------------------------------------------------------------ the files
def small_floatnet() -> FloatNet:
    rng = np.random.default_rng(0)
    inp = InputNode((1, 4, 4), np.array([0.01]))
    fc = NeuronNode(name="fc0", shape=(6,), inputs=[Synapse("input", Dense(rng.normal(size=(6, 16))), 0)],
                    bias=rng.normal(size=6), threshold=1.5, p=2)
    ro = ReadoutNode(name="out", shape=(3,), inputs=[Synapse("fc0", Dense(rng.normal(size=(3, 6))), 0)],
                     bias=np.zeros(3))
    return FloatNet(inp, [fc], ro, {"name": "fuzz"})


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("fuzz")
    out = {"dir": d}
    inet = random_intnet(np.random.default_rng(0), "conv_chain")
    save_net(inet, d / "int.nad.h5")
    save_net(small_floatnet(), d / "float.nad.h5")
    write_nir(inet, d / "net.nir")
    rng = np.random.default_rng(1)
    np.savez(d / "data.npz", x_train=rng.integers(0, 256, (12, 1, 4, 4), dtype=np.uint8),
             y_train=np.arange(12) % 3, x_test=rng.integers(0, 256, (6, 1, 4, 4), dtype=np.uint8),
             y_test=np.arange(6) % 3)
    from na_deploy.hw_targets.loihi2 import TARGET
    from na_deploy.verify.golden import write_golden

    x = rng.integers(0, 256, (3, *inet.input.shape), dtype=np.uint8)
    write_golden(d / "g.golden.npz", inet, x, TARGET.reference_simulate(inet, x, 4), np.arange(3), 4)
    np.save(d / "g.npy", x)
    out["ckpt"] = _checkpoint(d / "q.pt")
    _image_folder(d / "images")
    for k, ids in (("s1", [0, 2]), ("s2", [1, 3])):
        (d / f"{k}.json").write_text(json.dumps(_shard_report(ids, f"{k[1]}/2")))
    return out


def _checkpoint(path: Path) -> Path:
    from na_deploy.models import build_model
    from na_deploy.training.checkpoint import Checkpoint, cpu_state_dict, save_checkpoint
    from na_deploy.training.surgery import quantize_model

    torch.manual_seed(0)
    model = quantize_model(build_model("digits_cnn", 1, 10, 8), 2, False)
    ck = Checkpoint(kind="qat", model_name="digits_cnn", model_kwargs={"in_channels": 1, "num_classes": 10,
                    "input_size": 8}, input_shape=(1, 8, 8), num_classes=10, channel_scale=(0.0123,),
                    state_dict=cpu_state_dict(model), data_fingerprint="x", seed=0, p=2, noise_adaptor=False)
    return save_checkpoint(ck, path)


def _image_folder(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(2)
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 256, (5, 5), dtype=np.uint8)).save(root / split / cls / f"{k}.png")


def _shard_report(ids, shard: str) -> dict:
    per = [{"sample": k, "equal": True, "first": None} for k in ids]
    return {"equal": True, "samples": len(ids), "timesteps": 4,
            "layers": [{"node": "fc0", "reference": 7, "lava": 7, "equal": True}], "readout_equal": True,
            "mismatching_samples": 0, "first_mismatch": None, "seconds": {"reference": 1.0, "lava": 2.0},
            "backend": "lava", "sample_ids": list(ids), "per_sample": per, "net_digest": "d", "data": "digits",
            "shard": shard}


# ------------------------------------------------------------------------------------------ loaders
def load_folder_and_decode(root: Path):
    from na_deploy.data.image_folder import load_folder
    from na_deploy.data.loaders import first_test_images

    ds = load_folder(root)
    return first_test_images(ds, 4)


def load_golden(path: Path):
    from na_deploy.verify.golden import load_golden as load

    return load(path)


def load_npz(path: Path):
    from na_deploy.data.arrays import load_dataset

    ds = load_dataset(str(path))
    return ds.x_test[:2], ds.normalization


def load_checkpoint(path: Path):
    from na_deploy.training.checkpoint import load_checkpoint as load

    return load(path)


def merge(paths):
    from na_deploy.verify.shards import load_report, merge_reports

    return merge_reports([load_report(p) for p in paths], names=[str(p) for p in paths])


BYTE_LOADERS = {"int.nad.h5": load_net, "float.nad.h5": load_net, "net.nir": load_nir, "data.npz": load_npz,
                "g.golden.npz": load_golden, "g.npy": load_golden, "q.pt": load_checkpoint}


# ------------------------------------------------------------------------------------------ properties
@pytest.mark.parametrize("name", sorted(BYTE_LOADERS))
@FUZZ
@given(data=st.data())
def test_byte_mutations_give_a_result_or_one_line(files, name, data):
    src = files["dir"] / name
    raw = src.read_bytes()
    bad = files["dir"] / f"mut.{name}"
    bad.write_bytes(mutate(raw, data.draw(byte_edits(len(raw)))))
    outcome(BYTE_LOADERS[name], bad)


@pytest.mark.parametrize("name", ["int.nad.h5", "float.nad.h5", "net.nir"])
@FUZZ
@given(data=st.data())
def test_edited_hdf5_fields_give_a_result_or_one_line(files, name, data):
    src = files["dir"] / name
    bad = files["dir"] / f"edit.{name}"
    write_edited_h5(src, bad, h5_edit_case(data.draw, src))
    outcome(load_net if name.endswith(".nad.h5") else load_nir, bad)


@pytest.mark.parametrize("name", ["data.npz", "g.golden.npz"])
@FUZZ
@given(data=st.data())
def test_edited_npz_members_give_a_result_or_one_line(files, name, data):
    src = files["dir"] / name
    with zipfile.ZipFile(src) as z:
        keys = sorted(n[:-4] for n in z.namelist())
    bad = files["dir"] / f"edit.{name}"
    edit_npz(src, bad, *npz_edit_case(data.draw, keys))
    outcome(load_npz if name == "data.npz" else load_golden, bad)


@FUZZ
@given(data=st.data())
def test_edited_checkpoint_fields_give_a_result_or_one_line(files, data):
    raw = torch.load(files["ckpt"], map_location="cpu", weights_only=True)
    key = data.draw(st.sampled_from(sorted(raw)))
    value = data.draw(st.sampled_from([None, [], {}, [100000, 100000, 100000], {"a": 1}, *HOSTILE_SCALARS]))
    raw[key] = value
    bad = files["dir"] / "edit.q.pt"
    torch.save(raw, bad)
    outcome(load_checkpoint, bad)


@FUZZ
@given(data=st.data())
def test_mutated_image_folders_give_a_result_or_one_line(files, data):
    root = files["dir"] / "mut-images"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(files["dir"] / "images", root)
    victim = data.draw(st.sampled_from(sorted(p for p in root.rglob("*.png"))))
    how = data.draw(st.sampled_from(["bytes", "empty", "text", "directory"]))
    if how == "bytes":
        raw = victim.read_bytes()
        victim.write_bytes(mutate(raw, data.draw(byte_edits(len(raw)))))
    elif how == "directory":
        victim.unlink()
        victim.mkdir()
    else:
        victim.write_bytes(b"" if how == "empty" else b"not an image\n")
    outcome(load_folder_and_decode, root)


def _json_paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for k, v in enumerate(obj):
            yield from _json_paths(v, (*prefix, k))


@FUZZ
@given(data=st.data())
def test_edited_shard_json_gives_a_result_or_one_line(files, data):
    rep = json.loads((files["dir"] / "s1.json").read_text())
    path = data.draw(st.sampled_from(list(_json_paths(rep))[1:]))
    value = data.draw(st.sampled_from([None, [], {}, -1, 0, 1e308, float("nan"), "x", True, [1, "a"],
                                       {"sample": None}, 1 << 70]))
    target = rep
    for k in path[:-1]:
        target = target[k]
    if data.draw(st.booleans()) and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = value
    bad = files["dir"] / "edit.s1.json"
    bad.write_text(json.dumps(rep))
    outcome(merge, [bad, files["dir"] / "s2.json"])


@FUZZ
@given(data=st.data())
def test_mutated_shard_json_bytes_give_a_result_or_one_line(files, data):
    raw = (files["dir"] / "s1.json").read_bytes()
    bad = files["dir"] / "mut.s1.json"
    bad.write_bytes(mutate(raw, data.draw(byte_edits(len(raw)))))
    outcome(merge, [bad, files["dir"] / "s2.json"])


def test_the_unmutated_files_load(files):
    """The fuzzer's seeds are valid: each loader accepts the file it mutates."""
    d = files["dir"]
    for name, load in BYTE_LOADERS.items():
        if name != "g.npy":
            assert load(d / name) is not None, name
    assert outcome(load_golden, d / "g.npy") is None  # a bare .npy is not a golden file: one line
    assert load_folder_and_decode(d / "images")[0].shape == (4, 1, 5, 5)
    assert merge([d / "s1.json", d / "s2.json"])["passed"]
