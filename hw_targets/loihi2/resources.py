"""Loihi 2 resource and energy estimate for an IntNet (what `na-deploy report` prints).

Counts are exact for the network; the per-core capacities and per-operation energies are ASSUMPTIONS,
stated here and overridable:

* Chip capacities, Intel's Loihi 2 product brief (2021): 128 neuromorphic cores, up to 1 M neurons and
  120 M synapses per chip. We assume a core holds at most 1 M / 128 = 8192 neurons and 120 M / 128 = 937,500
  synapses; real capacity depends on neuron state size, weight precision and the synapse encoding
  (convolutional weight sharing is not assumed: every connection is counted).
* Per-operation energies: Loihi 1 figures reported by Davies et al., "Loihi: A Neuromorphic Manycore
  Processor with On-Chip Learning", IEEE Micro 2018 (per synaptic op 23.6 pJ, per active neuron update
  52 pJ, per spike sent within a tile 1.7 pJ), used as a proxy: Loihi 2 per-op energies are not published at
  this granularity. The estimate ranks networks against each other; it is not a measurement.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch

from na_deploy.ir import INPUT_NAME, AvgPool2d, Conv2d, Dense, Identity, IntNet
from na_deploy.simulate.torch_ops import compile_op
from na_deploy.protocols import Trace


@dataclass(frozen=True)
class CoreModel:
    neurons_per_core: int = 8192  # assumption: 1 M neurons / 128 cores (Loihi 2 brief)
    synapses_per_core: int = 937_500  # assumption: 120 M synapses / 128 cores (Loihi 2 brief)
    cores_per_chip: int = 128  # Loihi 2 brief


@dataclass(frozen=True)
class EnergyModel:
    synop_pj: float = 23.6  # Davies et al. 2018 (Loihi 1), per synaptic op
    neuron_update_pj: float = 52.0  # Davies et al. 2018 (Loihi 1), per active neuron update
    spike_pj: float = 1.7  # Davies et al. 2018 (Loihi 1), per spike within a tile
    source: str = "Loihi 1 per-op energies (Davies et al., IEEE Micro 2018) as a proxy for Loihi 2"


def _mask_op(op):
    """The op with every non-zero weight replaced by 1 (counts connections)."""
    if isinstance(op, Conv2d):
        return Conv2d((np.asarray(op.weight) != 0).astype(np.float64), op.stride, op.padding, op.groups)
    if isinstance(op, Dense):
        return Dense((np.asarray(op.weight) != 0).astype(np.float64))
    if isinstance(op, AvgPool2d):
        return AvgPool2d(op.kernel, op.stride, 1.0 if op.weight != 0 else 0.0)
    return Identity(1.0 if op.weight != 0 else 0.0)


def fan_out_map(op, source_shape) -> np.ndarray:
    """Number of target neurons each source neuron reaches through `op` (non-zero weights only)."""
    x = torch.zeros((1, *source_shape), dtype=torch.float64, requires_grad=True)
    y = compile_op(_mask_op(op), torch.float64)(x)
    y.sum().backward()
    return x.grad[0].numpy().round().astype(np.int64)


def resource_report(net: IntNet, trace: Optional[Trace] = None, cores: CoreModel = CoreModel(),
                    energy: EnergyModel = EnergyModel(), inputs: Optional[np.ndarray] = None) -> dict:
    """Per node: neurons, synapses (connections), fan-in / fan-out, cores; with a `trace` (and the `inputs`
    it ran on), per-inference spikes, synaptic ops and the energy estimate at the trace's T (a graded node,
    contract C2: one graded message per neuron and step, an upper bound)."""
    shapes = net.shapes()
    fan_out_total = {name: np.zeros(shape, dtype=np.int64) for name, shape in shapes.items()}
    rows = []
    for node in net.all_nodes():
        n = int(np.prod(node.shape))
        syn = 0
        for s in node.inputs:
            fo = fan_out_map(s.op, shapes[s.source])
            fan_out_total[s.source] += fo
            syn += int(fo.sum())
        c = max(int(np.ceil(n / cores.neurons_per_core)), int(np.ceil(syn / cores.synapses_per_core)), 1)
        rows.append({"node": node.name, "role": getattr(node, "role", "readout"), "shape": list(node.shape),
                     "neurons": n, "synapses": syn, "fan_in_per_neuron": round(syn / n, 2), "cores": c})
    for r in rows:
        fo = fan_out_total[r["node"]]
        r["fan_out_per_neuron"] = round(float(fo.mean()), 2) if fo.size else 0.0
    total = {k: int(sum(r[k] for r in rows)) for k in ("neurons", "synapses", "cores")}
    total["chips"] = int(np.ceil(total["cores"] / cores.cores_per_chip))
    report = {"nodes": rows, "total": total, "core_model": asdict(cores), "energy_model": asdict(energy)}
    if trace is not None:
        T = trace.timesteps
        B = int(trace.extra.get("summed_over", trace.batch))  # summed_over: counts (1, *shape) summed over B samples
        synops = 0.0
        spikes = 0.0
        graded = {m.name for m in net.nodes if m.neuron.graded}
        for r in rows:
            if r["node"] in trace.spike_counts:
                cnt = trace.events()[r["node"]].astype(np.float64)  # messages: negative spikes, offset stage 1 too
                if r["node"] in graded:  # a graded node's count is a payload sum: count one message per step
                    cnt = np.full((B, *shapes[r["node"]]), float(T))  # (an upper bound: zero payloads are free)
                r["spikes_per_inference"] = float(cnt.sum() / B)
                r["firing_rate"] = float(cnt.sum() / (B * r["neurons"]) / T)  # = cnt.mean() / T for a (B, ...) trace
                r["synops_per_inference"] = float((cnt * fan_out_total[r["node"]][None]).sum() / B)
                spikes += r["spikes_per_inference"]
                synops += r["synops_per_inference"]
        if inputs is not None:  # graded pixel spikes: every non-zero pixel is sent once per step
            nz = (np.asarray(inputs) != 0).astype(np.float64)
            report["input_synops_per_inference"] = float(T * (nz * fan_out_total[INPUT_NAME][None]).sum() / len(nz))
            synops += report["input_synops_per_inference"]
        updates = float(T * total["neurons"])
        e_pj = synops * energy.synop_pj + updates * energy.neuron_update_pj + spikes * energy.spike_pj
        report["per_inference"] = {"timesteps": T, "spikes": spikes, "synops": synops, "neuron_updates": updates,
                                   "energy_uJ": e_pj * 1e-6,
                                   "energy_breakdown_uJ": {"synops": synops * energy.synop_pj * 1e-6,
                                                           "neuron_updates": updates * energy.neuron_update_pj * 1e-6,
                                                           "spikes": spikes * energy.spike_pj * 1e-6}}
    return report


def format_resource_report(report: dict) -> str:
    lines = [f"{'node':<28}{'neurons':>9}{'synapses':>11}{'fan-in':>8}{'fan-out':>9}{'cores':>6}"
             + (f"{'spikes/inf':>12}{'rate':>7}{'synops/inf':>12}" if "per_inference" in report else "")]
    for r in report["nodes"]:
        line = (f"{r['node']:<28}{r['neurons']:>9}{r['synapses']:>11}{r['fan_in_per_neuron']:>8.1f}"
                f"{r['fan_out_per_neuron']:>9.1f}{r['cores']:>6}")
        if "spikes_per_inference" in r:
            line += f"{r['spikes_per_inference']:>12.1f}{r['firing_rate']:>7.3f}{r['synops_per_inference']:>12.0f}"
        lines.append(line)
    t = report["total"]
    lines.append(f"{'total':<28}{t['neurons']:>9}{t['synapses']:>11}{'':>17}{t['cores']:>6}   ({t['chips']} chip(s))")
    if "per_inference" in report:
        p = report["per_inference"]
        e = report["energy_model"]
        lines.append(f"per inference at T={p['timesteps']}: {p['spikes']:.0f} spikes, {p['synops']:.0f} synaptic ops, "
                     f"{p['neuron_updates']:.0f} neuron updates -> {p['energy_uJ']:.3f} uJ "
                     f"({e['synop_pj']} pJ/synop, {e['neuron_update_pj']} pJ/update, {e['spike_pj']} pJ/spike: "
                     f"{e['source']})")
    lines.append("capacities per core are assumptions (Loihi 2 brief: 1M neurons, 120M synapses, 128 cores per chip)")
    return "\n".join(lines)
