"""`na-deploy report`: a target's resource estimate (neurons, synapses, fan-in/out, cores) and, measured with
the reference simulator on test samples, spikes, synaptic operations and an energy estimate per inference."""
from __future__ import annotations

import json
import math

import click

from na_deploy.checks import check_timestep
from na_deploy.errors import NaDeployError

from na_deploy.cli.options import check_outputs, is_stdout, target_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("net_path", type=click.Path(dir_okay=False))
@click.option("--data", type=click.Path(), default=None,
              help="Images to measure spikes / synaptic ops on: an npz or an image folder's val/ split (default: "
                   "embedded digits test split).")
@click.option("--samples", type=int, default=32, show_default=True,
              help="Test samples to average over (0: static only).")
@click.option("--timesteps", type=int, default=8, show_default=True, help="T for spikes, synaptic ops and energy.")
@click.option("--synop-pj", type=float, default=None, help="Energy per synaptic op in pJ (default: see README).")
@click.option("--neuron-update-pj", type=float, default=None, help="Energy per neuron update in pJ.")
@click.option("--spike-pj", type=float, default=None, help="Energy per spike in pJ.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the report as JSON.")
@target_option
def report(net_path, data, samples, timesteps, synop_pj, neuron_update_pj, spike_pj, json_out, target_name):
    """Loihi 2 resource estimate (neurons, synapses, fan-in/out, cores) and, measured on SAMPLES images with
    the reference simulator, spikes, synaptic operations and an energy estimate per inference at T."""
    from na_deploy.atomic import atomic_write_text
    from na_deploy.hw_targets import get_target
    from na_deploy.io import load_net
    from na_deploy.ir import IntNet

    check_outputs({"--json": json_out}, inputs=[net_path, data], stdout_ok=("--json",))
    target = get_target(target_name)
    net = load_net(net_path)
    if not isinstance(net, IntNet):
        raise NaDeployError(f"{net_path}: is a float net; `report` needs the fixed-point net written by "
                            "`na-deploy convert` (net.nad.h5)")
    if samples < 0:
        raise NaDeployError(f"--samples {samples}: allowed: an integer >= 0 (0: static estimate only)")
    check_timestep(timesteps, net.meta.get("max_timesteps") if samples else None)  # T is used when measuring
    overrides = {k: v for k, v in (("synop_pj", synop_pj), ("neuron_update_pj", neuron_update_pj),
                                   ("spike_pj", spike_pj)) if v is not None}
    for key, v in overrides.items():
        if not (math.isfinite(v) and v >= 0):
            raise NaDeployError(f"--{key.replace('_', '-')} {v}: allowed: a finite energy >= 0 pJ")
    energy = target.energy_model(**overrides)
    trace = x = None
    if samples:
        from na_deploy.data.arrays import load_dataset
        from na_deploy.data.loaders import first_test_images

        ds = load_dataset(data)
        if samples > ds.num_test:  # refused like verify's --samples, never clamped
            raise NaDeployError(f"--samples {samples}: {data or 'embedded digits'} has only {ds.num_test} test "
                                "images; allowed: 0..that")
        x = first_test_images(ds, samples)[0]  # a folder: only these images are decoded
        if tuple(x.shape[1:]) != tuple(net.input.shape):
            raise NaDeployError(f"--data: images are {tuple(x.shape[1:])}, the net expects {tuple(net.input.shape)}")
        trace = target.reference_simulate(net, x, timesteps)
    rep = target.resource_report(net, trace, energy=energy, inputs=x)
    click.echo(target.format_resource_report(rep), err=is_stdout(json_out))  # `--json -`: stdout is the JSON
    if is_stdout(json_out):
        click.echo(json.dumps(rep, indent=2, sort_keys=True))
    elif json_out:
        atomic_write_text(json_out, json.dumps(rep, indent=2, sort_keys=True))
