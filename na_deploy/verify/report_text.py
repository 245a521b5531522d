"""The text `na-deploy verify` and `verify-merge` print for a verify JSON report (one writer of the table)."""
from __future__ import annotations


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
    m = rep["first_mismatch"]
    if m is None:
        lines.append(f"BIT-EXACT: {rep['samples']} samples at T={rep['timesteps']}: every node's spike counts and "
                     "the readout potentials are identical (C6)")
        return lines
    step = (f", window step {m['step']} (Lava step {m['lava_step_in_slot']} of the sample's slot)"
            if m.get("step") else "")
    lines.append(f"MISMATCH: {rep['mismatching_samples']} of {rep['samples']} samples differ; first at sample "
                 f"{m['sample']}, node {m['node']}, neuron {tuple(m['neuron'] or ())}: reference "
                 f"{m['reference']}, Lava {m['lava']}{step}")
    e = m.get("earliest")
    if e:
        lines.append(f"earliest divergence in that sample: node {e['node']}, neuron {tuple(e['neuron'])}, "
                     f"window step {e['step']} (Lava step {e['lava_step_in_slot']})")
    return lines
