"""The text of a verify report (one writer of each line): what `na-deploy verify` and `verify-merge` print, and
what `GateReport.lines()` (na_deploy.verify.gate) gives Python users.

All of it reads the JSON form of a report (`VerifyReport.to_dict()`, the gate's `to_dict()`, or a merged
report of shards, `na_deploy.verify.shards.merge_reports`), so a report read back from a file prints the same.
"""
from __future__ import annotations

from typing import Optional


def layer_table(rep: dict) -> list[str]:
    """Per-node spike totals of both sides and whether they are equal, then the readout row."""
    rows = [("node", "spikes reference", "spikes Lava", "equal")]
    rows += [(r["node"], str(r["reference"]), str(r["lava"]), "yes" if r["equal"] else "NO") for r in rep["layers"]]
    rows.append(("readout potentials", "", "", "yes" if rep["readout_equal"] else "NO"))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"{a:<{w[0]}}  {b:>{w[1]}}  {c:>{w[2]}}  {d:>{w[3]}}" for a, b, c, d in rows]
    return [lines[0], "-" * len(lines[0]), *lines[1:]]


def format_report(rep: dict) -> list[str]:
    """The per-layer table and the reference-vs-backend verdict of a verify JSON report, as text lines."""
    lines = layer_table(rep)
    s = rep["seconds"]
    lines.append(f"seconds per sample: reference {s['reference_per_sample']:.5f}, Lava {s['lava_per_sample']:.4f} "
                 f"(Lava / reference = {s['lava_over_reference']:.1f}x)")
    lines.append(verdict_line(rep))
    m = rep["first_mismatch"]
    e = None if m is None else m.get("earliest")
    if e:
        lines.append(f"earliest divergence in that sample: node {e['node']}, neuron {tuple(e['neuron'])}, "
                     f"window step {e['step']} (Lava step {e['lava_step_in_slot']})")
    return lines


def verdict_line(rep: dict) -> str:
    """BIT-EXACT (every node's counts and the readout equal, C6) or MISMATCH naming the first difference."""
    m = rep["first_mismatch"]
    if m is None:
        return (f"BIT-EXACT: {rep['samples']} samples at T={rep['timesteps']}: every node's spike counts and "
                "the readout potentials are identical (C6)")
    step = (f", window step {m['step']} (Lava step {m['lava_step_in_slot']} of the sample's slot)"
            if m.get("step") else "")
    return (f"MISMATCH: {rep['mismatching_samples']} of {rep['samples']} samples differ; first at sample "
            f"{m['sample']}, node {m['node']}, neuron {tuple(m['neuron'] or ())}: reference "
            f"{m['reference']}, Lava {m['lava']}{step}")


def check_line(name: str, result: Optional[dict]) -> Optional[str]:
    """`name: PASS|FAIL: message` for one check section of a report ({"ok", "message", ...}); None when the
    check did not run."""
    if result is None:
        return None
    return f"{name}: {'PASS' if result['ok'] else 'FAIL'}: {result.get('message', '')}"


def format_merged(merged: dict) -> list[str]:
    """The per-layer table and verdict of a merged report, with the shards it covers and what is missing."""
    lines = layer_table(merged)
    sh, s, m = merged["shards"], merged["seconds"], merged["first_mismatch"]
    lines.append(f"shards: {len(sh['present'])} of {sh['n']} merged, {merged['samples']} samples at "
                 f"T={merged['timesteps']}; seconds: slowest shard {s['shard_max']:.1f}, "
                 f"all shards {s['reference'] + s['lava']:.1f}")
    if m is None:
        lines.append(f"BIT-EXACT: the {merged['samples']} samples verified: every node's spike counts and the "
                     "readout potentials are identical (C6)")
    else:
        step = f", window step {m['step']}" if m.get("step") else ""
        lines.append(f"MISMATCH: {merged['mismatching_samples']} of {merged['samples']} samples differ; first at "
                     f"sample {m['sample']}, node {m['node']}, neuron {tuple(m.get('neuron') or ())}: reference "
                     f"{m['reference']}, Lava {m['lava']}{step}")
    if sh["missing"]:
        missing = ", ".join(f"{i}/{sh['n']}" for i in sh["missing"])
        lines.append(f"INCOMPLETE: shard(s) {missing} missing: their samples were not verified")
    for key, res in sorted(merged.items()):
        if isinstance(res, dict) and isinstance(res.get("ok"), bool):
            lines.append(check_line(key, res))
    if merged.get("not_merged"):
        lines.append(f"not merged (they differ between shards): {', '.join(merged['not_merged'])}")
    lines.append("PASS" if merged["passed"] else "FAIL" + ("" if merged["complete"] else " (shards missing)"))
    return lines


__all__ = ["layer_table", "format_report", "verdict_line", "check_line", "format_merged"]
