"""`na-deploy convert`: QAT checkpoint -> FloatNet -> target fixed point (steps 2-3).

Files: `convert` writes TWO `.nad.h5` files, both atomically, the FloatNet first:
    OUT                      the IntNet (fixed point for the target): what export / verify / report / Lava read;
    OUT with .nad.h5 -> .float.nad.h5 (or --float-out)   the FloatNet it came from (BN folded, real weights):
                             what the ANN and float-SNN columns of `simulate` need.
(the same layout `na-deploy pipeline` writes, through the same `na_deploy.verify.provenance.save_net_pair`). The
chain is recorded (C8): the FloatNet's meta `made_from` names the checkpoint (base name + SHA-256), the IntNet's
names the FloatNet, so `simulate` (cli/simulate.py) finds the sibling by itself and refuses a FloatNet that is not
the one the IntNet came from. Nothing is written when conversion or the fit check fails (exit 2, one line naming
node, quantity and limit).
"""
from __future__ import annotations

from typing import Optional

import click

from na_deploy.errors import NaDeployError
from na_deploy.io.made_from import float_path_for

from na_deploy.cli.options import check_output_file, check_outputs, one_line_errors, target_option


@click.command("convert", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--out", default="runs/net.nad.h5", show_default=True,
              help="The fixed-point IntNet to write (.nad.h5, atomically).")
@click.option("--float-out", default=None,
              help="Where the FloatNet goes [default: OUT with .nad.h5 -> .float.nad.h5]; `simulate` needs it.")
@target_option
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
    out_p = check_output_file(out, "--out")
    fout_p = check_output_file(float_out, "--float-out") if float_out else float_path_for(out_p)
    if fout_p.resolve() == out_p.resolve():
        raise NaDeployError(f"--float-out {fout_p}: must differ from --out")
    check_outputs({"--out": out, "--float-out": str(fout_p)}, inputs=[checkpoint])
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
