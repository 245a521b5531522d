"""The records of the provenance chain (C8), a leaf module: file hashes and `made_from` entries.

Every artifact records what it was made from in its meta (or manifest) as

    made_from = {"kind": "checkpoint" | "float_net" | "int_net", "file": <basename>, "sha256": <hex>}

FloatNet <- checkpoint (`convert_checkpoint`), IntNet <- FloatNet (`provenance.save_net_pair`), export bundle
manifest <- IntNet. Only the base name is stored (never a folder), so the same inputs give the same bytes
wherever they are converted. `na_deploy.verify.provenance` checks the chain; this module imports nothing of na_deploy
so that the converter can record without importing the checker (which re-runs the converter).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

KINDS = ("checkpoint", "float_net", "int_net")
RERUN_ADVICE = "re-run `na-deploy convert` on the checkpoint to record the chain"
FLOAT_SUFFIX = ".float.nad.h5"
NET_SUFFIX = ".nad.h5"


def float_path_for(net_path: str | os.PathLike) -> Path:
    """net.nad.h5 -> net.float.nad.h5 (any other name: name + .float.nad.h5): where `convert` puts the FloatNet."""
    p = Path(net_path)
    base = p.name[: -len(NET_SUFFIX)] if p.name.endswith(NET_SUFFIX) else p.name
    return p.with_name(base + FLOAT_SUFFIX)


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def made_from(kind: str, path: str | os.PathLike) -> dict:
    """The record of the file an artifact was made from: {"kind", "file" (base name), "sha256"}."""
    if kind not in KINDS:
        raise ValueError(f"made_from kind {kind!r}: allowed: {', '.join(KINDS)}")
    return {"kind": kind, "file": Path(path).name, "sha256": sha256_file(path)}


def float_net_record(meta: dict) -> Optional[dict]:
    """An IntNet's record of its FloatNet: `made_from` (kind float_net) or, in files written before the
    chain existed, the legacy `float_net` = {"file", "sha256"}; None when it records neither."""
    rec = meta.get("made_from")
    if isinstance(rec, dict) and rec.get("kind") == "float_net" and rec.get("sha256"):
        return rec
    old = meta.get("float_net")
    if isinstance(old, dict) and old.get("sha256"):
        return {"kind": "float_net", "file": old.get("file"), "sha256": old["sha256"]}
    return None


def checkpoint_record(meta: dict) -> Optional[dict]:
    """A FloatNet's record of its checkpoint (`made_from`, kind checkpoint), or None."""
    rec = meta.get("made_from")
    if isinstance(rec, dict) and rec.get("kind") == "checkpoint" and rec.get("sha256"):
        return rec
    return None


__all__ = ["KINDS", "RERUN_ADVICE", "FLOAT_SUFFIX", "NET_SUFFIX", "float_path_for", "sha256_file", "made_from",
           "float_net_record", "checkpoint_record"]
