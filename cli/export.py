"""`na-deploy export`: an IntNet -> a bundle its backend's users can run (--format lava or netx), or a FloatNet /
IntNet -> one NIR file (--format nir). `--target` / `--backend` resolve through cli/options.py
(`na_deploy.hw_targets.get_target` / `get_backend`); the backend is made only when the command runs (Lava sets
the multiprocessing start method at import).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from na_deploy.cli.options import (backend_option, check_folder_output, check_force_replaces_own, check_outputs,
                                   check_replaceable, one_line_errors, target_and_backend, target_option)


FORMATS = {"lava": "lava", "netx": "netx", "nir": None}  # --format -> the backend that writes it (nir: na_deploy.io)
BUNDLE_FILES = ("net.nad.h5", "run_lava_graph.py", "README.txt", "manifest.json", "net.netx.h5", "run_netx.py")
""" What a lava / netx export folder holds: --force replaces only a folder holding nothing else."""


@click.command("export", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("net_path", metavar="NET.nad.h5")
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), default="lava", show_default=True,
              help="lava = a folder with the net, a runnable run_lava_graph.py and a README (our Lava process "
                   "graph); netx = a folder with the net in lava-dl's netx HDF5 layout (Lava's stock LIF, mode "
                   "zero, chains of conv/dense only), the IntNet it runs, run_netx.py and a README; nir = one NIR "
                   "HDF5 file (FloatNet or IntNet; target-neutral, --out is the file).")
@click.option("--out", required=True, help="Folder to write (atomically: a temporary folder renamed into place).")
@click.option("--timesteps", default=8, show_default=True, type=int,
              help="Default T of the exported script; the fit check is done for this T (netx: the T of the file).")
@click.option("--force", is_flag=True, help="Replace --out if it exists and is not empty.")
@target_option
@backend_option
@one_line_errors
def export(net_path: str, fmt: str, out: str, timesteps: int, force: bool, target_name: str,
           backend_name: Optional[str]) -> None:
    """Export an IntNet (step 4): --format lava, a Lava process graph bundle you rebuild with `build_lava_graph`;
    --format netx, a file lava-dl's netx.hdf5.Network loads. Refuses, naming the node, a net failing the
    Loihi 2 fit check or one the format cannot express. --format nir writes a FloatNet or IntNet as NIR."""
    if fmt == "nir":
        return _export_nir(net_path, out, force)
    from na_deploy.io import load_intnet

    check_folder_output(out, [net_path])
    if force:
        check_force_replaces_own(out, BUNDLE_FILES, "export")
    net = load_intnet(net_path)
    if fmt == "netx":
        if backend_name not in (None, "netx"):
            raise click.UsageError(f"--format netx is written by backend netx, not --backend {backend_name}")
        backend_name = "netx"
    _, backend = target_and_backend(target_name, backend_name, net)
    path = backend.export(net, out, timesteps=timesteps, force=force, source=Path(net_path).name)
    if fmt == "netx":
        changed = json.loads((path / "manifest.json").read_text())["changed"]
        if changed:
            click.echo(f"warning: {changed}; verify the net netx runs: {path / 'net.nad.h5'}", err=True)
        click.echo(f"exported {net_path} for lava-dl netx ({len(net.all_nodes())} blocks, T = {timesteps}) -> "
                   f"{path}/ (net.netx.h5, net.nad.h5, run_netx.py, README.txt, manifest.json)")
        return
    click.echo(f"exported {net_path} as a Lava graph ({len(net.all_nodes())} nodes) -> {path}/ "
               "(net.nad.h5, run_lava_graph.py, README.txt, manifest.json)")


def _export_nir(net_path: str, out: str, force: bool) -> None:
    from na_deploy.io import load_net
    from na_deploy.io.nir_io import write_nir

    net = load_net(net_path)
    check_replaceable(out, force)
    check_outputs({"--out": out}, inputs=[net_path])
    for w in write_nir(net, out):
        click.echo(f"warning: {w}", err=True)
    click.echo(f"exported {net_path} ({type(net).__name__}, {len(net.all_nodes())} nodes) as NIR -> {out}")
