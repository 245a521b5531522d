"""`na-deploy export` (IntNet -> runnable Lava graph bundle) and `na-deploy verify` (reference vs Lava, C6).

Thin: parse options, resolve `--target` / `--backend` (`na_deploy.hw_targets.get_target` / `get_backend`),
call `backend.export` and `na_deploy.verify.verify`. The backend is made only when a command runs (Lava
sets the multiprocessing start method at import). Exit codes of verify: 0 all equal, 1 any mismatch,
2 a bad request (unreadable net, bad data, a net failing check_fit, a Lava model error).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from na_deploy.errors import DataError, IRError

from .main import one_line_errors


def _load_intnet(path: str):
    from na_deploy.io import load_net
    from na_deploy.ir import IntNet

    if not Path(path).is_file():
        raise IRError(f"{path}: file not found; allowed: an IntNet .nad.h5 written by `na-deploy convert`")
    net = load_net(path)
    if not isinstance(net, IntNet):
        raise IRError(f"{path}: holds a {type(net).__name__}; allowed: an IntNet (after fixed point, "
                      "`na-deploy convert`)")
    return net


def _target_and_backend(target_name: str, backend_name: Optional[str]):
    """(target, backend) for `--target` / `--backend` (default: the target's default backend)."""
    from na_deploy.hw_targets import get_backend, get_target

    target = get_target(target_name)
    return target, get_backend(backend_name, target)


TARGET_OPTION = click.option("--target", "target_name", default="loihi2", show_default=True,
                             help="Hardware target whose limits and reference are used.")
BACKEND_OPTION = click.option("--backend", "backend_name", default=None,
                              help="Backend of the target that runs / exports the net [default: the target's, "
                                   "lava for loihi2].")


@click.command("export")
@click.argument("net_path", metavar="NET.nad.h5")
@click.option("--format", "fmt", type=click.Choice(["lava"]), default="lava", show_default=True,
              help="Export format: lava = a folder with the net, a runnable run_lava_graph.py and a README.")
@click.option("--out", required=True, help="Folder to write (atomically: a temporary folder renamed into place).")
@click.option("--timesteps", default=8, show_default=True, type=int,
              help="Default T of the exported script; the fit check is done for this T.")
@click.option("--force", is_flag=True, help="Replace --out if it exists and is not empty.")
@TARGET_OPTION
@BACKEND_OPTION
@one_line_errors
def export(net_path: str, fmt: str, out: str, timesteps: int, force: bool, target_name: str,
           backend_name: Optional[str]) -> None:
    """Export an IntNet as a Lava process graph bundle (step 4): rebuild and run it in your own Lava session
    with `build_lava_graph` (see the bundle's README.txt). Refuses a net failing the Loihi 2 fit check."""
    net = _load_intnet(net_path)
    _, backend = _target_and_backend(target_name, backend_name)
    path = backend.export(net, out, timesteps=timesteps, force=force, source=Path(net_path).name)
    click.echo(f"exported {net_path} as a Lava graph ({len(net.all_nodes())} nodes) -> {path}/ "
               "(net.nad.h5, run_lava_graph.py, README.txt, manifest.json)")


def _load_inputs(net, data: Optional[str], samples: int):
    from na_deploy.data import load_dataset

    ds = load_dataset(data)
    x = ds.x_test
    name = data or "embedded digits"
    if tuple(x.shape[1:]) != tuple(net.input.shape):
        raise DataError(f"{name}: x_test images have shape {tuple(x.shape[1:])}; the net's input needs "
                        f"{tuple(net.input.shape)}")
    if samples < 1:
        raise DataError(f"--samples must be >= 1, got {samples}")
    if samples > len(x):
        raise DataError(f"--samples {samples}: {name} has only {len(x)} test images")
    return x[:samples]


def format_report(report) -> list[str]:
    """The verify table and verdict as text lines."""
    rows = [("node", "spikes reference", "spikes Lava", "equal")]
    rows += [(r["node"], str(r["reference"]), str(r["lava"]), "yes" if r["equal"] else "NO") for r in report.layers]
    rows.append(("readout potentials", "", "", "yes" if report.readout_equal else "NO"))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"{a:<{w[0]}}  {b:>{w[1]}}  {c:>{w[2]}}  {d:>{w[3]}}" for a, b, c, d in rows]
    lines.insert(1, "-" * len(lines[0]))
    s = report.seconds
    lines.append(f"seconds per sample: reference {s['reference_per_sample']:.5f}, Lava {s['lava_per_sample']:.4f} "
                 f"(Lava / reference = {s['lava_over_reference']:.1f}x)")
    m = report.first_mismatch
    if m is None:
        lines.append(f"BIT-EXACT: {report.samples} samples at T={report.timesteps}: every node's spike counts and "
                     "the readout potentials are identical (C6)")
    else:
        step = (f", window step {m['step']} (Lava step {m['lava_step_in_slot']} of the sample's slot)"
                if m.get("step") else "")
        lines.append(f"MISMATCH: {report.mismatching_samples} of {report.samples} samples differ; first at sample "
                     f"{m['sample']}, node {m['node']}, neuron {tuple(m['neuron'] or ())}: reference "
                     f"{m['reference']}, Lava {m['lava']}{step}")
        e = m.get("earliest")
        if e:
            lines.append(f"earliest divergence in that sample: node {e['node']}, neuron {tuple(e['neuron'])}, "
                         f"window step {e['step']} (Lava step {e['lava_step_in_slot']})")
    return lines


@click.command("verify")
@click.argument("net_path", metavar="NET.nad.h5")
@click.option("--data", default=None, metavar="NPZ",
              help="An .npz with x_test (and x_train, y_train, y_test); default: the embedded 8x8 digits. "
                   "The first --samples test images are used.")
@click.option("--samples", default=100, show_default=True, type=int, help="Number of test images N.")
@click.option("--timesteps", default=8, show_default=True, type=int, help="Time steps T per sample.")
@click.option("--json", "json_out", default=None, metavar="FILE", help="Also write the report as JSON (atomically).")
@click.option("--timeout", default=None, type=float,
              help="Seconds before a Lava run counts as hung [default: 120 + 5 per Lava step].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@TARGET_OPTION
@BACKEND_OPTION
@one_line_errors
def verify(net_path: str, data: Optional[str], samples: int, timesteps: int, json_out: Optional[str],
           timeout: Optional[float], quiet: bool, target_name: str, backend_name: Optional[str]) -> None:
    """Reference simulator vs Lava on the same N samples (step 5, contract C6): per-layer spike totals,
    readout potentials, and on the first mismatch its sample, node, neuron and step. Exit code 0 when
    everything is equal, 1 on any mismatch, 2 on a bad request (including a net failing the fit check)."""
    net = _load_intnet(net_path)
    x = _load_inputs(net, data, samples)
    target, backend = _target_and_backend(target_name, backend_name)
    from na_deploy.verify import verify as verify_on

    report = verify_on(net, x, timesteps, target, backend, progress=not quiet, timeout_s=timeout)
    for line in format_report(report):
        click.echo(line)
    if json_out:
        from na_deploy.atomic import atomic_write_text

        atomic_write_text(json_out, json.dumps({"net": str(net_path), "data": data or "digits",
                                                **report.to_dict()}, indent=2) + "\n")
    if not report.equal:
        click.get_current_context().exit(1)
