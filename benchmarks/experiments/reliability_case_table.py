"""The cases of `reliability_cases.py` (issue 22's acceptance table): the command lines, the exit code each
must give, and the files each needs (the setups below write them into the case's folder)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

NA = str(Path(sys.executable).with_name("na-deploy"))


@dataclass
class Case:
    name: str
    category: str
    argv: str  # after `na-deploy`; {w} is the case folder, files of the run are copied into it
    expect: int
    setup: Optional[Callable[[Path], None]] = None
    absent: tuple = ()  # outputs that must not exist after a refusal (relative to {w})
    keep: tuple = ("net.nad.h5",)  # inputs whose bytes must not change
    read_only: bool = False  # {w}/ro is a read-only file system for the command
    fsize_kib: Optional[int] = None  # ulimit -f
    beside: Optional[str] = None  # a command started 4 s before this one (then sent SIGTERM)


# ------------------------------------------------------------------------------------------ setups
def garbage(name: str, data: bytes = b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4):
    return lambda w: (w / name).write_bytes(data)


def truncated(src: str, name: str):
    return lambda w: (w / name).write_bytes((w / src).read_bytes()[: (w / src).stat().st_size // 2])


def h5_edit(name: str, edit: Callable):
    def setup(w: Path):
        import h5py

        shutil.copyfile(w / "net.nad.h5", w / name)
        with h5py.File(w / name, "r+") as f:
            edit(f, f["nodes"][sorted(f["nodes"])[0]])
    return setup


def _huge_weight(f, g):
    syn = g["inputs"][sorted(g["inputs"])[0]]
    dtype = syn["weight"].dtype
    del syn["weight"]
    syn.create_dataset("weight", shape=(1 << 20, 1 << 20), dtype=dtype, chunks=(16, 16))


def nir_file(name: str, edit: Optional[Callable] = None):
    def setup(w: Path):
        import nir

        subprocess.run([NA, "export", str(w / "net.nad.h5"), "--format", "nir", "--out", str(w / "m.nir")],
                       capture_output=True, check=True)
        if edit is None:
            return
        g = nir.read(w / "m.nir")
        edit(g)
        nir.write(w / name, nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata=g.metadata, type_check=False))
    return setup


def _nir_threshold_nan(g):
    import nir
    import numpy as np

    n = next(v for v in g.nodes.values() if isinstance(v, nir.IF))
    n.v_threshold = np.full(np.shape(n.v_threshold), np.nan)


def _nir_drop_edge(g):
    g.edges = list(g.edges)[:-1]


def checkpoint_field(key: str, value):
    def setup(w: Path):
        import torch

        raw = torch.load(w / "qat.ckpt", map_location="cpu", weights_only=True)
        raw[key] = value
        torch.save(raw, w / "bad.ckpt")
    return setup


def npz(name: str, **over):
    def setup(w: Path):
        import numpy as np

        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (20, 1, 8, 8), dtype=np.uint8)
        arrays = {"x_train": x, "y_train": np.arange(20) % 10, "x_test": x[:10], "y_test": np.arange(10)}
        arrays.update(over)
        np.savez(w / name, **{k: v for k, v in arrays.items() if v is not None})
    return setup


def npz_huge(w: Path):
    import io
    import zipfile

    import numpy as np

    npz("d.npz")(w)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<i8", "fortran_order": False, "shape": (10 ** 10, 8)})
    with zipfile.ZipFile(w / "d.npz") as zin, zipfile.ZipFile(w / "huge.npz", "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, head.getvalue() + bytes(16) if info.filename == "x_test.npy" else zin.read(info))


def images(corrupt: bool, size: int = 8):
    def setup(w: Path):
        import numpy as np
        from PIL import Image

        for split in ("train", "val"):
            for cls in ("a", "b"):
                (w / "img" / split / cls).mkdir(parents=True)
                for k in range(2):
                    Image.fromarray(np.full((size, size), 40 * k, np.uint8)).save(w / "img" / split / cls / f"{k}.png")
        if corrupt:
            (w / "img" / "val" / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return setup


def shards(edit: Optional[Callable] = None):
    def setup(w: Path):
        import json

        for k, ids in ((1, [0, 2]), (2, [1, 3])):
            rep = {"equal": True, "samples": 2, "timesteps": 4, "readout_equal": True, "mismatching_samples": 0,
                   "layers": [{"node": "fc0", "reference": 7, "lava": 7, "equal": True}], "first_mismatch": None,
                   "seconds": {"reference": 1.0, "lava": 2.0}, "backend": "lava", "sample_ids": ids,
                   "per_sample": [{"sample": i, "equal": True, "first": None} for i in ids], "net_digest": "d",
                   "data": "digits", "shard": f"{k}/2"}
            if edit is not None and k == 1:
                edit(rep)
            (w / f"s{k}.json").write_text(json.dumps(rep))
    return setup


def special(kind: str):
    def setup(w: Path):
        if kind == "fifo":
            os.mkfifo(w / "fifo")
        elif kind == "dir":
            (w / "dir").mkdir()
        elif kind == "hardlink":
            os.link(w / "net.nad.h5", w / "alias.nad.h5")
        else:
            os.symlink(w / "net.nad.h5", w / "link.json")
    return setup


def all_of(*setups):
    return lambda w: [s(w) for s in setups]


def _nan_threshold(f, g):
    g.attrs["threshold"] = float("nan")


def _half_threshold(f, g):
    g.attrs["threshold"] = 22500.5


def _layers_null(rep):
    rep["layers"] = None


def _equal_but_bad_sample(rep):
    rep["per_sample"][0]["equal"] = False


N, RO = "{w}/net.nad.h5", "{w}/ro"
SIM = f"simulate {N} --samples 5 --timesteps 2 --quiet"
VER = f"verify {N} --samples 2 --timesteps 2 --quiet --skip-fidelity"
PIPE = "pipeline --epochs-fp 1 --epochs-qat 1 --verify-samples 0 --eval-samples 20 --timesteps 2"
FAST = "report {w}/net.nad.h5 --samples 0"
CASES = [Case(*row[:4], **(row[4] if len(row) > 4 else {})) for row in [
    # outputs onto inputs, and onto what is not a regular file
    ("convert onto its checkpoint", "overwrite", "convert {w}/qat.ckpt --out {w}/qat.ckpt", 2, {"keep": ("qat.ckpt",)}),
    ("verify --json onto the net", "overwrite", f"{VER} --json {N}", 2),
    ("verify --junit onto the net", "overwrite", f"{VER} --junit {N}", 2),
    ("verify --write-golden onto the net", "overwrite", f"{VER} --write-golden {N}", 2),
    ("simulate --plot onto the net", "overwrite", f"{SIM} --plot {N}", 2),
    ("simulate --json onto the net", "overwrite", f"{SIM} --json {N}", 2),
    ("report --json onto the net", "overwrite", f"{FAST} --json {N}", 2),
    ("report --json onto a hard link of the net", "overwrite", f"{FAST} --json {{w}}/alias.nad.h5", 2,
     {"setup": special("hardlink")}),
    ("report --json onto a symlink to the net", "overwrite", f"{FAST} --json {{w}}/link.json", 2,
     {"setup": special("link")}),
    ("report --json onto a folder", "overwrite", f"{FAST} --json {{w}}/dir", 2, {"setup": special("dir")}),
    ("report --json onto a FIFO", "overwrite", f"{FAST} --json {{w}}/fifo", 2, {"setup": special("fifo")}),
    ("report --json onto /dev/null", "overwrite", f"{FAST} --json /dev/null", 2),
    ("report --json /dev/stdout prints", "overwrite", f"{FAST} --json /dev/stdout", 0),
    ("report --json - prints", "overwrite", f"{FAST} --json -", 0),
    ("verify-merge --json onto a shard", "overwrite", "verify-merge {w}/s1.json {w}/s2.json --json {w}/s1.json", 2,
     {"setup": shards(), "keep": ("s1.json",)}),
    ("export nir onto the net", "overwrite", f"export {N} --format nir --out {N}", 2),
    ("export --force onto the net's folder", "overwrite", f"export {N} --format lava --out {{w}} --force", 2),
    ("import onto its NIR file", "overwrite", "import {w}/m.nir --out {w}/m.nir", 2,
     {"setup": nir_file("m.nir"), "keep": ("m.nir",)}),
    # option values that look like flags
    ("verify --json --quiet", "flag-value", f"verify {N} --json --quiet", 2, {"absent": ("--quiet",)}),
    ("report --json --samples", "flag-value", f"report {N} --json --samples 0", 2, {"absent": ("--samples",)}),
    ("export --out --force", "flag-value", f"export {N} --format nir --out --force", 2, {"absent": ("--force",)}),
    ("import --out --force", "flag-value", "import {w}/m.nir --out --force", 2,
     {"setup": nir_file("m.nir"), "absent": ("--force",)}),
    ("simulate --plot --json", "flag-value", f"{SIM} --plot --json", 2, {"absent": ("--json",)}),
    ("convert --out --quiet", "flag-value", "convert {w}/qat.ckpt --out --quiet", 2, {"absent": ("--quiet",)}),
    # corrupt files, one or more per loader
    ("nad.h5: random bytes", "corrupt", "report {w}/bad.nad.h5 --samples 0", 2, {"setup": garbage("bad.nad.h5")}),
    ("nad.h5: truncated", "corrupt", "report {w}/bad.nad.h5 --samples 0", 2,
     {"setup": truncated("net.nad.h5", "bad.nad.h5")}),
    ("nad.h5: empty", "corrupt", "report {w}/bad.nad.h5 --samples 0", 2, {"setup": garbage("bad.nad.h5", b"")}),
    ("nad.h5: NaN threshold", "corrupt", "report {w}/bad.nad.h5 --samples 0", 2,
     {"setup": h5_edit("bad.nad.h5", _nan_threshold)}),
    ("nad.h5: threshold 22500.5", "corrupt", "report {w}/bad.nad.h5 --samples 0", 2,
     {"setup": h5_edit("bad.nad.h5", _half_threshold)}),
    ("nad.h5: FloatNet where an IntNet is needed", "corrupt", "report {w}/net.float.nad.h5 --samples 0", 2),
    ("NIR: random bytes", "corrupt", "import {w}/bad.nir --out {w}/x.nad.h5", 2,
     {"setup": garbage("bad.nir"), "absent": ("x.nad.h5",)}),
    ("NIR: own format, NaN v_threshold", "corrupt", "import {w}/bad.nir --out {w}/x.nad.h5", 2,
     {"setup": nir_file("bad.nir", _nir_threshold_nan), "absent": ("x.nad.h5",)}),
    ("NIR: own format, an edge dropped", "corrupt", "import {w}/bad.nir --out {w}/x.nad.h5", 2,
     {"setup": nir_file("bad.nir", _nir_drop_edge), "absent": ("x.nad.h5",)}),
    ("npz: random bytes", "corrupt", f"{SIM} --data {{w}}/bad.npz", 2, {"setup": garbage("bad.npz")}),
    ("npz: NaN float images", "corrupt", f"{SIM} --data {{w}}/d.npz", 2,
     {"setup": npz("d.npz", x_test=__import__("numpy").full((10, 1, 8, 8), float("nan")))}),
    ("npz: x_test missing", "corrupt", f"{SIM} --data {{w}}/d.npz", 2, {"setup": npz("d.npz", x_test=None)}),
    ("golden: random bytes", "corrupt", f"{VER} --golden {{w}}/g.npz", 2, {"setup": garbage("g.npz")}),
    ("checkpoint: random bytes", "corrupt", "convert {w}/bad.ckpt --out {w}/x.nad.h5", 2,
     {"setup": garbage("bad.ckpt"), "absent": ("x.nad.h5",)}),
    ("checkpoint: truncated", "corrupt", "convert {w}/bad.ckpt --out {w}/x.nad.h5", 2,
     {"setup": truncated("qat.ckpt", "bad.ckpt"), "absent": ("x.nad.h5",)}),
    ("checkpoint: epoch NaN", "corrupt", "convert {w}/bad.ckpt --out {w}/x.nad.h5", 2,
     {"setup": checkpoint_field("epoch", float("nan")), "absent": ("x.nad.h5",)}),
    ("checkpoint: input_shape 1x10^5x10^5", "size", "convert {w}/bad.ckpt --out {w}/x.nad.h5", 2,
     {"setup": checkpoint_field("input_shape", (1, 100000, 100000)), "absent": ("x.nad.h5",)}),
    ("image folder: a corrupt PNG", "corrupt", f"{SIM} --data {{w}}/img", 2, {"setup": images(True)}),
    ("image folder: wrong image size for the net", "corrupt", f"{SIM} --data {{w}}/img", 2,
     {"setup": images(False, 16)}),
    ("shard JSON: random bytes", "corrupt", "verify-merge {w}/s1.json {w}/s2.json", 2,
     {"setup": all_of(shards(), garbage("s1.json"))}),
    ("shard JSON: layers null", "corrupt", "verify-merge {w}/s1.json {w}/s2.json", 2,
     {"setup": shards(_layers_null)}),
    ("shard JSON: equal but a sample differs", "corrupt", "verify-merge {w}/s1.json {w}/s2.json", 2,
     {"setup": shards(_equal_but_bad_sample)}),
    # hostile sizes
    ("nad.h5: a 2^40-element weight declared", "size", "report {w}/bad.nad.h5 --samples 0", 2,
     {"setup": h5_edit("bad.nad.h5", _huge_weight)}),
    ("npz: a 10^11-element x_test declared", "size", f"{SIM} --data {{w}}/huge.npz", 2, {"setup": npz_huge}),
    ("report --samples 100000", "size", f"report {N} --samples 100000 --timesteps 4", 2),
    ("report --timesteps 10^9", "size", f"report {N} --samples 2 --timesteps 1000000000", 2),
    ("simulate --timesteps 10^9", "size", f"simulate {N} --samples 2 --timesteps 1000000000", 2),
    ("verify --samples 100000", "size", f"verify {N} --samples 100000", 2),
    ("pipeline --verify-timesteps 10^9", "size", f"{PIPE} --verify-timesteps 1000000000 --out {{w}}/R", 2,
     {"absent": ("R",)}),
    # bad option values
    ("report --synop-pj -1", "option", f"{FAST} --synop-pj -1", 2),
    ("report --synop-pj nan", "option", f"{FAST} --synop-pj nan", 2),
    ("verify --timeout -1", "option", f"{VER} --timeout -1", 2),
    ("verify --timeout nan", "option", f"{VER} --timeout nan", 2),
    ("verify --timeout 0", "option", f"{VER} --timeout 0", 2),
    ("verify --jobs 0", "option", f"{VER} --jobs 0", 2),
    ("verify --shard 3/2", "option", f"{VER} --shard 3/2", 2),
    ("verify --min-agreement 1.5", "option", f"verify {N} --samples 2 --timesteps 2 --min-agreement 1.5", 2),
    ("simulate --timesteps 0,-1", "option", f"simulate {N} --samples 2 --timesteps 0,-1", 2),
    ("simulate --samples -5", "option", f"simulate {N} --samples -5 --timesteps 2", 2),
    ("export --timesteps 0", "option", f"export {N} --format lava --out {{w}}/b --timesteps 0", 2,
     {"absent": ("b",)}),
    ("convert --max-timesteps 0", "option", "convert {w}/qat.ckpt --out {w}/x.nad.h5 --max-timesteps 0", 2,
     {"absent": ("x.nad.h5",)}),
    ("pipeline --p 0", "option", f"{PIPE} --p 0 --out {{w}}/R", 2, {"absent": ("R",)}),
    ("pipeline --epochs-fp 0", "option", "pipeline --epochs-fp 0 --out {w}/R", 2, {"absent": ("R",)}),
    # write failures: a read-only folder (as an unprivileged user), a file-size limit
    ("read-only: report --json", "write", f"{FAST} --json {RO}/r.json", 2, {"read_only": True}),
    ("read-only: import --out", "write", f"import {{w}}/m.nir --out {RO}/x.nad.h5", 2,
     {"setup": nir_file("m.nir"), "read_only": True}),
    ("read-only: export lava --out", "write", f"export {N} --format lava --out {RO}/b", 2,
     {"read_only": True}),
    ("read-only: convert --out", "write", f"convert {{w}}/qat.ckpt --out {RO}/x.nad.h5", 2,
     {"read_only": True}),
    ("read-only: simulate --json", "write", f"{SIM} --json {RO}/s.json", 2, {"read_only": True}),
    ("ulimit -f 4: convert (HDF5 writer)", "write", "convert {w}/qat.ckpt --out {w}/x.nad.h5", 2,
     {"fsize_kib": 4, "absent": ("x.nad.h5",)}),
    ("ulimit -f 4: export nir", "write", f"export {N} --format nir --out {{w}}/m2.nir", 2,
     {"fsize_kib": 4, "absent": ("m2.nir",)}),
    ("ulimit -f 4: export lava bundle", "write", f"export {N} --format lava --out {{w}}/b", 2,
     {"fsize_kib": 4, "absent": ("b",)}),
    # concurrency: a second run on the same --out while the first holds it; the first then gets SIGTERM
    ("two pipelines on one --out", "concurrency", f"{PIPE} --seed 1 --out {{w}}/R", 2,
     {"beside": f"{PIPE} --seed 0 --out {{w}}/R"}),
    ("convert while a pipeline holds --out", "concurrency", "convert {w}/qat.ckpt --out {w}/R/net.nad.h5", 2,
     {"beside": f"{PIPE} --seed 0 --out {{w}}/R"}),
    # controls: what must pass
    ("report (control)", "control", f"{FAST} --json {{w}}/r.json", 0),
    ("export nir + import (control)", "control", "import {w}/m.nir --out {w}/back.nad.h5", 0,
     {"setup": nir_file("m.nir")}),
    ("verify-merge of good shards (control)", "control", "verify-merge {w}/s1.json {w}/s2.json", 0,
     {"setup": shards()}),
    ("simulate (control)", "control", SIM, 0),
]]
