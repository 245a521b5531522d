"""`na-deploy convert` (QAT checkpoint -> FloatNet -> target fixed point) and `na-deploy simulate` (accuracy vs T
of the ANN, the float SNN and the target's integer SNN; agreement; occasional noise).

Files: `convert` writes TWO `.nad.h5` files, both atomically, the FloatNet first:
    OUT                      the IntNet (fixed point for the target): what export / verify / report / Lava read;
    OUT with .nad.h5 -> .float.nad.h5 (or --float-out)   the FloatNet it came from (BN folded, real weights):
                             what the ANN and float-SNN columns of `simulate` need.
(the same layout `na-deploy pipeline` writes, through the same `na_deploy.verify.provenance.save_net_pair`). The chain is
recorded (C8): the FloatNet's meta `made_from` names the checkpoint (base name + SHA-256), the IntNet's names the
FloatNet, so `simulate` finds the sibling by itself and refuses a FloatNet that is not the one the IntNet came
from (files written before issue 11 record the FloatNet under the legacy key `float_net`; both are read).
Nothing is written when conversion or the fit check fails (exit 2, one line naming node, quantity and limit).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from na_deploy.errors import NaDeployError, SimulationError
from na_deploy.io.made_from import FLOAT_SUFFIX, float_net_record, float_path_for, sha256_file

from na_deploy.cli.main import one_line_errors, parse_timesteps

def _check_out(out: str, option: str) -> Path:
    """An output file option as a Path; refuses a directory (before anything is computed)."""
    p = Path(out)
    if p.is_dir():
        raise NaDeployError(f"{option} {out}: is a directory; allowed: a file path such as runs/net.nad.h5")
    return p


# -------------------------------------------------------------------------------------- convert
@click.command("convert")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--out", default="runs/net.nad.h5", show_default=True,
              help="The fixed-point IntNet to write (.nad.h5, atomically).")
@click.option("--float-out", default=None,
              help="Where the FloatNet goes [default: OUT with .nad.h5 -> .float.nad.h5]; `simulate` needs it.")
@click.option("--target", "target_name", default="loihi2", show_default=True, help="Hardware target.")
@click.option("--max-timesteps", type=int, default=None,
              help="Largest T the static 24-bit bound is proven for (stored in the net; simulate / verify refuse "
                   "larger T) [default: the target's, 256 for loihi2]. Smaller values can allow finer scales.")
@click.option("--no-self-check", is_flag=True,
              help="Skip comparing the FloatNet (as a quantized ANN) with the torch model on random images.")
@click.option("--neuron", "neuron", default="subtract", show_default=True,
              metavar="[subtract|zero|negative|accumulate]",
              help="Neuron mode: subtract (the paper's IF: v >= th, v <- v - th), zero (Lava's stock LIF rule: "
                   "v > th, v <- 0; threshold, pre-charge and relays re-parametrised, see convert.neuron_modes), "
                   "negative (QFFS signed spikes: -1 when v < 0 undoes an earlier spike) or accumulate (Datta's "
                   "accumulate-then-fire: T steps of integration, then T steps of firing).")
@click.option("--offset-steps", "offset_steps", type=int, default=0, show_default=True, metavar="RHO",
              help="Two-stage offset calibration (COS, mode subtract only): a RHO-step run first sets each "
                   "neuron's start to pc + o*th, o in {-1, 0, 1}; 0 = off. Stored in the net; simulate / verify "
                   "refuse T < RHO; one inference takes RHO + T steps (na_deploy.ir.offset_calibration).")
@click.option("--bn-bias-shift", "bias_shift", type=int, default=None, metavar="T",
              help="Datta et al.'s BN-bias shift for T steps instead of the pre-charge: bias += pre-charge / T "
                   "(th / 2T in mode subtract), pre-charge 0 (convert/bias_shift.py derives it).")
@click.option("--quiet", is_flag=True, help="Print only the summary line.")
@one_line_errors
def convert(checkpoint: str, out: str, float_out: Optional[str], target_name: str, max_timesteps: Optional[int],
            no_self_check: bool, neuron: str, offset_steps: int, bias_shift: Optional[int], quiet: bool) -> None:
    """QAT checkpoint -> integrate-and-fire SNN (FloatNet) -> target fixed point (IntNet), steps 2-3.

    BN is folded, each quantized ReLU becomes an IF population with threshold p*s, pre-charge th/2 and reset
    by subtraction; residual paths are delay-balanced with relays. The fixed point gives every node one
    integer scale shared by all its inputs, Lava-compatible weight mantissas and a static bound proving no
    accumulator or membrane leaves 24 bits for T <= --max-timesteps. Prints the quantization and fit
    reports; a net that does not fit is refused (exit 2) and nothing is written.
    """
    from na_deploy.convert import convert_checkpoint
    from na_deploy.convert.neuron_modes import NEURON_MODES
    from na_deploy.hw_targets import get_target
    from na_deploy.protocols import require_fit
    from na_deploy.verify.provenance import save_net_pair

    if neuron not in NEURON_MODES:
        raise NaDeployError(f"--neuron {neuron}: unknown neuron mode; allowed: {', '.join(NEURON_MODES)}")
    target = get_target(target_name)
    out_p = _check_out(out, "--out")
    fout_p = _check_out(float_out, "--float-out") if float_out else float_path_for(out_p)
    if fout_p.resolve() == out_p.resolve():
        raise NaDeployError(f"--float-out {fout_p}: must differ from --out")
    if max_timesteps is not None and max_timesteps < 1:
        raise NaDeployError(f"--max-timesteps {max_timesteps}: allowed: a positive integer")
    if bias_shift is not None and bias_shift < 1:
        raise NaDeployError(f"--bn-bias-shift {bias_shift}: allowed: the positive T the shift is made for")
    if offset_steps < 0:
        raise NaDeployError(f"--offset-steps {offset_steps}: allowed: an integer >= 0 (0 = off)")
    if offset_steps and neuron != "subtract":
        raise NaDeployError(f"--offset-steps {offset_steps}: offset calibration needs --neuron subtract, got "
                            f"--neuron {neuron}; allowed: --offset-steps 0 with {neuron}")
    fnet = convert_checkpoint(checkpoint, self_check=not no_self_check, neuron=neuron,
                              bias_shift_timesteps=bias_shift, offset_steps=offset_steps)
    inet, qrep = target.to_fixed_point_with_report(fnet, max_timesteps=max_timesteps)
    if not quiet:
        click.echo(qrep.format())
    for v in target.check_fit(inet):
        click.echo(f"  {v}", err=True)
    require_fit(target, inet, suffix="; nothing written")
    save_net_pair(fnet, inet, fout_p, out_p)
    relays = sum(n.role == "relay" for n in inet.nodes)
    if not quiet:
        click.echo(f"fit check ({target.name}): no violations; static bound proven for "
                   f"T <= {inet.meta.get('max_timesteps')}")
    how = f"neuron {neuron}" + (f", offset calibration {offset_steps} steps (+{offset_steps} steps per inference)"
                                if offset_steps else "")
    click.echo(f"converted {fnet.meta.get('model', 'model')} ({len(inet.nodes) - relays} layers, {relays} relays, "
               f"readout {inet.readout.shape[0]} classes; {how}) -> {out_p} (fixed point, {target.name}) + {fout_p} "
               "(float)")


# ------------------------------------------------------------------------------------- simulate
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


@click.command("simulate")
@click.argument("net_path", type=click.Path(dir_okay=False))
@click.option("--float-net", default=None,
              help=f"The FloatNet written with NET by `convert` [default: the sibling recorded in NET, *{FLOAT_SUFFIX}].")
@click.option("--data", default=None, metavar="NPZ|DIR",
              help="npz with x_train, y_train, x_test, y_test (uint8 0-255 or float in [0,1]), or an image folder "
                   "DIR/train/<class>/..., DIR/val/<class>/... (val/ is the test split); the test split is "
                   "used. Default: the embedded scikit-learn digits test split.")
@click.option("--seed", default=0, show_default=True, type=int, help="Split seed of the embedded digits.")
@click.option("--augment", default=None, metavar="[none|cifar|imagenet]",
              help="The augmentation the net was trained with, for its evaluation view of an image folder "
                   "(imagenet: resize 256 + centre crop 224, mixed image sizes allowed) [default: none].")
@click.option("--timesteps", default="1,2,4,8,16,32", show_default=True, help="Comma-separated T values.")
@click.option("--samples", type=int, default=None, help="Use the first N test samples [default: all].")
@click.option("--target", "target_name", default="loihi2", show_default=True, help="Hardware target.")
@click.option("--device", default=None, help="torch device [default: cuda if available, else cpu].")
@click.option("--plot", default=None, metavar="PNG", help="Write accuracy vs T (ANN, float SNN, integer SNN).")
@click.option("--json", "json_out", default=None, metavar="FILE", help="Write every number as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@one_line_errors
def simulate(net_path: str, float_net: Optional[str], data: Optional[str], seed: int, augment: Optional[str],
             timesteps: str, samples: Optional[int], target_name: str, device: Optional[str], plot: Optional[str],
             json_out: Optional[str], quiet: bool) -> None:
    """Accuracy vs time steps of the quantized ANN, the float SNN and the target's integer SNN (bit-exact
    reference simulator), prediction agreement float vs integer, and the occasional-noise table (share of
    neurons whose count over T = k*p differs from the regular IF count for the input it received; and "off
    grid": count != k x its ANN level, which at k >= 2 also counts the finer rate resolution), from one run per simulator."""
    from na_deploy.evaluate.accuracy import accuracy_vs_timesteps, format_accuracy_table
    from na_deploy.atomic import atomic_write_text
    from na_deploy.checks import check_timesteps
    from na_deploy.data.arrays import load_dataset
    from na_deploy.hw_targets import get_target
    from na_deploy.evaluate.occasional_noise import format_noise_table

    target = get_target(target_name)
    Ts = parse_timesteps(timesteps)
    if samples is not None and samples < 1:
        raise NaDeployError(f"--samples {samples}: allowed: a positive integer")
    for opt, path in (("--plot", plot), ("--json", json_out)):
        if path:
            _check_out(path, opt)
    inet, fnet, float_file = load_net_pair(net_path, float_net)
    from na_deploy.ir.offset_calibration import check_run

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
    click.echo(f"{inet.meta.get('model', 'net')} on {ds.name}: {n} test samples, target {target.name}")
    click.echo(format_accuracy_table(acc))
    for rep in acc.noise.values():
        click.echo(format_noise_table(rep))
    if not acc.noise:
        click.echo("occasional noise: no T in --timesteps is a multiple k*p for every layer's p; add such T")
    res = acc.to_dict()
    res.update({"net": str(net_path), "float_net": float_file, "target": target.name, "data": ds.name,
                "samples": int(n), "timesteps": Ts})
    if plot:
        from na_deploy.evaluate.plots import plot_accuracy_vs_t

        arm = {"ann": res["ann_accuracy"], **res["snn_accuracy"]}
        plot_accuracy_vs_t({str(inet.meta.get("model", "net")): arm}, plot,
                           title=f"{inet.meta.get('model', 'net')} on {ds.name} ({target.name})")
        click.echo(f"plot -> {plot}")
    if json_out:
        atomic_write_text(json_out, json.dumps(res, indent=2, sort_keys=True))
        click.echo(f"json -> {json_out}")
