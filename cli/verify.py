"""`na-deploy verify`: the checks a user's CI runs on a deployed net (contract C6, C8).

Thin: it parses options and calls the library. Each check is a library function that returns a result with
`ok` and a one-line reason; this module runs the ones asked for, prints them, writes JSON / JUnit / golden
files atomically and turns the verdict into the exit code:
  0  every check passed;  1  a check failed (backend != reference, broken provenance link, fidelity below
  --min-agreement, golden difference);  2  a bad request (unreadable file, bad option, a net failing the fit).

Checks, in order: provenance (`--against`, na_deploy.verify.provenance), reference vs backend on the chosen samples
(na_deploy.verify.bit_exact), fidelity against the FloatNet (na_deploy.verify.fidelity; on whenever the FloatNet is found),
golden traces (`--golden` / `--write-golden`, na_deploy.verify.golden). `--shard i/n` picks a deterministic share of
the samples; `--jobs J` runs J shards as parallel processes and merges them (cli/verify_jobs.py).
"""
from __future__ import annotations

import json
from typing import Optional

import click
import numpy as np

from na_deploy.errors import NaDeployError

from na_deploy.cli.lava_cmds import BACKEND_OPTION, TARGET_OPTION, _load_inputs, _load_intnet, _target_and_backend
from na_deploy.cli.main import one_line_errors
from na_deploy.cli.verify_report import format_report


def _float_net_for(net, net_path: str, float_net: Optional[str]):
    """The FloatNet for the fidelity check: --float-net, else the one NET records beside it (or the `convert`
    naming rule); None when there is none."""
    from na_deploy.io import load_net
    from na_deploy.ir import FloatNet
    from na_deploy.verify.provenance import recorded_float_path

    if float_net is None:
        cand = recorded_float_path(net_path, net)
        if not cand.is_file():
            return None
        float_net = str(cand)
    fnet = load_net(float_net)
    if not isinstance(fnet, FloatNet):
        raise NaDeployError(f"--float-net {float_net}: holds a {type(fnet).__name__}; allowed: the FloatNet "
                            "(*.float.nad.h5) that `na-deploy convert` wrote with NET")
    return fnet


def _select_samples(net, data: Optional[str], samples: int, shard: Optional[str]):
    """(inputs, sample ids): the first `samples` test images, or this shard's share of them."""
    x = _load_inputs(net, data, samples)
    ids = np.arange(len(x))
    if shard:
        from na_deploy.verify.shards import parse_shard, shard_indices

        i, n = parse_shard(shard)
        ids = shard_indices(len(x), i, n)  # refuses a shard count above the sample count
    return x[ids], [int(i) for i in ids]


def _check_provenance(net_path: str, against: str, target) -> dict:
    from na_deploy.verify.provenance import check_chain

    chain = check_chain(net_path, against, target)
    return {"ok": bool(chain.ok), "message": "provenance chain intact" if chain.ok else chain.broken,
            **chain.to_dict()}


def _check_fidelity(fnet, net, target, x, T: int, min_agreement: Optional[float], max_node_change: Optional[float],
                    trace=None) -> dict:
    from na_deploy.verify.fidelity import DEFAULT_MIN_AGREEMENT, fidelity

    m = DEFAULT_MIN_AGREEMENT if min_agreement is None else float(min_agreement)
    rep = fidelity(fnet, net, target, x, T, trace=trace)
    failures = rep.failures(m, max_node_change)
    return {"ok": not failures, "min_agreement": m, "max_node_change": max_node_change,
            "message": "; ".join(failures) if failures else
            f"fidelity: the integer SNN agrees with the float SNN on {100 * rep.agreement_float_snn:.1f}% "
            f"(minimum {100 * m:.1f}%)", **rep.to_dict()}


