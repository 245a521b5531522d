"""`na-deploy train` (full precision) and `na-deploy quantize` (QAT with the noise adaptor).

Thin: parse options, call na_deploy.training.loop. Every bad input is a one-line `error: ...`, exit code 2, and is
detected before anything is written.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import click
from click.core import ParameterSource

from na_deploy.cli.main import UserError, one_line_errors

DATA_HELP = ("Data set: an .npz with arrays x_train, y_train, x_test, y_test (uint8 0-255 or float in [0,1]; "
             "N x H x W or N x C x H x W; integer labels in [0, K)), or an image folder DIR/train/<class>/*.png|jpg, "
             "DIR/val/<class>/... (one image size; streamed). Default: scikit-learn's embedded 8x8 "
             "digits, stratified 1437/360 split by --seed. Inputs are scaled per channel, x/255/std "
             "(no mean subtraction, so the scale folds into the first layer).")
MODEL_HELP = "Network from the registry: digits_cnn, tiny_resnet, resnet18, resnet20, resnet34, resnet50."
DEVICE_HELP = "torch device: auto (CUDA when available, else CPU), cpu, cuda, cuda:N."
NUM_CLASSES_HELP = ("K, the number of classes (outputs) of the network. Default: 1 + the largest y_train label, "
                    "and then every class 0..K-1 must occur in y_train. Given, labels must be in [0, K) and "
                    "classes without training examples are allowed (with a warning). With --from / --resume: "
                    "the checkpoint's.")
RESUME_HELP = ("Continue an interrupted run from the checkpoint it left (its --out, rewritten after every epoch): "
               "weights, optimizer, schedule and RNG state, up to the epochs it planned; on CPU the result equals "
               "the uninterrupted run. Model, data, seed and hyperparameters come from the checkpoint (a "
               "differing option is an error). Writes to --out if given, else back to CKPT.")


def check_out(out: str, option: str = "--out") -> Path:
    path = Path(out)
    if path.is_dir():
        raise UserError(f"{option} {out}: is a directory; allowed: a checkpoint file path (e.g. runs/model.pt)")
    return path


def _summary(kind: str, name: str, result, out: Path) -> str:
    h = [e for e in result.history if e["epoch"] > 0]
    sec = sum(e["seconds"] for e in h) / max(len(h), 1)
    return (f"{kind} {name}: test accuracy {result.test_accuracy:.4f} after {len(h)} epochs "
            f"({sec:.2f} s/epoch) -> {out}")


def _data_option(ctx, param, value):
    """--augment / --workers: kept in ctx.meta for `load_dataset` below (no extra command parameters)."""
    ctx.meta[f"na_deploy.{param.name}"] = value
    return value


def load_dataset(*args, **kwargs):
    """na_deploy.data.arrays.load_dataset with the running command's --augment and --workers."""
    from na_deploy.data.arrays import load_dataset as load

    meta = click.get_current_context().meta
    return load(*args, augment=meta.get("na_deploy.augment"), workers=meta.get("na_deploy.workers", 0), **kwargs)


