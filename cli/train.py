"""`na-deploy train` (full precision), and what `train` and `quantize` (cli/quantize.py) share beyond their
options (cli/options.py `training_options`): `--resume` of either kind, the torchrun wrapper, rank-0 output.

Thin: parse options, call na_deploy.training.loop. Every bad input is a one-line `error: ...`, exit code 2, and is
detected before anything is written.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import click
from click.core import ParameterSource

from na_deploy.cli.options import (MODEL_HELP, UserError, check_output_file, check_weights_use, load_dataset,
                                   one_line_errors, training_options, weights_options)


def check_out(out: str, option: str = "--out") -> Path:
    """A checkpoint output option as a Path; refuses a directory (before anything is computed)."""
    return check_output_file(out, option, "a checkpoint file path (e.g. runs/model.pt)")


def summary_line(kind: str, name: str, result, out: Path) -> str:
    h = [e for e in result.history if e["epoch"] > 0]
    sec = result.seconds_per_epoch
    return (f"{kind} {name}: test accuracy {result.test_accuracy:.4f} after {len(h)} epochs "
            f"({sec:.2f} s/epoch) -> {out}")


def say(message: str, err: bool = False) -> None:
    """click.echo, by rank 0 alone under torchrun."""
    from na_deploy.training.distributed import current

    if current().is_main:
        click.echo(message, err=err)


def torchrun_world(fn):
    """Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT set) run the command inside
    the process group (na_deploy.training.distributed.process_group, DDP training); ranks > 0 show no progress."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from na_deploy.training.distributed import process_group

        with process_group(kwargs.get("device", "auto")) as world:
            if not world.is_main:
                kwargs["quiet"] = True
            return fn(*args, **kwargs)
    return wrapper


def warn(message: str) -> None:
    say(message, err=True)


def given_options(*names: str) -> dict:
    """The options of the running command that the user set (not left at their defaults)."""
    ctx = click.get_current_context()
    return {n: ctx.params[n] for n in names
            if ctx.get_parameter_source(n) not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}


def _planned(ck) -> dict:
    """option -> (the checkpoint's value, the option's flag)."""
    hp = ck.hparams
    return {"model_name": (ck.model_name, "--model"), "epochs": (ck.epochs, "--epochs"), "lr": (hp.get("lr"), "--lr"),
            "batch_size": (hp.get("batch_size"), "--batch-size"), "seed": (ck.seed, "--seed"),
            "num_classes": (ck.num_classes, "--num-classes"), "p": (ck.p, "--p"),
            "noise_adaptor": (ck.noise_adaptor, "--noise-adaptor"),
            "l1_sparsity": (hp.get("l1_sparsity", 0.0), "--l1-sparsity")}


def _as_option(flag: str, value) -> str:
    if flag == "--noise-adaptor":
        return "--noise-adaptor" if value else "--no-noise-adaptor"
    return f"{flag} {value}"


def check_data_given(ck, data: Optional[str], option: str, path: str) -> None:
    """A checkpoint trained on a user file needs that file again (else the digits would be loaded)."""
    if data is None and not str(ck.data_name).startswith("digits("):
        raise UserError(f"{option} {path}: its run trained on {ck.data_name!r}, not the embedded digits; give "
                        f"that file with --data")


def _resume_augment(ck, resume: str) -> None:
    """A resumed run trains with its checkpoint's augmentation; a different --augment is refused in one line."""
    meta = click.get_current_context().meta
    was, asked = ck.hparams.get("augment", "none"), meta.get("na_deploy.augment")
    if asked is not None and asked != was:
        raise UserError(f"--augment {asked} conflicts with --resume {resume}, whose run has --augment {was}; a "
                        "resumed run continues as planned (drop --augment or give the checkpoint's value)")
    meta["na_deploy.augment"] = was