def _check_golden(path: str, report, net) -> dict:
    """Both sides' traces against the golden file (the backend's first: it is what runs)."""
    from na_deploy.verify.golden import golden_report, load_golden

    golden = load_golden(path)
    if [int(i) for i in golden.sample_ids] != list(report.sample_ids):
        raise NaDeployError(f"--golden {path}: holds other samples than this run verifies; use the same --data, "
                            "--samples (and no --shard) as when it was written")
    res = golden_report(golden, report.backend_trace, net)
    if res["equal"]:
        res = golden_report(golden, report.reference_trace, net)
    d = res["first_difference"]
    msg = "golden traces reproduced exactly" if d is None else (
        f"golden difference: sample {d['sample']}, node {d['node']}, neuron {tuple(d['neuron'] or ())}: "
        f"golden {d['golden']}, got {d['got']}")
    if res.get("note"):
        msg += f" ({res['note']})"
    return {"ok": d is None, "message": msg, **res}


def _echo_check(name: str, res: Optional[dict]) -> None:
    if res is not None:
        click.echo(f"{name}: {'PASS' if res['ok'] else 'FAIL'}: {res['message']}")


def _write_outputs(payload: dict, json_out: Optional[str], junit: Optional[str]) -> None:
    from na_deploy.atomic import atomic_write_text

    if json_out:
        atomic_write_text(json_out, json.dumps(payload, indent=2, default=_jsonable) + "\n")
    if junit:
        from na_deploy.verify.junit import write_junit

        write_junit(junit, payload)


def _jsonable(o):
    return o.tolist() if hasattr(o, "tolist") else str(o)


def verdict(payload: dict) -> bool:
    """True when reference == backend on every sample asked for (no shard missing) and every other check
    that ran passed."""
    return (bool(payload["equal"]) and payload.get("complete", True) is not False
            and all(payload[k]["ok"] for k in ("provenance", "fidelity", "golden") if payload.get(k) is not None))


def _run_checks(o: dict, net, target, backend) -> dict:
    """Every check the options ask for -> the verify JSON payload (see the module docstring)."""
    from na_deploy.verify.golden import net_digest

    x, ids = _select_samples(net, o["data"], o["samples"], None if o["jobs"] > 1 else o["shard"])
    payload: dict = {"net": str(o["net_path"]), "data": o["data"] or "digits"}
    provenance = _check_provenance(o["net_path"], o["against"], target) if o["against"] else None
    fnet = None if o["skip_fidelity"] else _float_net_for(net, o["net_path"], o["float_net"])
    if fnet is None and (o["min_agreement"] is not None or o["max_node_change"] is not None):
        raise NaDeployError(f"--min-agreement / --max-node-change: {o['net_path']} records no FloatNet beside it; "
                            "pass --float-net")
    if fnet is not None and [n.name for n in fnet.all_nodes()] != [n.name for n in net.all_nodes()]:
        raise NaDeployError(f"--float-net: its nodes differ from {o['net_path']}'s; pass the FloatNet written with it")
    ref_trace = None
    if o["jobs"] > 1:
        from na_deploy.cli.verify_jobs import run_verify_jobs

        merged = run_verify_jobs(o["child_args"], min(o["jobs"], len(x)))
        merged.pop("passed", None)  # recomputed below, with this run's provenance / fidelity
        payload.update(merged)
        golden = None
    else:
        from na_deploy.verify.bit_exact import verify as verify_on

        report = verify_on(net, x, o["timesteps"], target, backend, progress=not o["quiet"],
                           sample_ids=ids, timeout_s=o["timeout"])
        payload.update(report.to_dict())
        ref_trace = report.reference_trace
        golden = _check_golden(o["golden"], report, net) if o["golden"] else None
        if o["write_golden"]:
            from na_deploy.verify.golden import write_golden

            write_golden(o["write_golden"], net, x, report.reference_trace, ids, report.timesteps)
    fid = None if fnet is None else _check_fidelity(fnet, net, target, x, o["timesteps"], o["min_agreement"],
                                                    o["max_node_change"], trace=ref_trace)
    payload.update(shard=o["shard"], net_digest=net_digest(net), provenance=provenance, fidelity=fid, golden=golden)
    payload["passed"] = verdict(payload)
    return payload


