"""`na-deploy import MODEL.nir`: a NIR graph (ours or another framework's) -> a `.nad.h5` net.

Ours (written by `export --format nir`) comes back exactly as the FloatNet/IntNet it was; a foreign graph
becomes a FloatNet in mode "zero" (`na_deploy.io.nir_foreign`), ready for the fixed point, export and verify
(pass the fixed point the largest T you will run: `TARGET.to_fixed_point(net, max_timesteps=T)`; at the
default 256 a mode-zero first layer is coarsened to fit the stock LIF's membrane register).
Bad input is one line `error: ...`, exit 2, nothing written.
"""
from __future__ import annotations

import click

from na_deploy.cli.options import check_outputs, check_replaceable, one_line_errors


@click.command("import", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("nir_path", metavar="MODEL.nir")
@click.option("--out", required=True, help="The .nad.h5 file to write (atomically).")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("--input-scale", type=float, default=None,
              help="A foreign graph's input = raw pixel (0..255) * this [default: 1/255, images in [0, 1]]; "
                   "folded into the first weights. Ignored for a na-deploy export.")
@one_line_errors
def import_nir(nir_path: str, out: str, force: bool, input_scale: float | None) -> None:
    """Import a NIR graph (nir.write HDF5) as a FloatNet, or restore a na-deploy export exactly."""
    from na_deploy.io import save_net
    from na_deploy.io.nir_io import load_nir

    check_replaceable(out, force)
    check_outputs({"--out": out}, inputs=[nir_path])
    net = load_nir(nir_path, input_scale)
    save_net(net, out)
    how = ("restored (na-deploy export)" if "imported_from" not in net.meta
           else f"imported (mode zero, p = 1, input = {net.meta['nir_input']})")
    click.echo(f"{how} {nir_path}: {type(net).__name__} with {len(net.nodes)} neuron nodes + readout "
               f"{net.readout.name} -> {out}")
