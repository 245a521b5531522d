"""Export an IntNet as a self-contained Lava bundle (pipeline step 4): a folder with the net, a runnable script
that rebuilds the process graph, a README and a manifest, written atomically.

    OUT/net.nad.h5         the IntNet (na_deploy.io.save_net: byte-deterministic, so a net loaded from a file
                           is written back with that file's bytes and SHA-256)
    OUT/run_lava_graph.py  from templates/run_lava_graph.py.tmpl (str.format fields: shape, timesteps, net_file)
    OUT/README.txt         from templates/README.txt.tmpl (source, rule, net_file, shape, depth)
    OUT/manifest.json      nodes (depth, neuron model, window start in the sample's slot), offset_steps, slot
                           length at the default T, Lava layouts and processes, format version, and (C8) `made_from`:
                           {"kind": "int_net", "file": the IntNet's file name, "sha256": of OUT/net.nad.h5}

The templates are package data of `na_deploy.hw_targets.loihi2.lava`; the folder rule, the template reader and the
atomic write are the target's shared bundle helpers (hw_targets/loihi2/bundle.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from na_deploy.checks import check_timestep
from na_deploy.io import save_net
from na_deploy.ir import IntNet
from na_deploy.protocols import require_fit
from na_deploy.io.made_from import NET_SUFFIX, sha256_file

from na_deploy.hw_targets.loihi2.bundle import check_out_dir, read_template, written_atomically
from na_deploy.hw_targets.loihi2.lava.graph import BACKEND_LABEL, LavaGraph, build_lava_graph
from na_deploy.hw_targets.loihi2.lava.layout import lava_shape

NET_FILE = "net.nad.h5"
MANIFEST_FORMAT = "na-deploy-lava-export"
MANIFEST_VERSION = 1


def manifest(net: IntNet, graph: LavaGraph, timesteps: int, made_from: Optional[dict] = None) -> dict:
    """What the bundle holds: nodes (shape, depth, Lava layout, connection processes), format versions and the
    IntNet it was made from (`made_from`, C8)."""
    depth = net.depths()
    return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "backend": BACKEND_LABEL, "net": NET_FILE,
            "made_from": made_from, "timesteps_default": timesteps, "input_shape": list(net.input.shape),
            "readout": net.readout.name, "offset_steps": graph.offset_steps, "slot_steps": graph.slot,
            "nodes": [{"name": n.name, "shape": list(n.shape), "depth": depth[n.name],
                       "neuron": getattr(getattr(n, "neuron", None), "name", None),
                       "window_start": graph.starts.get(n.name, depth[n.name]),
                       "lava_shape": list(lava_shape(n.shape)),
                       "synapses": [type(p).__name__ for p in graph.synapses[n.name]]} for n in net.all_nodes()],
            "lava_processes": len(graph.processes)}


def write_bundle(folder: Path, net: IntNet, graph: LavaGraph, timesteps: int, source: str) -> None:
    """The four files of the bundle into `folder` (an empty temporary folder)."""
    shape = ", ".join(map(str, net.input.shape))
    save_net(net, folder / NET_FILE)
    # the IntNet's own file name when `source` names one (`na-deploy export` passes it), else the bundle's copy
    name = Path(source).name if source.endswith(NET_SUFFIX) else NET_FILE
    made_from = {"kind": "int_net", "file": name, "sha256": sha256_file(folder / NET_FILE)}
    (folder / "run_lava_graph.py").write_text(read_template(__package__, "run_lava_graph.py.tmpl").format(
        shape=shape, timesteps=timesteps, net_file=NET_FILE))
    title = f"na-deploy Lava export of {source or 'an IntNet'}"
    (folder / "README.txt").write_text(read_template(__package__, "README.txt.tmpl").format(
        source=source or "an IntNet", rule="=" * len(title), net_file=NET_FILE, shape=shape,
        depth=net.depths()[net.readout.name]))
    (folder / "manifest.json").write_text(json.dumps(manifest(net, graph, timesteps, made_from), indent=2) + "\n")


def export_lava_bundle(net: IntNet, out_dir, target, *, timesteps: int = 8, force: bool = False,
                       source: str = "") -> Path:
    """Write OUT_DIR = {net.nad.h5, run_lava_graph.py, README.txt, manifest.json} atomically (a temporary
    folder beside it, renamed into place). Refuses an existing non-empty OUT_DIR unless force, a net failing
    `target`'s fit check for T = `timesteps`, and one Lava cannot build."""
    out = Path(out_dir)
    check_out_dir(out, force)
    T = check_timestep(timesteps)
    require_fit(target, net, T, suffix="; nothing exported")
    graph = build_lava_graph(net, T)  # proves Lava can express it (never compiled or run here)
    with written_atomically(out) as tmp:
        write_bundle(tmp, net, graph, T, source)
    return out


__all__ = ["export_lava_bundle", "manifest", "write_bundle", "NET_FILE"]