def _common(fn):
    opts = [
        click.option("--data", default=None, metavar="NPZ|DIR", help=DATA_HELP),
        click.option("--seed", default=None, type=int,
                     help="Seed for weight init, shuffling, the digits split and the noise adaptor's eps "
                          "[default: 0; quantize --from: the checkpoint's seed]."),
        click.option("--batch-size", default=64, show_default=True, type=int, help="Mini-batch size."),
        click.option("--device", default="auto", show_default=True, help=DEVICE_HELP),
        click.option("--quiet", is_flag=True, help="No progress bar."),
        click.option("--num-classes", default=None, type=int, metavar="K", help=NUM_CLASSES_HELP),
        click.option("--resume", default=None, metavar="CKPT", help=RESUME_HELP),
        click.option("--augment", default=None, metavar="[none|cifar|imagenet]", expose_value=False,
                     callback=_data_option, help="Training augmentation (default none): cifar = pad 4 + random crop "
                     "+ flip; imagenet = RandomResizedCrop 224 + flip, evaluation resize 256 + centre crop 224 "
                     "(image folders only). Stored in the checkpoint: --resume continues with it."),
        click.option("--workers", default=0, show_default=True, type=int, expose_value=False, callback=_data_option,
                     help="DataLoader worker processes for image folders / augmented data (0: the main process)."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _say(message: str, err: bool = False) -> None:
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


def _warn(message: str) -> None:
    _say(message, err=True)


def _given(*names: str) -> dict:
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


def _check_data_given(ck, data: Optional[str], option: str, path: str) -> None:
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


def _resume(kind: str, resume: str, given: dict, data: Optional[str], device: str, quiet: bool) -> None:
    """`train --resume` / `quantize --resume`: check the checkpoint against the command and the options the
    user gave, load the same data, and continue the run. Every refusal comes before anything is written."""
    from na_deploy.training.checkpoint import load_checkpoint
    from na_deploy.training.loop import check_compatible, check_resumable, resolve_device, resume_training

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
    _check_data_given(ck, data, "--resume", resume)
    _resume_augment(ck, resume)
    dataset = load_dataset(data, ck.seed, ck.num_classes, _warn, f"the checkpoint {resume}")
    check_compatible(ck, dataset)
    _say(f"resuming {ck.kind} {ck.model_name} from {resume} after epoch {ck.epoch} of {ck.epochs} "
               f"-> {out_path}")
    result = resume_training(ck, dataset, device=device, out=str(out_path), progress=not quiet)
    tag = f"qat p={ck.p} ({'noise adaptor on' if ck.noise_adaptor else 'noise adaptor off'})"
    _say(_summary("fp" if kind == "fp" else tag, ck.model_name, result, out_path))


@click.command("train")
@click.option("--model", "model_name", default="digits_cnn", show_default=True, help=MODEL_HELP)
@click.option("--epochs", default=30, show_default=True, type=int, help="Full-precision training epochs.")
@click.option("--lr", default=0.1, show_default=True, type=float,
              help="Initial learning rate (SGD, momentum 0.9, cosine decay to 0; weight decay 5e-4 on "
                   "conv/linear weights only).")
@click.option("--out", default="runs/fp.pt", show_default=True, help="Checkpoint to write (atomically).")
@_common
@one_line_errors
@torchrun_world
def train(model_name: str, epochs: int, lr: float, out: str, data: Optional[str], seed: Optional[int],
          batch_size: int, device: str, quiet: bool, num_classes: Optional[int], resume: Optional[str]) -> None:
    """Train a full-precision ANN (ReLU, BatchNorm) -- step 0, the starting point of `quantize`.

    The checkpoint holds the model name and arguments, the input scale, weights, optimizer and schedule
    state, the data fingerprint, seed and per-epoch history.

    Multi-process: `torchrun --nproc_per_node N na-deploy train ...` trains with DDP (no extra option; see
    na_deploy.training.distributed): --batch-size is the global batch, rank 0 writes --out and prints.
    """
    from na_deploy.training.checkpoint import check_model_name
    from na_deploy.training.loop import resolve_device, train_full_precision

    if resume is not None:
        given = _given("model_name", "epochs", "lr", "batch_size", "seed", "num_classes", "out")
        return _resume("fp", resume, given, data, device, quiet)
    out_path = check_out(out)
    seed = 0 if seed is None else seed
    check_model_name(model_name)
    resolve_device(device)
    dataset = load_dataset(data, seed, num_classes, _warn)
    result = train_full_precision(dataset, model_name, epochs=epochs, lr=lr, seed=seed, device=device,
                                  batch_size=batch_size, out=str(out_path), progress=not quiet)
    _say(_summary("fp", model_name, result, out_path))


def _load_from(from_ckpt: str, model_name: Optional[str], data: Optional[str], seed: Optional[int],
               num_classes: Optional[int]):
    """`quantize --from`: the fp checkpoint, the seed (default: the checkpoint's) and the same data, checked
    against each other before anything is written. The classes are the checkpoint's."""
    from na_deploy.training.checkpoint import load_checkpoint
    from na_deploy.training.loop import check_compatible

    fp = load_checkpoint(from_ckpt)
    seed = fp.seed if seed is None else seed
    if fp.kind != "fp":
        raise UserError(f"--from {from_ckpt}: kind is {fp.kind!r}; allowed: a full-precision checkpoint "
                        f"from `na-deploy train`")
    _check_data_given(fp, data, "--from", from_ckpt)
    if num_classes is not None and num_classes != fp.num_classes:
        raise UserError(f"--num-classes {num_classes} conflicts with --from {from_ckpt}, a {fp.num_classes}-class "
                        f"model; QAT keeps the full-precision model's classes")
    dataset = load_dataset(data, seed, fp.num_classes, _warn, f"the checkpoint {from_ckpt}")
    check_compatible(fp, dataset, model_name)
    fp.build_model()  # weights of another model -> CheckpointError before anything is written
    return fp, seed, dataset


@click.command("quantize")
@click.option("--from", "from_ckpt", default=None, metavar="CKPT",
              help="Full-precision checkpoint from `na-deploy train`. If omitted, a full-precision model is "
                   "trained first (--fp-epochs, --fp-lr) and saved beside --out as <name>-fp.pt.")
@click.option("--model", "model_name", default=None,
              help=MODEL_HELP + " With --from it must match the checkpoint (default: the checkpoint's); "
                   "without --from the default is digits_cnn.")
@click.option("--p", "p", default=2, show_default=True, type=int,
              help="Positive integer p: the number of positive quantization levels of every activation, "
                   "q = s*round(clip(v/s + eps, 0, p)). After conversion each IF neuron's threshold is th = p*s "
                   "and p is the most spikes per input the layer needs. s, the step size, is learned per layer "
                   "(initialised by an MSE-optimal search over full-precision activations).")
@click.option("--noise-adaptor/--no-noise-adaptor", default=True, show_default=True,
              help="Noise adaptor (paper eq. 7-8): add eps ~ U(-1/2, 1/2) per element to v/s before rounding in "
                   "every training forward (the same eps in the backward pass, eq. 9-10), so the network learns "
                   "to tolerate the SNN's conversion noise; eps = 0 at evaluation.")
@click.option("--epochs", default=20, show_default=True, type=int, help="QAT epochs.")
@click.option("--l1-sparsity", "l1_sparsity", default=0.0, show_default=True, type=float, metavar="LAMBDA",
              help="Datta et al.'s fine-grained L1 activation regularizer: adds LAMBDA x the mean quantized level "
                   "per neuron (= spikes per neuron per p steps of the SNN) to the loss; 0 = off.")
@click.option("--lr", default=0.05, show_default=True, type=float,
              help="QAT initial learning rate for weights and step sizes s (SGD momentum 0.9, cosine; no weight "
                   "decay on BN, biases or s).")
@click.option("--fp-epochs", default=30, show_default=True, type=int,
              help="Full-precision epochs when --from is omitted.")
@click.option("--fp-lr", default=0.1, show_default=True, type=float,
              help="Full-precision learning rate when --from is omitted.")
@click.option("--out", default="runs/qat.pt", show_default=True, help="QAT checkpoint to write (atomically).")
@_common
@one_line_errors
@torchrun_world
def quantize(from_ckpt: Optional[str], model_name: Optional[str], p: int, noise_adaptor: bool, epochs: int,
             lr: float, fp_epochs: int, fp_lr: float, out: str, data: Optional[str], seed: Optional[int],
             batch_size: int, device: str, quiet: bool, num_classes: Optional[int], resume: Optional[str],
             l1_sparsity: float) -> None:
    """Quantization-aware training with the noise adaptor (Li & Rajendran, arXiv 2312.05290) -- step 1.

    Every ReLU becomes a quantized activation with p levels and a learnable step size s (LSQ gradient,
    eq. 10, with gradient scale 1/sqrt(n*p)); max-pools become average pools; any other activation is
    refused. Reported accuracy is the quantized ANN's (eps = 0), which the converted SNN approaches.

    Multi-process: `torchrun --nproc_per_node N na-deploy quantize ...` trains with DDP (as `train`); eps is
    drawn per rank from a seed of (--seed, rank, epoch).
    """
    from na_deploy.training.checkpoint import check_model_name, load_checkpoint
    from na_deploy.checks import check_p
    from na_deploy.training.loop import resolve_device, train_full_precision, train_qat

    if resume is not None:
        given = _given("from_ckpt", "model_name", "p", "noise_adaptor", "epochs", "lr", "batch_size", "seed",
                       "num_classes", "out", "l1_sparsity")
        return _resume("qat", resume, given, data, device, quiet)
    from na_deploy.training.l1_sparsity import check_l1

    l1_sparsity = check_l1(l1_sparsity)
    out_path = check_out(out)
    p = check_p(p)
    resolve_device(device)
    if from_ckpt is not None:
        fp, seed, dataset = _load_from(from_ckpt, model_name, data, seed, num_classes)
    else:
        seed = 0 if seed is None else seed
        model_name = model_name or "digits_cnn"
        check_model_name(model_name)
        dataset = load_dataset(data, seed, num_classes, _warn)
        fp_path = out_path.with_name(out_path.stem + "-fp" + (out_path.suffix or ".pt"))
        check_out(str(fp_path), "fp checkpoint")
        _say(f"no --from given: training {model_name} in full precision first ({fp_epochs} epochs) "
                   f"-> {fp_path}")
        fp_res = train_full_precision(dataset, model_name, epochs=fp_epochs, lr=fp_lr, seed=seed, device=device,
                                      batch_size=batch_size, out=str(fp_path), progress=not quiet)
        _say(_summary("fp", model_name, fp_res, fp_path))
        fp = load_checkpoint(fp_path)
    result = train_qat(dataset, fp, p=p, noise_adaptor=noise_adaptor, epochs=epochs, lr=lr, seed=seed,
                       device=device, batch_size=batch_size, out=str(out_path), progress=not quiet,
                       l1_sparsity=l1_sparsity)
    calib = result.history[0]["test_acc"]
    tag = "noise adaptor on" if noise_adaptor else "noise adaptor off"
    _say(f"calibrated quantized ANN before QAT (p={p}): test accuracy {calib:.4f}")
    _say(_summary(f"qat p={p} ({tag})", fp.model_name, result, out_path))
