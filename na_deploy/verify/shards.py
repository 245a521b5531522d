"""Sharded verification (C6 at scale): split N samples into n deterministic shards, merge shard reports.

`parse_shard("i/n")` reads `--shard`; `shard_indices(N, i, n)` are the test-set indices of shard i of n:
sample k belongs to shard (k mod n) + 1 (round-robin, so shards differ in size by at most one sample and a
prefix of hard samples is spread over all of them). Empty shards are refused: n may not exceed N (a shard
with nothing to verify would produce a report with no samples, and a `--jobs J` run with J > N would start
runtimes for nothing); the caller asks for min(J, N) jobs instead.

`merge_reports(reports)` turns the verify JSON reports of the shards (the dicts `na-deploy verify --json`
writes, each with "sample_ids" and "shard": "i/n") into one report of the same shape: per-layer totals
summed and equal flags ANDed, mismatching samples summed, the first mismatch the one with the lowest
sample id, seconds summed. It refuses (one-line `ShardError` naming the file) reports of different nets
(net_digest, else the net path), T, backend, data or shard count, overlapping sample ids, a shard given
twice, and sample ids that do not belong to the report's shard (which rules out overlapping samples).
Missing shards are reported, not refused: "complete" is false, "missing_shards" lists them, and "passed"
(equal AND complete AND every other check) is false; "equal" stays what it says, reference == backend on
the samples that were verified. Other keys (provenance, fidelity, golden, ...) are kept when every shard
has the same value; check results {"ok": bool, "message"} that differ merge as ok = AND over the shards
(for fidelity that is stricter than the agreement over the union); other differing keys are listed under
"not_merged".
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from na_deploy.errors import NaDeployError

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_ALLOWED = "allowed i/n with 1 <= i <= n"
_SAME = ("timesteps", "backend", "data")  # must agree across shards (besides the net)
_SUMMED_SECONDS = ("reference", "lava", "lava_run", "lava_build")
_MERGED_KEYS = {"net", "net_digest", "data", "equal", "samples", "timesteps", "layers", "readout_equal",
                "mismatching_samples", "first_mismatch", "seconds", "backend", "sample_ids", "shard", "per_sample",
                "complete", "passed", "shards", "missing_shards", "not_merged"}


class ShardError(NaDeployError):
    """A bad --shard request, or shard reports that cannot be merged into one verdict."""


def parse_shard(text: str) -> tuple[int, int]:
    """`"i/n"` -> (i, n), 1-based, 1 <= i <= n; ShardError (one line) otherwise."""
    m = _SHARD_RE.match(str(text))
    if not m:
        raise ShardError(f"--shard {text}: {_ALLOWED} (integers, e.g. 1/4)")
    i, n = int(m.group(1)), int(m.group(2))
    if not 1 <= i <= n:
        raise ShardError(f"--shard {text}: {_ALLOWED}")
    return i, n


def shard_indices(n_samples: int, i: int, n: int) -> np.ndarray:
    """Sorted test-set indices k in [0, n_samples) with (k mod n) + 1 == i (int64). Shards 1..n partition
    range(n_samples) exactly. Refuses n > n_samples (an empty shard) and i outside 1..n."""
    if not 1 <= int(i) <= int(n):
        raise ShardError(f"--shard {i}/{n}: {_ALLOWED}")
    if int(n) > int(n_samples):
        raise ShardError(f"--shard {i}/{n} of {n_samples} samples: shard count n={n} exceeds the sample count; "
                         f"allowed n <= {n_samples} (every shard gets at least one sample)")
    return np.arange(int(i) - 1, int(n_samples), int(n), dtype=np.int64)


def load_report(path: str | Path) -> dict:
    """A verify JSON report from `path`; ShardError naming the file when it is unreadable or not a report."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise ShardError(f"{p}: file not found; allowed: a report written by `na-deploy verify --json`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ShardError(f"{p}: not a JSON verify report ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or "layers" not in d:
        raise ShardError(f"{p}: not a verify report (no 'layers'); allowed: a report of `na-deploy verify --json`")
    return d


_REQUIRED = ("equal", "samples", "timesteps", "layers", "readout_equal", "mismatching_samples", "first_mismatch",
             "seconds", "backend")


def _shard_of(rep: dict, name: str) -> tuple[int, int]:
    """(i, n) of a report (after checking it has the keys a verify report has)."""
    lacking = [k for k in _REQUIRED if k not in rep]
    if lacking:
        raise ShardError(f"{name}: not a verify report: no {lacking[0]!r}; allowed: a report of "
                         "`na-deploy verify --json`")
    if "shards" in rep:
        raise ShardError(f"{name}: is already a merged report; allowed: the reports of single shards i/n")
    s = rep.get("shard")
    if s is None:  # an unsharded report is the whole set
        return 1, 1
    try:
        return parse_shard(s)
    except ShardError:
        raise ShardError(f"{name}: shard {s!r}: {_ALLOWED}") from None


def _count(v: Any, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _seconds(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0)


def _records(v: Any, fields: dict) -> bool:
    return isinstance(v, list) and all(isinstance(r, dict) and all(ok(r.get(k)) for k, ok in fields.items())
                                       for r in v)


_TYPES = {  # key: (rule, what is allowed), checked before anything is merged (issue 22: hostile shards)
    "equal": (lambda v: isinstance(v, bool), "true or false"),
    "readout_equal": (lambda v: isinstance(v, bool), "true or false"),
    "samples": (lambda v: _count(v, 1), "an integer >= 1"),
    "timesteps": (lambda v: _count(v, 1), "an integer >= 1"),
    "mismatching_samples": (_count, "an integer >= 0"),
    "first_mismatch": (lambda v: v is None or (isinstance(v, dict) and _count(v.get("sample"))),
                       "null or a record with an integer 'sample'"),
    "seconds": (lambda v: isinstance(v, dict) and all(_seconds(x) for x in v.values()),
                "a record of finite seconds >= 0"),
    "backend": (lambda v: isinstance(v, str), "a string"),
    "layers": (lambda v: _records(v, {"node": lambda x: isinstance(x, str), "reference": _count, "lava": _count,
                                      "equal": lambda x: isinstance(x, bool)}),
               "a list of {node, reference, lava, equal} records with integer totals"),
    "per_sample": (lambda v: v is None or _records(v, {"sample": _count, "equal": lambda x: isinstance(x, bool)}),
                   "a list of {sample, equal} records"),
}


def _check_types(rep: dict, name: str) -> None:
    """ShardError naming the first key whose value is not of the type `na-deploy verify --json` writes."""
    for key, (ok, allowed) in _TYPES.items():
        if not ok(rep.get(key)):
            raise ShardError(f"{name}: key {key!r} is {json.dumps(rep.get(key))[:60]}; allowed: {allowed}")


def _sample_ids(rep: dict, name: str, i: int, n: int) -> list[int]:
    ids = rep.get("sample_ids")
    if not isinstance(ids, list) or len(ids) != rep.get("samples"):
        raise ShardError(f"{name}: 'sample_ids' missing or not {rep.get('samples')} ids; allowed: a report of "
                         "`na-deploy verify --json` that lists the test-set indices it verified")
    bad = [k for k in ids if not isinstance(k, int) or k < 0 or k % n != i - 1]
    if bad:
        raise ShardError(f"{name}: sample id {bad[0]!r} is not in shard {i}/{n} (sample k is in shard (k mod n) + 1)")
    if len(set(ids)) != len(ids):
        twice = next(k for k in ids if ids.count(k) > 1)
        raise ShardError(f"{name}: sample id {twice} is listed twice; allowed: each sample once")
    return ids


def _check_consistent(rep: dict, name: str) -> None:
    """A shard's verdict must follow from its own records (issue 22: a hand-edited "equal": true is refused):
    equal <=> no first mismatch <=> no per-sample mismatch; mismatching_samples = the per-sample mismatches; a
    layer whose totals differ, a layer or readout marked unequal, all mean equal is false; per-sample records
    for exactly the sample ids, and when every sample is equal every layer and the readout are equal."""
    def refuse(why: str):
        raise ShardError(f"{name}: inconsistent report: {why}; allowed: a report of `na-deploy verify --json` "
                         "as written")

    equal = rep["equal"]
    if not isinstance(equal, bool) or equal != (rep["first_mismatch"] is None):
        refuse(f"'equal' {equal!r} disagrees with 'first_mismatch' {rep['first_mismatch']!r}")
    for la in rep["layers"]:
        if not isinstance(la, dict) or la.get("equal") not in (True, False):
            refuse(f"layer record {la!r} has no equal flag")
        if la["equal"] and la.get("reference") != la.get("lava"):
            refuse(f"layer {la.get('node')}: marked equal with totals {la.get('reference')} != {la.get('lava')}")
        if equal and not la["equal"]:
            refuse(f"'equal' is true but layer {la.get('node')} is not")
    if equal and not rep["readout_equal"]:
        refuse("'equal' is true but 'readout_equal' is false")
    per = rep.get("per_sample")
    if per is None:
        return
    if not isinstance(per, list) or [p.get("sample") if isinstance(p, dict) else p for p in per] != rep["sample_ids"]:
        refuse("'per_sample' does not list one record per sample id, in order")
    bad = sum(p.get("equal") is not True for p in per)
    if bad != rep["mismatching_samples"]:
        refuse(f"'mismatching_samples' {rep['mismatching_samples']!r} but {bad} per-sample records differ")
    if equal != (bad == 0):
        refuse(f"'equal' {equal} but {bad} per-sample records differ")


def _check_same(reports: Sequence[dict], names: Sequence[str]) -> None:
    """Same net (net_digest where every report has one, else the net path), T, backend, data, nodes."""
    ref, ref_name = reports[0], names[0]
    with_digest = ["net_digest" in r for r in reports]
    if any(with_digest) and not all(with_digest):
        k = with_digest.index(not with_digest[0])
        state = {True: "has a net_digest", False: "has no net_digest"}
        raise ShardError(f"{names[k]}: {state[with_digest[k]]} but {ref_name} {state[with_digest[0]]}; "
                         "allowed: shards written by one na-deploy version")
    net_key = "net_digest" if all(with_digest) else "net"
    for rep, name in zip(reports[1:], names[1:]):
        for key in (net_key, *_SAME):
            if rep.get(key) != ref.get(key):
                raise ShardError(f"{name}: {key} {rep.get(key)!r} differs from {ref_name}'s {ref.get(key)!r}; "
                                 "allowed: shards of one verify run (same net, data, T, backend)")
        nodes, ref_nodes = [la["node"] for la in rep["layers"]], [la["node"] for la in ref["layers"]]
        if nodes != ref_nodes:
            raise ShardError(f"{name}: nodes {nodes} differ from {ref_name}'s {ref_nodes}; allowed: shards of one net")


def _check_partition(shards: list[tuple[int, int]], ids: list[list[int]], names: Sequence[str]) -> list[int]:
    """Refuse a shard given twice (with every id checked to lie in its report's shard,
    that rules out overlapping samples); return the missing shards."""
    n = shards[0][1]
    seen: dict[int, str] = {}
    for (i, _), name in zip(shards, names):
        if i in seen:
            raise ShardError(f"{name}: shard {i}/{n} is also given by {seen[i]}; allowed: each shard once")
        seen[i] = name
    union = sorted(k for sid in ids for k in sid)
    if len(seen) == n and union != list(range(len(union))):
        hole = next(k for k in range(len(union) + 1) if k not in set(union))
        raise ShardError(f"{', '.join(names)}: all {n} shards are present but sample {hole} is in none; "
                         "allowed: shards of one --samples N")
    return [i for i in range(1, n + 1) if i not in seen]


def _merge_seconds(reports: Sequence[dict], samples: int) -> dict:
    out: dict[str, Any] = {}
    for key in _SUMMED_SECONDS:
        vals = [r.get("seconds", {}).get(key) for r in reports]
        out[key] = None if any(v is None for v in vals) else float(sum(vals))
    ref, hw = out["reference"] or 0.0, out["lava"] or 0.0
    out.update({"reference_per_sample": ref / samples, "lava_per_sample": hw / samples,
                "lava_over_reference": hw / max(ref, 1e-12),
                "shard_max": max(float((r["seconds"].get("reference") or 0) + (r["seconds"].get("lava") or 0))
                                 for r in reports)})
    return out


def _first_mismatch(reports: Sequence[dict]) -> Optional[dict]:
    found = [r["first_mismatch"] for r in reports if r.get("first_mismatch") is not None]
    return min(found, key=lambda m: m["sample"]) if found else None


def merge_reports(reports: Sequence[dict], names: Optional[Sequence[str]] = None) -> dict:
    """Verify JSON reports of the shards of one run -> one report (see the module doc). `names` label the
    reports in errors (file names); default "report 1", "report 2", ..."""
    if not reports:
        raise ShardError("no reports to merge; allowed: one or more verify JSON reports of shards i/n")
    names = list(names) if names is not None else [f"report {k + 1}" for k in range(len(reports))]
    shards = [_shard_of(r, nm) for r, nm in zip(reports, names)]
    for r, nm in zip(reports, names):
        _check_types(r, nm)
    for (i, n), name in zip(shards, names):
        if n != shards[0][1]:
            raise ShardError(f"{name}: shard {i}/{n} mixes shard counts with {names[0]}'s "
                             f"{shards[0][0]}/{shards[0][1]}; allowed: shards i/n of one n")
    ids = [_sample_ids(r, nm, i, n) for r, nm, (i, n) in zip(reports, names, shards)]
    for r, nm in zip(reports, names):
        _check_consistent(r, nm)
    _check_same(reports, names)
    missing = _check_partition(shards, ids, names)
    order = sorted(range(len(reports)), key=lambda k: shards[k][0])
    reports = [reports[k] for k in order]
    first = reports[0]
    samples = sum(int(r["samples"]) for r in reports)
    layers = [{"node": la["node"], "reference": sum(int(r["layers"][j]["reference"]) for r in reports),
               "lava": sum(int(r["layers"][j]["lava"]) for r in reports),
               "equal": all(bool(r["layers"][j]["equal"]) for r in reports)} for j, la in enumerate(first["layers"])]
    equal = all(p["equal"] is True for r in reports for p in (r.get("per_sample") or [])) and \
        all(r["equal"] is True for r in reports)  # the verdict follows from the records, checked above
    merged = {key: first[key] for key in ("net", "net_digest", "data") if key in first}
    merged.update({
        "equal": equal, "complete": not missing, "passed": equal and not missing,
        "samples": samples, "timesteps": first["timesteps"], "layers": layers,
        "readout_equal": all(bool(r["readout_equal"]) for r in reports),
        "mismatching_samples": sum(int(r["mismatching_samples"]) for r in reports),
        "first_mismatch": _first_mismatch(reports), "seconds": _merge_seconds(reports, samples),
        "backend": first["backend"], "sample_ids": sorted(k for sid in ids for k in sid),
        "shards": {"n": shards[0][1], "present": sorted(i for i, _ in shards), "missing": missing,
                   "per_shard": [{"shard": r.get("shard", "1/1"), "samples": r["samples"], "equal": r["equal"],
                                  "mismatching_samples": r["mismatching_samples"]} for r in reports]},
        "missing_shards": missing})
    if all(r.get("per_sample") is not None for r in reports):
        merged["per_sample"] = sorted((p for r in reports for p in r["per_sample"]), key=lambda p: p["sample"])
    _pass_through(reports, merged)
    return merged


def _pass_through(reports: Sequence[dict], merged: dict) -> None:
    """Keys this module does not know (provenance, fidelity, golden, ...): kept when every shard has the same
    value; a check result ({"ok": bool, "message": ...}) that differs is merged as ok = all shards' ok with
    the first failing shard's message; anything else that differs is listed under "not_merged"."""
    extra = sorted({k for r in reports for k in r} - _MERGED_KEYS)
    differ = []
    for key in extra:
        vals = [r.get(key) for r in reports]
        if all(v == vals[0] for v in vals) and all(key in r for r in reports):
            merged[key] = vals[0]
        elif all(v is None or (isinstance(v, dict) and isinstance(v.get("ok"), bool)) for v in vals):
            ran = [(r.get("shard", "1/1"), v) for r, v in zip(reports, vals) if v is not None]
            bad = [(sh, v) for sh, v in ran if not v["ok"]]
            merged[key] = {"ok": not bad, "message": f"shard {bad[0][0]}: {bad[0][1].get('message', '')}" if bad
                           else ran[0][1].get("message", ""), "per_shard": {sh: v for sh, v in ran}}
        else:
            differ.append(key)
    if differ:
        merged["not_merged"] = differ
    checks_ok = all(v["ok"] for k, v in merged.items()
                    if k in extra and isinstance(v, dict) and isinstance(v.get("ok"), bool))
    merged["passed"] = merged["passed"] and checks_ok


__all__ = ["ShardError", "parse_shard", "shard_indices", "load_report", "merge_reports"]