def resume_run(kind: str, resume: str, given: dict, data: Optional[str], device: str, quiet: bool) -> None:
    """`train --resume` / `quantize --resume`: check the checkpoint against the command and the options the
    user gave, load the same data, and continue the run. Every refusal comes before anything is written."""
    from na_deploy.training.checkpoint import load_checkpoint
    from na_deploy.device import resolve_device
    from na_deploy.training.loop import check_compatible, check_resumable, resume_training

    command = "train" if kind == "fp" else "quantize"
    out_path = check_out(given["out"]) if "out" in given else Path(resume)
    resolve_device(device)
    ck = load_checkpoint(resume)
    if ck.kind != kind:
        writer = "train" if ck.kind == "fp" else "quantize"
        raise UserError(f"--resume {resume}: kind is {ck.kind!r} (written by `na-deploy {writer}`); "
                        f"`na-deploy {command} --resume` continues a {kind!r} checkpoint")
    planned = _planned(ck)
    for name, value in given.items():
        if name in planned and value != planned[name][0]:
            was, flag = planned[name]
            raise UserError(f"{_as_option(flag, value)} conflicts with --resume {resume}, whose run has "
                            f"{_as_option(flag, was)}; a resumed run continues as planned (drop {flag} or give "
                            f"the checkpoint's value)")
    parent = (ck.parent or {}).get("path")
    if "from_ckpt" in given and parent and Path(given["from_ckpt"]).resolve() != Path(parent).resolve():
        raise UserError(f"--from {given['from_ckpt']} conflicts with --resume {resume}, which started from "
                        f"{parent}; a resumed run needs no --from")
    check_resumable(ck)  # finished run, missing state, weights of another model: before the data is read
    check_data_given(ck, data, "--resume", resume)
    _resume_augment(ck, resume)
    dataset = load_dataset(data, ck.seed, ck.num_classes, warn, f"the checkpoint {resume}")
    check_compatible(ck, dataset)
    say(f"resuming {ck.kind} {ck.model_name} from {resume} after epoch {ck.epoch} of {ck.epochs} "
               f"-> {out_path}")
    result = resume_training(ck, dataset, device=device, out=str(out_path), progress=not quiet)
    tag = f"qat p={ck.p} ({'noise adaptor on' if ck.noise_adaptor else 'noise adaptor off'})"
    say(summary_line("fp" if kind == "fp" else tag, ck.model_name, result, out_path))


@click.command("train", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_name", default="digits_cnn", show_default=True, help=MODEL_HELP)
@click.option("--epochs", default=30, show_default=True, type=int, help="Full-precision training epochs.")
@click.option("--lr", default=0.1, show_default=True, type=float,
              help="Initial learning rate (SGD, momentum 0.9, cosine decay to 0; weight decay 5e-4 on "
                   "conv/linear weights only).")
@click.option("--out", default="runs/fp.pt", show_default=True, help="Checkpoint to write (atomically).")
@weights_options
@training_options
@one_line_errors
@torchrun_world
def train(model_name: str, epochs: int, lr: float, out: str, data: Optional[str], seed: Optional[int],
          batch_size: int, device: str, quiet: bool, num_classes: Optional[int], resume: Optional[str],
          weights: Optional[str] = None, reset_head: bool = False) -> None:
    """Train a full-precision ANN (ReLU, BatchNorm) -- step 0, the starting point of `quantize`.

    The checkpoint holds the model name and arguments, the input scale, weights, optimizer and schedule
    state, the data fingerprint, seed and per-epoch history.

    Multi-process: `torchrun --nproc_per_node N na-deploy train ...` trains with DDP (no extra option; see
    na_deploy.training.distributed): --batch-size is the global batch, rank 0 writes --out and prints.
    """
    from na_deploy.training.checkpoint import check_model_name
    from na_deploy.device import resolve_device
    from na_deploy.training.loop import train_full_precision

    check_weights_use(weights, reset_head, resume)
    if resume is not None:
        given = given_options("model_name", "epochs", "lr", "batch_size", "seed", "num_classes", "out")
        return resume_run("fp", resume, given, data, device, quiet)
    out_path = check_out(out)
    seed = 0 if seed is None else seed
    check_model_name(model_name)
    resolve_device(device)
    dataset = load_dataset(data, seed, num_classes, warn)
    result = train_full_precision(dataset, model_name, epochs=epochs, lr=lr, seed=seed, device=device,
                                  batch_size=batch_size, out=str(out_path), progress=not quiet, weights=weights,
                                  reset_head=reset_head, log=say)
    say(summary_line("fp", model_name, result, out_path))