def _check_options(o: dict) -> None:
    """Option combinations that cannot work, refused before anything runs."""
    if o["jobs"] < 1:
        raise NaDeployError(f"--jobs {o['jobs']}: allowed: an integer >= 1")
    if o["jobs"] > 1 and o["shard"]:
        raise NaDeployError("--jobs and --shard: give one (--jobs J runs shards 1/J .. J/J itself)")
    if o["jobs"] > 1 and (o["golden"] or o["write_golden"]):
        raise NaDeployError("--golden / --write-golden with --jobs: golden files hold every sample of one run; "
                            "use them without --jobs")
    if o["golden"] and o["write_golden"]:
        raise NaDeployError("--golden and --write-golden: give one (check against a golden file, or write one)")
    if o["write_golden"] and o["shard"]:
        raise NaDeployError("--write-golden with --shard: a golden file holds every sample; drop --shard")
    if o["skip_fidelity"] and (o["min_agreement"] is not None or o["float_net"] or o["max_node_change"] is not None):
        raise NaDeployError("--skip-fidelity with --min-agreement / --max-node-change / --float-net: the fidelity "
                            "check is off")
    for opt in ("min_agreement", "max_node_change"):
        if o[opt] is not None and not 0.0 <= o[opt] <= 1.0:
            raise NaDeployError(f"--{opt.replace('_', '-')} {o[opt]}: allowed: a share in [0, 1]")


@click.command("verify")
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
@click.option("--shard", default=None, metavar="i/n", help="Verify only shard i of n (sample k is in shard k mod n + 1).")
@click.option("--jobs", default=1, show_default=True, type=int, help="Run J shards as parallel processes.")
@click.option("--timeout", default=None, type=float,
              help="Seconds before a Lava run counts as hung [default: 120 + 5 per Lava step].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@TARGET_OPTION
@BACKEND_OPTION
@one_line_errors
def verify(**o) -> None:
    """Reference simulator vs the backend (Lava) on the same N samples (step 5, contract C6): per-layer spike
    totals, readout potentials, the first mismatch with its sample, node, neuron and step; plus, where asked
    or possible, the provenance chain (--against), fidelity to the FloatNet, and golden traces. Exit code 0
    when every check passed, 1 when one failed, 2 on a bad request (including a net failing the fit check)."""
    _check_options(o)
    net = _load_intnet(o["net_path"])
    from na_deploy.ir.offset_calibration import check_run

    check_run(net, o["timesteps"])  # T < rho (offset calibration): one line, exit 2
    target, backend = _target_and_backend(o["target_name"], o["backend_name"], net)
    o["child_args"] = _child_args(o)
    payload = _run_checks(o, net, target, backend)
    for line in format_report(payload):
        click.echo(line)
    for name in ("provenance", "fidelity", "golden"):
        _echo_check(name, payload.get(name))
    if o["write_golden"]:
        click.echo(f"golden traces of {len(payload['sample_ids'])} samples -> {o['write_golden']}")
    _write_outputs(payload, o["json_out"], o["junit"])
    if not payload["passed"]:
        click.get_current_context().exit(1)


def _child_args(o: dict) -> list[str]:
    """The verify arguments every --jobs child repeats (each adds its own --shard and --json)."""
    args = [str(o["net_path"]), "--samples", str(o["samples"]), "--timesteps", str(o["timesteps"]),
            "--target", o["target_name"], "--quiet", "--skip-fidelity"]
    for flag, key in (("--data", "data"), ("--backend", "backend_name"), ("--timeout", "timeout"),
                      ("--float-net", "float_net")):
        if o[key] is not None:
            args += [flag, str(o[key])]
    return args
