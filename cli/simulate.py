"""`na-deploy simulate`: accuracy vs T of the ANN, the float SNN and the target's integer SNN; agreement;
occasional noise. It reads the two `.nad.h5` files `convert` writes (cli/convert.py): the IntNet NET and the
FloatNet it came from, found through the record in NET (`load_net_pair`), which refuses a FloatNet that is
not the one the IntNet came from (files written before issue 11 record the FloatNet under the legacy key
`float_net`; both are read).

Several nets with `--seeds S1,S2,...` (issue 20): net i was trained with seed S_i and is evaluated on S_i's data
split (as `pipeline --seed S_i` does); every net's numbers and their statistics over seeds
(`na_deploy.evaluate.multi_net`) are printed, written with --json and drawn with interval bars by --plot.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click
from click.core import ParameterSource

from na_deploy.errors import NaDeployError, SimulationError
from na_deploy.io.made_from import FLOAT_SUFFIX, float_net_record, float_path_for, sha256_file

from na_deploy.cli.options import (check_output_file, check_outputs, device_option, is_stdout, one_line_errors,
                                   parse_timesteps, target_option)


def load_net_pair(net_path: str, float_net: Optional[str]):
    """(IntNet, FloatNet) from the files `convert` wrote; checks flavours, topology and provenance."""
    from na_deploy.io import load_net
    from na_deploy.ir import FloatNet, IntNet

    inet = load_net(net_path)
    if not isinstance(inet, IntNet):
        raise NaDeployError(f"{net_path}: is a FloatNet; pass the fixed-point net written by `na-deploy convert` "
                            f"(e.g. net.nad.h5, not net{FLOAT_SUFFIX})")
    recorded = float_net_record(inet.meta) or {}
    if float_net is None:
        cand = Path(net_path).with_name(recorded["file"]) if recorded.get("file") else float_path_for(net_path)
        if not cand.is_file():
            raise NaDeployError(f"{net_path}: its FloatNet {cand} is missing; `convert` writes both files (or pass "
                                "--float-net)")
        float_net = str(cand)
    fnet = load_net(float_net)
    if not isinstance(fnet, FloatNet):
        raise NaDeployError(f"--float-net {float_net}: is a fixed-point IntNet; expected the FloatNet "
                            f"({FLOAT_SUFFIX}) written by `na-deploy convert`")
    if recorded.get("sha256") and recorded["sha256"] != sha256_file(float_net):
        raise NaDeployError(f"{float_net}: is not the FloatNet {net_path} was converted from (SHA-256 differs from "
                            "the one recorded at conversion)")
    fi = [(n.name, tuple(n.shape)) for n in inet.all_nodes()]
    ff = [(n.name, tuple(n.shape)) for n in fnet.all_nodes()]
    if fi != ff or tuple(inet.input.shape) != tuple(fnet.input.shape):
        raise NaDeployError(f"{float_net}: nodes / shapes differ from {net_path}; pass the FloatNet written together "
                            "with it by `na-deploy convert`")
    return inet, fnet, float_net


@click.command("simulate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("net_paths", metavar="NET [NET ...]", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--float-net", default=None,
              help="The FloatNet written with NET by `convert` [default: the sibling recorded in NET, "
                   f"*{FLOAT_SUFFIX}].")
@click.option("--data", default=None, metavar="NPZ|DIR",
              help="npz with x_train, y_train, x_test, y_test (uint8 0-255 or float in [0,1]), or an image folder "
                   "DIR/train/<class>/..., DIR/val/<class>/... (val/ is the test split); the test split is "
                   "used. Default: the embedded scikit-learn digits test split.")
@click.option("--seed", default=0, show_default=True, type=int, help="Split seed of the embedded digits.")
@click.option("--seeds", "seeds", default=None, metavar="S1,S2,...",
              help="One seed per NET, in order (net i trained with seed S_i, evaluated on its split): every net's "
                   "accuracy vs T and the statistics over seeds (mean, std, 95 % t interval; --json's stats, "
                   "the plot's bars). Replaces --seed.")
@click.option("--augment", default=None, metavar="[none|cifar|imagenet]",
              help="The augmentation the net was trained with, for its evaluation view of an image folder "
                   "(imagenet: resize 256 + centre crop 224, mixed image sizes allowed) [default: none].")
@click.option("--timesteps", default="1,2,4,8,16,32", show_default=True, help="Comma-separated T values.")
@click.option("--samples", type=int, default=None, help="Use the first N test samples [default: all].")
@target_option
@device_option
@click.option("--plot", default=None, metavar="PNG", help="Write accuracy vs T (ANN, float SNN, integer SNN).")
@click.option("--json", "json_out", default=None, metavar="FILE", help="Write every number as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@one_line_errors
def simulate(net_paths: tuple[str, ...], float_net: Optional[str], data: Optional[str], seed: int,
             seeds: Optional[str], augment: Optional[str], timesteps: str, samples: Optional[int], target_name: str,
             device: str, plot: Optional[str], json_out: Optional[str], quiet: bool) -> None:
    """Accuracy vs time steps of the quantized ANN, the float SNN and the target's integer SNN (bit-exact
    reference simulator), prediction agreement float vs integer, and the occasional-noise table (share of
    neurons whose count over T = k*p differs from the regular IF count for the input it received; and "off
    grid": count != k x its ANN level, which at k >= 2 also counts the finer rate resolution), from one run per
    simulator. Several NETs with --seeds: each net's numbers and their mean and 95 % interval over seeds."""
    from na_deploy.hw_targets import get_target

    target = get_target(target_name)
    Ts = parse_timesteps(timesteps)
    seed_list = _seed_list(net_paths, seeds, seed, float_net)
    if samples is not None and samples < 1:
        raise NaDeployError(f"--samples {samples}: allowed: a positive integer")
    for opt, path in (("--plot", plot), ("--json", json_out)):
        if path and not is_stdout(path):
            check_output_file(path, opt)
    inputs = [p for n in net_paths for p in (n, float_net or str(float_path_for(n)))]
    check_outputs({"--plot": plot, "--json": json_out}, stdout_ok=("--json",), inputs=inputs + [data])
    runs = [_simulate_one(n, float_net, data, s, augment, Ts, samples, target, device, quiet)
            for n, s in zip(net_paths, seed_list)]
    if seeds is None:
        res, model, ds_name = runs[0]
        arms, title = {model: {"ann": res["ann_accuracy"], **res["snn_accuracy"]}}, f"{model} on {ds_name}"
    else:
        res, title, arms = _combined(runs, seed_list, Ts)
    _write_outputs(res, arms, f"{title} ({target.name})", plot, json_out)


def _seed_list(net_paths: tuple[str, ...], seeds: Optional[str], seed: int, float_net: Optional[str]) -> list[int]:
    """The split seed of every NET: --seed for one net; --seeds, one per net in order, for several."""
    if seeds is None:
        if len(net_paths) > 1:
            raise NaDeployError(f"simulate: {len(net_paths)} nets need --seeds with one seed per net, in order "
                                "(e.g. --seeds 0,1,2)")
        return [seed]
    from na_deploy.pipeline.seeds import parse_seeds

    seed_list = parse_seeds(seeds)
    if len(seed_list) != len(net_paths):
        raise NaDeployError(f"--seeds {seeds}: {len(seed_list)} seeds for {len(net_paths)} nets; give one seed per "
                            "net, in order")
    if click.get_current_context().get_parameter_source("seed") not in (None, ParameterSource.DEFAULT,
                                                                       ParameterSource.DEFAULT_MAP):
        raise NaDeployError("--seed: cannot be combined with --seeds (one split seed per net)")
    if float_net is not None and len(net_paths) > 1:
        raise NaDeployError("--float-net: names one FloatNet; with several nets each one's recorded sibling is used")
    return seed_list


def _simulate_one(net_path: str, float_net: Optional[str], data: Optional[str], seed: int, augment: Optional[str],
                  Ts: list[int], samples: Optional[int], target, device: str, quiet: bool) -> tuple[dict, str, str]:
    """One net on its seed's test split: prints its tables; returns (its `--json` dict, model name, data name)."""
    from na_deploy.evaluate.accuracy import accuracy_vs_timesteps, format_accuracy_table
    from na_deploy.checks import check_timesteps
    from na_deploy.data.arrays import load_dataset
    from na_deploy.evaluate.occasional_noise import format_noise_table
    from na_deploy.ir.offset_calibration import check_run

    inet, fnet, float_file = load_net_pair(net_path, float_net)
    check_run(inet, Ts)  # T < rho: "offset calibration (rho steps) is longer than the run (T steps)"
    tmax = int(inet.meta.get("max_timesteps", max(Ts)))
    try:
        check_timesteps(Ts, tmax)
    except SimulationError:
        raise NaDeployError(f"--timesteps: T = {max(Ts)} exceeds this net's max_timesteps {tmax} (the T its static "
                            "24-bit bound is proven for); re-run convert with --max-timesteps") from None
    from na_deploy.data.loaders import eval_inputs

    ds = load_dataset(data, seed=seed, augment=augment)
    if tuple(ds.input_shape) != tuple(inet.input.shape):
        raise NaDeployError(f"--data {data or 'digits'}: images are {tuple(ds.input_shape)}, the net expects "
                            f"{tuple(inet.input.shape)}")
    x, y, n = eval_inputs(ds, samples)  # a folder is streamed in batches (bounded memory)
    if n == 0:
        raise NaDeployError(f"--data {data or 'digits'}: the test split is empty")
    acc = accuracy_vs_timesteps(fnet, inet, target, x, y, Ts, device=device, progress=not quiet, total=n)
    model = str(inet.meta.get("model", "net"))
    click.echo(f"{inet.meta.get('model', 'net')} on {ds.name}: {n} test samples, target {target.name}")
    click.echo(format_accuracy_table(acc))
    for rep in acc.noise.values():
        click.echo(format_noise_table(rep))
    if not acc.noise:
        click.echo("occasional noise: no T in --timesteps is a multiple k*p for every layer's p; add such T")
    res = acc.to_dict()
    res.update({"net": str(net_path), "float_net": float_file, "target": target.name, "data": ds.name,
                "samples": int(n), "timesteps": Ts})
    return res, model, ds.name


def _combined(runs: list[tuple[dict, str, str]], seeds: list[int], Ts: list[int]) -> tuple[dict, str, dict]:
    """(the --json dict, the plot title, the plot arms) of several nets: per_net, stats; prints the means table."""
    from na_deploy.evaluate.multi_net import combine_simulations, format_stats_table, stats_arm

    res = combine_simulations([r for r, _, _ in runs], seeds)
    first = runs[0][0]
    res.update({"nets": [r["net"] for r, _, _ in runs], "target": first["target"], "timesteps": Ts,
                "data": [r["data"] for r, _, _ in runs], "samples": [r["samples"] for r, _, _ in runs]})
    click.echo(format_stats_table(res["stats"]))
    models = sorted({m for _, m, _ in runs})
    title = f"{', '.join(models)}: mean of {len(runs)} nets (seeds), 95 % t interval"
    return res, title, {", ".join(models): stats_arm(res["stats"])}


def _write_outputs(res: dict, arms: dict, title: str, plot: Optional[str], json_out: Optional[str]) -> None:
    """--plot (interval bars where an arm has ci95) and --json (stdout with '-' or /dev/stdout)."""
    from na_deploy.atomic import atomic_write_text

    if plot:
        from na_deploy.evaluate.plots import plot_accuracy_vs_t

        plot_accuracy_vs_t(arms, plot, title=title)
        click.echo(f"plot -> {plot}")
    if is_stdout(json_out):
        click.echo(json.dumps(res, indent=2, sort_keys=True))
    elif json_out:
        atomic_write_text(json_out, json.dumps(res, indent=2, sort_keys=True))
        click.echo(f"json -> {json_out}")
