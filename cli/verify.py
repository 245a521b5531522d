"""`na-deploy verify`: the verify gate a user's CI runs on a deployed net (contract C6, C8).

Thin: it parses options, picks the samples (`na_deploy.verify.samples.select_samples`), runs the gate
(`na_deploy.verify.gate.run_gate`: provenance with --against, reference vs backend, golden traces, fidelity
to the FloatNet; --jobs J as J shard processes, na_deploy.verify.jobs), prints the report's text, writes
JSON / JUnit / golden files atomically and turns the verdict into the exit code:
  0  every check passed;  1  a check failed (backend != reference, broken provenance link, fidelity below
  --min-agreement, golden difference);  2  a bad request (unreadable file, bad option, a net failing the fit);
  3  the backend failed while running (a dead Lava worker, a hung Lava run, a crashed --jobs shard).
"""
from __future__ import annotations

import click

from na_deploy.cli.options import (backend_option, check_outputs, is_stdout, one_line_errors, target_and_backend,
                                   target_option)


@click.command("verify", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("net_path", metavar="NET.nad.h5")
@click.option("--data", default=None, metavar="NPZ|DIR",
              help="An .npz with x_test (and x_train, y_train, y_test), or an image folder DIR/train/<class>/..., "
                   "DIR/val/<class>/... (val/ is the test split); default: the embedded 8x8 digits. "
                   "The first --samples test images are used.")
@click.option("--samples", default=100, show_default=True, type=int, help="Number of test images N.")
@click.option("--timesteps", default=8, show_default=True, type=int, help="Time steps T per sample.")
@click.option("--json", "json_out", default=None, metavar="FILE", help="Also write the report as JSON (atomically).")
@click.option("--junit", default=None, metavar="FILE", help="Also write JUnit XML: a test case per sample and node.")
@click.option("--against", default=None, metavar="FILE",
              help="qat.ckpt or net.float.nad.h5: check the provenance chain FILE -> ... -> NET (C8).")
@click.option("--float-net", default=None, metavar="FILE",
              help="The FloatNet for the fidelity check [default: the one NET records beside it].")
@click.option("--min-agreement", default=None, type=float,
              help="Fail when the integer SNN agrees with the float SNN on fewer samples than this share "
                   "[default: na_deploy.verify.fidelity.DEFAULT_MIN_AGREEMENT].")
@click.option("--max-node-change", default=None, type=float,
              help="Also fail when a node's share of neurons whose spike count differs from the float SNN's exceeds "
                   "its inputs' by more than this (catches an IntNet of another training run; off by default, "
                   "see na_deploy.verify.fidelity).")
@click.option("--skip-fidelity", is_flag=True, help="Do not run the fidelity check even where a FloatNet is found.")
@click.option("--write-golden", default=None, metavar="FILE", help="Store these samples' reference traces.")
@click.option("--golden", default=None, metavar="FILE", help="Check the traces against a golden file.")
@click.option("--shard", default=None, metavar="i/n",
              help="Verify only shard i of n (sample k is in shard k mod n + 1).")
@click.option("--jobs", default=1, show_default=True, type=int, help="Run J shards as parallel processes.")
@click.option("--timeout", default=None, type=float,
              help="Seconds before a Lava run call counts as hung [default: 120 + 5 per Lava step for the first call, "
                   "then max(60, 20 x the first call's seconds per step x steps)].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@target_option
@backend_option
@one_line_errors
def verify(**o) -> None:
    """Reference simulator vs the backend (Lava) on the same N samples (step 5, contract C6): per-layer spike
    totals, readout potentials, the first mismatch with its sample, node, neuron and step; plus, where asked
    or possible, the provenance chain (--against), fidelity to the FloatNet, and golden traces. Exit code 0
    when every check passed, 1 when one failed, 2 on a bad request (including a net failing the fit check), 3
    when the backend failed while running (a dead Lava worker, a hung run, a crashed shard)."""
    from na_deploy.io import load_intnet
    from na_deploy.ir.offset_calibration import check_run
    from na_deploy.verify.gate import check_gate_request, run_gate
    from na_deploy.verify.samples import select_samples

    check_gate_request(jobs=o["jobs"], shard=o["shard"], golden=o["golden"], write_golden=o["write_golden"],
                       fidelity=not o["skip_fidelity"], float_net=o["float_net"], min_agreement=o["min_agreement"],
                       max_node_change=o["max_node_change"], timeout_s=o["timeout"])
    check_outputs({"--json": o["json_out"], "--junit": o["junit"], "--write-golden": o["write_golden"]},
                  inputs=_inputs(o), stdout_ok=("--json",))
    net = load_intnet(o["net_path"])
    check_run(net, o["timesteps"])  # T < rho (offset calibration): one line, exit 2
    target, backend = target_and_backend(o["target_name"], o["backend_name"], net)
    x, ids = select_samples(net, o["data"], o["samples"], None if o["jobs"] > 1 else o["shard"])
    report = run_gate(net, x, o["timesteps"], target, backend, net_path=o["net_path"], sample_ids=ids,
                      data=o["data"], shard=o["shard"], against=o["against"], float_net=o["float_net"],
                      fidelity=not o["skip_fidelity"], min_agreement=o["min_agreement"],
                      max_node_change=o["max_node_change"], golden=o["golden"], write_golden=o["write_golden"],
                      jobs=o["jobs"], job_argv=_child_args(o), progress=not o["quiet"], timeout_s=o["timeout"])
    json_to_stdout = is_stdout(o["json_out"])  # `--json -`: stdout is the JSON alone, the text goes to stderr
    for line in report.lines():
        click.echo(line, err=json_to_stdout)
    if o["write_golden"]:
        click.echo(f"golden traces of {len(report.bit_exact['sample_ids'])} samples -> {o['write_golden']}",
                   err=json_to_stdout)
    report.write(None if json_to_stdout else o["json_out"], o["junit"])
    if json_to_stdout:
        click.echo(report.to_json(), nl=False)
    if not report.passed:
        click.get_current_context().exit(1)


def _inputs(o: dict) -> list:
    """The files verify reads: NET, the FloatNet beside it, --data, --against, --float-net, --golden."""
    from na_deploy.io.made_from import float_path_for

    return [o["net_path"], str(float_path_for(o["net_path"])), o["data"], o["against"], o["float_net"], o["golden"]]


def _child_args(o: dict) -> list[str]:
    """The verify arguments every --jobs child repeats (each adds its own --shard and --json)."""
    args = [str(o["net_path"]), "--samples", str(o["samples"]), "--timesteps", str(o["timesteps"]),
            "--target", o["target_name"], "--quiet", "--skip-fidelity"]
    for flag, key in (("--data", "data"), ("--backend", "backend_name"), ("--timeout", "timeout"),
                      ("--float-net", "float_net")):
        if o[key] is not None:
            args += [flag, str(o[key])]
    return args
