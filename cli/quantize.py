"""`na-deploy quantize`: quantization-aware training with the noise adaptor (step 1), from a `train` checkpoint
(--from) or after training one first; `--resume` continues an interrupted run (cli/train.py `resume_run`).

Thin: parse options, call na_deploy.training.loop. Every bad input is a one-line `error: ...`, exit code 2, and is
detected before anything is written.
"""
from __future__ import annotations

from typing import Optional

import click

from na_deploy.cli.options import (MODEL_HELP, UserError, check_weights_use, load_dataset, one_line_errors,
                                   training_options, weights_options)
from na_deploy.cli.train import (check_data_given, check_out, given_options, resume_run, say, summary_line,
                                 torchrun_world, warn)


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
    check_data_given(fp, data, "--from", from_ckpt)
    if num_classes is not None and num_classes != fp.num_classes:
        raise UserError(f"--num-classes {num_classes} conflicts with --from {from_ckpt}, a {fp.num_classes}-class "
                        f"model; QAT keeps the full-precision model's classes")
    dataset = load_dataset(data, seed, fp.num_classes, warn, f"the checkpoint {from_ckpt}")
    check_compatible(fp, dataset, model_name)
    fp.build_model()  # weights of another model -> CheckpointError before anything is written
    return fp, seed, dataset


def _full_precision(dataset, model_name: str, fp_path, fp_epochs: int, fp_lr: float, seed: int, device: str,
                    batch_size: int, quiet: bool, weights: Optional[str], reset_head: bool):
    """quantize without --from: the fp checkpoint beside --out, trained (fp_epochs > 0, from --weights if
    given) or the --weights file as it is (fp_epochs 0: --weights without --fp-epochs)."""
    from na_deploy.training.loop import train_full_precision
    from na_deploy.training.pretrained import pretrained_fp

    if fp_epochs == 0:
        say(f"no --from given: {model_name} with the weights of {weights} (no full-precision training; "
            f"--fp-epochs N fine-tunes them) -> {fp_path}")
        return pretrained_fp(dataset, model_name, weights, reset_head=reset_head, seed=seed, device=device,
                             batch_size=batch_size, out=str(fp_path), log=say)
    start = f" from {weights}" if weights else ""
    say(f"no --from given: training {model_name} in full precision first{start} ({fp_epochs} epochs) "
        f"-> {fp_path}")
    return train_full_precision(dataset, model_name, epochs=fp_epochs, lr=fp_lr, seed=seed, device=device,
                                batch_size=batch_size, out=str(fp_path), progress=not quiet, weights=weights,
                                reset_head=reset_head, log=say)


def _check_noise_range(noise_range: float, noise_adaptor: bool, resume: Optional[str]) -> float:
    """--noise-range W: finite and > 0; with --no-noise-adaptor (no eps drawn) or --resume (the run continues
    with its checkpoint's W) only when it is that run's value."""
    from na_deploy.training.quantizer import DEFAULT_NOISE_RANGE, check_noise_range

    w = check_noise_range(noise_range)
    if not given_options("noise_range"):
        return w
    if not noise_adaptor and w != DEFAULT_NOISE_RANGE:
        raise UserError(f"--noise-range {noise_range}: has no effect with --no-noise-adaptor (no eps is drawn)")
    if resume is not None:
        from na_deploy.training.checkpoint import load_checkpoint

        was = float(load_checkpoint(resume).hparams.get("noise_range", DEFAULT_NOISE_RANGE))
        if w != was:
            raise UserError(f"--noise-range {noise_range} conflicts with --resume {resume}, whose run has "
                            f"--noise-range {was:g}; a resumed run continues as planned (drop --noise-range)")
    return w


@click.command("quantize", context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--noise-range", "noise_range", default=1.0, show_default=True, type=float, metavar="W",
              help="Width W of the noise adaptor's eps ~ U(-W/2, W/2) (finite, > 0; the paper's W = 1). Recorded in "
                   "the checkpoint when not 1.")
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
@weights_options
@training_options
@one_line_errors
@torchrun_world
def quantize(from_ckpt: Optional[str], model_name: Optional[str], p: int, noise_adaptor: bool, epochs: int,
             lr: float, fp_epochs: int, fp_lr: float, out: str, data: Optional[str], seed: Optional[int],
             batch_size: int, device: str, quiet: bool, num_classes: Optional[int], resume: Optional[str],
             l1_sparsity: float, weights: Optional[str] = None, reset_head: bool = False,
             noise_range: float = 1.0) -> None:
    """Quantization-aware training with the noise adaptor (Li & Rajendran, arXiv 2312.05290) -- step 1.

    Every ReLU becomes a quantized activation with p levels and a learnable step size s (LSQ gradient,
    eq. 10, with gradient scale 1/sqrt(n*p)); max-pools become average pools; any other activation is
    refused. Reported accuracy is the quantized ANN's (eps = 0), which the converted SNN approaches.

    Multi-process: `torchrun --nproc_per_node N na-deploy quantize ...` trains with DDP (as `train`); eps is
    drawn per rank from a seed of (--seed, rank, epoch).
    """
    from na_deploy.training.checkpoint import check_model_name, load_checkpoint
    from na_deploy.checks import check_p
    from na_deploy.device import resolve_device
    from na_deploy.training.loop import train_qat

    check_weights_use(weights, reset_head, resume, from_ckpt)
    noise_range = _check_noise_range(noise_range, noise_adaptor, resume)
    if resume is not None:
        given = given_options("from_ckpt", "model_name", "p", "noise_adaptor", "epochs", "lr", "batch_size", "seed",
                       "num_classes", "out", "l1_sparsity")
        return resume_run("qat", resume, given, data, device, quiet)
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
        dataset = load_dataset(data, seed, num_classes, warn)
        fp_path = out_path.with_name(out_path.stem + "-fp" + (out_path.suffix or ".pt"))
        check_out(str(fp_path), "fp checkpoint")
        from na_deploy.training.loop import model_kwargs_for
        from na_deploy.training.pretrained import check_model_before_writing

        check_model_before_writing(model_name, model_kwargs_for(dataset, None), weights, reset_head, p)
        fine_tune = weights is None or "fp_epochs" in given_options("fp_epochs")
        fp_res = _full_precision(dataset, model_name, fp_path, fp_epochs if fine_tune else 0, fp_lr, seed, device,
                                 batch_size, quiet, weights, reset_head)
        say(summary_line("fp", model_name, fp_res, fp_path))
        fp = load_checkpoint(fp_path)
    result = train_qat(dataset, fp, p=p, noise_adaptor=noise_adaptor, epochs=epochs, lr=lr, seed=seed,
                       device=device, batch_size=batch_size, out=str(out_path), progress=not quiet,
                       l1_sparsity=l1_sparsity, noise_range=noise_range)
    calib = result.history[0]["test_acc"]
    tag = "noise adaptor on" if noise_adaptor else "noise adaptor off"
    say(f"calibrated quantized ANN before QAT (p={p}): test accuracy {calib:.4f}")
    say(summary_line(f"qat p={p} ({tag})", fp.model_name, result, out_path))
