"""Full-precision training and quantization-aware training with the noise adaptor (issue 2, C1).

Both use: SGD (momentum 0.9, Nesterov off), cross-entropy, a cosine learning-rate schedule stepped per
batch, lr_i = lr * (1 + cos(pi * i / total_steps)) / 2, and weight decay only on conv / linear weights
(never on BatchNorm parameters, biases or the step sizes s). The input normalisation x_norm = x_uint8 *
channel_scale_c (C4) is applied by the training loop and stored in the checkpoint.

QAT (`train_qat`) starts from a full-precision checkpoint: the model is rebuilt, every ReLU becomes
QuantReLU(p, s, noise_adaptor) (`quantize_model`), each s is initialised by an MSE-optimal search over
the full-precision activations of a calibration batch (`calibrate_step_sizes`), then weights and s train
together. Reported accuracies are of the quantized ANN in eval mode (eps = 0).

Determinism: `torch.manual_seed(seed)` before building the model, a dedicated shuffle generator seeded with
`seed`; on CPU the same seed and data give the same weights.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from na_deploy.training import distributed
from na_deploy.training.checkpoint import Checkpoint, cpu_state_dict, load_checkpoint, save_checkpoint
from na_deploy.checks import check_p
from na_deploy.data.arrays import Dataset, Loaders, Normalization, make_loaders, test_batches
from na_deploy.errors import CheckpointError, ModelError
from na_deploy.training.l1_sparsity import ActivationL1, check_l1
from na_deploy.training.surgery import calibrate_step_sizes, quant_layers, quantize_model
from na_deploy.training.quantizer import DEFAULT_NOISE_RANGE, check_noise_range, set_noise_range
from na_deploy.training.weights import build_with_weights

# Defaults chosen on digits / digits_cnn (see the issue-2 note): a good result in well under a minute on 2 cores.
FP_DEFAULTS = dict(epochs=30, lr=0.1, batch_size=64, weight_decay=5e-4)
QAT_DEFAULTS = dict(epochs=20, lr=0.05, batch_size=64, weight_decay=5e-4)
MOMENTUM = 0.9
CALIBRATION_SAMPLES = 512


@dataclass
class TrainResult:
    model: nn.Module
    checkpoint: Checkpoint
    history: list = field(default_factory=list)
    seconds_per_epoch: float = 0.0  # wall time of this process's epochs (never stored: checkpoints stay deterministic)

    @property
    def test_accuracy(self) -> float:
        return float(self.history[-1]["test_acc"]) if self.history else float("nan")


# ---------------------------------------------------------------------------------- building blocks
def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights (ndim > 1) only; BN parameters, biases and step sizes s
    (all ndim <= 1) get none."""
    decay, no_decay = [], []
    for _, prm in model.named_parameters():
        if not prm.requires_grad:
            continue
        (decay if prm.ndim > 1 else no_decay).append(prm)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, total_steps: int):
    """SGD(momentum 0.9) + per-batch cosine annealing to 0 over `total_steps`."""
    opt = torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=MOMENTUM)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    return opt, sched


@torch.no_grad()
def model_accuracy(model: nn.Module, x, y, norm: Normalization, batch_size: int = 512,
                   device: Optional[str | torch.device] = None) -> float:
    """Top-1 accuracy of the torch `model` (eval mode, eps = 0) on uint8 images `x` and labels `y`.

    (`na_deploy.simulate.ann` measures the converted FloatNet as a quantized ANN; `na_deploy.evaluate.accuracy` the
    SNNs.)"""
    if device is None:
        device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for i in range(0, len(y), batch_size):
            xb = norm.apply(x[i:i + batch_size].to(device))
            pred = model(xb).argmax(dim=1)
            correct += int((pred.cpu() == y[i:i + batch_size].cpu()).sum())
    finally:
        model.train(was_training)
    return correct / max(len(y), 1)


def dataset_accuracy(model: nn.Module, dataset: Dataset, norm: Normalization, batch_size: int = 512,
                     device: Optional[str | torch.device] = None) -> float:
    """`model_accuracy` over the data set's test split, streamed (`data.test_batches`: npz arrays or an image
    folder's evaluation views); the same figure as model_accuracy on the whole array."""
    correct = seen = 0
    for xb, yb in test_batches(dataset, batch_size):
        correct += round(model_accuracy(model, xb, yb, norm, batch_size, device) * len(yb))
        seen += len(yb)
    return correct / max(seen, 1)


def train_one_epoch(model: nn.Module, loaders: Loaders, norm: Normalization, opt, sched,
                    l1_sparsity: float = 0.0) -> tuple[float, float]:
    """One pass over the shuffled training split; returns (mean loss, train accuracy). l1_sparsity = λ > 0 adds
    λ x the mean quantized level per neuron (na_deploy.training.l1_sparsity, Datta et al.) to the loss. Under torchrun
    `model` is the DDP wrapper, each rank's loss weighted so the averaged gradient is the global batch's
    (na_deploy.training.distributed.step_weight) and the returned figures are over the global batches."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    reg = ActivationL1(model) if l1_sparsity > 0 else None
    for xb, yb in loaders.train():
        if reg is None:
            logits = model(norm.apply(xb))
            loss = F.cross_entropy(logits, yb)
        else:
            with reg:
                logits = model(norm.apply(xb))
                loss = F.cross_entropy(logits, yb) + l1_sparsity * reg.penalty()
        opt.zero_grad(set_to_none=True)
        weight = distributed.step_weight(len(yb))
        (loss if weight is None else loss * weight).backward()
        opt.step()
        sched.step()
        n = len(yb)
        total_loss += loss.detach().item() * n
        correct += int((logits.argmax(1) == yb).sum())
        seen += n
    total_loss, correct, seen = distributed.reduce_sums(total_loss, correct, seen)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def fit(model: nn.Module, dataset: Dataset, norm: Normalization, *, epochs: int, lr: float, batch_size: int,
        weight_decay: float, seed: int, device: torch.device, desc: str, progress: bool = True,
        history: Optional[list] = None, start_epoch: int = 0, stop_after: Optional[int] = None,
        opt_state: Optional[dict] = None, sched_state: Optional[dict] = None, rng_state: Optional[dict] = None,
        on_epoch: Optional[Callable[[int, list, object, object, Loaders], None]] = None, l1_sparsity: float = 0.0):
    """The shared loop: epochs start_epoch+1 .. min(epochs, stop_after), each a shuffled training pass, then
    a test evaluation, under a tqdm bar. Optimizer / schedule / RNG state can be restored (resume).
    Returns (history, opt, sched, loaders). Under torchrun (na_deploy.training.distributed): the ranks' data and
    options are compared first, each rank trains on its shard of every global batch through DDP with
    global-batch BatchNorm statistics, eps re-seeded per rank and epoch; only rank 0 shows progress."""
    world = distributed.current()
    distributed.check_same_data(dataset, seed=seed, batch_size=batch_size, epochs=epochs, lr=lr,
                                weight_decay=weight_decay, start_epoch=start_epoch, l1_sparsity=l1_sparsity)
    loaders = distributed.rank_loaders(make_loaders, dataset, batch_size, seed, device)
    opt, sched = make_optimizer(model, lr, weight_decay, epochs * loaders.num_train_batches())
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    if sched_state is not None:
        sched.load_state_dict(sched_state)
    if rng_state is not None:
        torch.set_rng_state(rng_state["torch"])
        loaders.generator.set_state(rng_state["shuffle"])
    history = list(history or [])
    last = epochs if stop_after is None else min(epochs, int(stop_after))
    bar = tqdm(range(start_epoch + 1, last + 1), desc=desc, unit="epoch", disable=not (progress and world.is_main),
               leave=False)
    with distributed.global_batchnorm(model):
        net = distributed.wrap(model, torch.device(device))
        for epoch in bar:
            distributed.seed_noise(seed, epoch)
            lr_now = opt.param_groups[0]["lr"]
            loss, train_acc = train_one_epoch(net, loaders, norm, opt, sched, l1_sparsity)
            test_acc = dataset_accuracy(model, dataset, norm, device=device)
            history.append({"epoch": epoch, "lr": lr_now, "train_loss": loss, "train_acc": train_acc,
                            "test_acc": test_acc,  # no wall time: same inputs, same checkpoint bytes
                            **({"world_size": world.world_size} if world.distributed else {})})
            bar.set_postfix(loss=f"{loss:.3f}", test_acc=f"{test_acc:.4f}")
            if on_epoch is not None:
                on_epoch(epoch, history, opt, sched, loaders)
    bar.close()
    return history, opt, sched, loaders


def _check_positive(name: str, value, integer: bool = False) -> None:
    ok = value is not None and (value >= 1 if integer else (value > 0 and math.isfinite(value)))
    if not ok:
        raise ModelError(f"{name}: must be {'a positive integer' if integer else 'a positive number'}, got {value!r}")


def model_kwargs_for(dataset: Dataset, model_kwargs: Optional[dict]) -> dict:
    """in_channels / num_classes / input_size from the data; square images required."""
    c, h, w = dataset.input_shape
    if h != w:
        raise ModelError(f"model: images are {h}x{w}; the shipped models take square inputs")
    kw = {"in_channels": c, "num_classes": dataset.num_classes, "input_size": h}
    kw.update(model_kwargs or {})
    return kw


def _rng_state(loaders: Loaders) -> dict:
    """The torch RNG (eps; under torchrun rank 0's, re-seeded per epoch anyway) and the shuffle generator (the
    same on every rank), + the world size when it was > 1."""
    world = distributed.current().world_size
    return {"torch": torch.get_rng_state(), "shuffle": loaders.generator.get_state(),
            **({"world_size": world} if world > 1 else {})}


def snapshot(template: Checkpoint, model: nn.Module, epoch: int, history: list, opt, sched,
             loaders: Loaders) -> Checkpoint:
    """`template` with the current weights, optimizer / schedule / RNG state, epoch and history."""
    return dataclasses.replace(template, state_dict=cpu_state_dict(model), epoch=epoch, history=list(history),
                               optimizer_state=opt.state_dict(), scheduler_state=sched.state_dict(),
                               rng_state=_rng_state(loaders), path=None)


def run_and_save(model: nn.Module, dataset: Dataset, template: Checkpoint, out: Optional[str], dev: torch.device,
                 desc: str, progress: bool, stop_after: Optional[int] = None, history: Optional[list] = None,
                 resume_from: Optional[Checkpoint] = None) -> TrainResult:
    """Train per `template.hparams`, saving a resumable checkpoint to `out` after every epoch (atomic)."""
    hp = template.hparams
    state: dict = {}

    def on_epoch(epoch, hist, opt, sched, loaders):
        state["ckpt"] = snapshot(template, model, epoch, hist, opt, sched, loaders)
        if out is not None and distributed.current().is_main:  # torchrun: rank 0 alone writes
            save_checkpoint(state["ckpt"], out)

    rs = resume_from
    t0, before = time.perf_counter(), len(history or [])
    hist, opt, sched, loaders = fit(
        model, dataset, template.normalization, epochs=template.epochs, lr=hp["lr"], batch_size=hp["batch_size"],
        weight_decay=hp["weight_decay"], seed=template.seed, device=dev, desc=desc, progress=progress,
        history=history, start_epoch=rs.epoch if rs else 0, stop_after=stop_after,
        opt_state=rs.optimizer_state if rs else None, sched_state=rs.scheduler_state if rs else None,
        rng_state=rs.rng_state if rs else None, on_epoch=on_epoch, l1_sparsity=hp.get("l1_sparsity", 0.0))
    ckpt = state.get("ckpt") or snapshot(template, model, rs.epoch if rs else 0, hist, opt, sched, loaders)
    distributed.barrier()  # the other ranks return once rank 0's checkpoint is on disk
    return TrainResult(model, ckpt, hist, (time.perf_counter() - t0) / max(len(hist) - before, 1))


# ---------------------------------------------------------------------------------- entry points
def train_full_precision(dataset: Dataset, model_name: str, epochs: int = FP_DEFAULTS["epochs"],
                         lr: float = FP_DEFAULTS["lr"], seed: int = 0, device: Optional[str] = None,
                         batch_size: int = FP_DEFAULTS["batch_size"],
                         weight_decay: float = FP_DEFAULTS["weight_decay"], model_kwargs: Optional[dict] = None,
                         out: Optional[str] = None, progress: bool = True,
                         stop_after: Optional[int] = None, weights: Optional[str] = None, reset_head: bool = False,
                         log: Optional[Callable[[str], None]] = None) -> TrainResult:
    """Train `model_name` (a registry name or a `model_spec` spec) in full precision on `dataset`, from the
    `weights` file if given (`weights.build_with_weights`); with `out`, a resumable checkpoint is written
    after every epoch. `stop_after` ends the run early at that epoch (the schedule still spans `epochs`;
    `resume_training` continues it)."""
    _check_positive("epochs", epochs, integer=True)
    _check_positive("lr", lr)
    _check_positive("batch_size", batch_size, integer=True)
    dev = distributed.rank_device(device)
    kwargs = model_kwargs_for(dataset, model_kwargs)
    torch.manual_seed(seed)
    model, source = build_with_weights(model_name, kwargs, weights, reset_head, log)
    model = model.to(dev)
    norm = dataset.normalization
    template = Checkpoint(model_source=source,
        kind="fp", model_name=model_name, model_kwargs=kwargs, input_shape=dataset.input_shape,
        num_classes=dataset.num_classes, channel_scale=norm.channel_scale, state_dict={},
        data_fingerprint=dataset.fingerprint, data_name=dataset.name, seed=seed, epochs=epochs,
        hparams={"lr": lr, "batch_size": batch_size, "weight_decay": weight_decay, "momentum": MOMENTUM,
                 **_augment_hparam(dataset)})
    return run_and_save(model, dataset, template, out, dev, f"fp {model_name}", progress, stop_after)


def _augment_hparam(dataset) -> dict:
    """{"augment": name} for an augmented run (resume continues it), {} for none: same bytes as before."""
    augment = getattr(dataset, "augment", "none") or "none"
    return {} if augment == "none" else {"augment": augment}


def check_compatible(ckpt: Checkpoint, dataset: Dataset, model_name: Optional[str] = None) -> None:
    """The checkpoint must be of `model_name` (if given), for the data's image shape and number of classes,
    and trained on the same data (fingerprint)."""
    where = ckpt.path or "checkpoint"
    if model_name is not None and model_name != ckpt.model_name:
        raise CheckpointError(f"{where}: holds model {ckpt.model_name!r}, not the requested {model_name!r}")
    if tuple(ckpt.input_shape) != tuple(dataset.input_shape):
        raise CheckpointError(f"{where}: holds a model for C x H x W = {tuple(ckpt.input_shape)} inputs; the data "
                              f"{dataset.name!r} has {tuple(dataset.input_shape)} images")
    if int(ckpt.num_classes) != int(dataset.num_classes):
        raise CheckpointError(f"{where}: holds a {ckpt.num_classes}-class model; the data {dataset.name!r} has "
                              f"{dataset.num_classes} classes (see --num-classes)")
    if ckpt.data_fingerprint != dataset.fingerprint:
        raise CheckpointError(f"{where}: trained on data {ckpt.data_name!r} (fingerprint "
                              f"{ckpt.data_fingerprint[:12]}), not on {dataset.name!r} ({dataset.fingerprint[:12]})")


def calibration_batch(dataset: Dataset, norm: Normalization, seed: int, device: torch.device,
                      n: int = CALIBRATION_SAMPLES) -> torch.Tensor:
    """A seeded random subset of `n` training images, normalised."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset.y_train), generator=gen)[:n].numpy()
    return norm.apply(torch.from_numpy(dataset.train_images(np.sort(idx))).to(device))


def train_qat(dataset: Dataset, fp_checkpoint: Checkpoint | str, p: int = 2, noise_adaptor: bool = True,
              epochs: int = QAT_DEFAULTS["epochs"], lr: float = QAT_DEFAULTS["lr"], seed: int = 0,
              device: Optional[str] = None, batch_size: int = QAT_DEFAULTS["batch_size"],
              weight_decay: float = QAT_DEFAULTS["weight_decay"], model_name: Optional[str] = None,
              out: Optional[str] = None, progress: bool = True, calibrate: bool = True,
              stop_after: Optional[int] = None, l1_sparsity: float = 0.0,
              noise_range: float = DEFAULT_NOISE_RANGE) -> TrainResult:
    """QAT from a full-precision checkpoint: ReLU -> QuantReLU(p, s, noise_adaptor), s calibrated
    (MSE-optimal), then train (with λ = l1_sparsity > 0: + λ x mean level, na_deploy.training.l1_sparsity).
    The noise adaptor draws eps ~ U(-W/2, W/2), W = noise_range (> 0; recorded in hparams when not 1).
    History entry epoch 0 is the calibrated quantized ANN before training."""
    p = check_p(p)
    l1_sparsity = check_l1(l1_sparsity)
    noise_range = check_noise_range(noise_range)
    _check_positive("epochs", epochs, integer=True)
    _check_positive("lr", lr)
    _check_positive("batch_size", batch_size, integer=True)
    fp = load_checkpoint(fp_checkpoint) if not isinstance(fp_checkpoint, Checkpoint) else fp_checkpoint
    if fp.kind != "fp":
        raise CheckpointError(f"{fp.path or 'checkpoint'}: kind is {fp.kind!r}; QAT starts from a full-precision "
                              f"(kind 'fp') checkpoint")
    check_compatible(fp, dataset, model_name)
    dev = distributed.rank_device(device)
    torch.manual_seed(seed)
    norm = fp.normalization
    model = quantize_model(fp.build_model(), p, noise_adaptor).to(dev)
    set_noise_range(model, noise_range)
    if calibrate:
        calibrate_step_sizes(model, calibration_batch(dataset, norm, seed, dev), seed=seed)
    acc0 = dataset_accuracy(model, dataset, norm, device=dev)
    history = [{"epoch": 0, "lr": 0.0, "train_loss": None, "train_acc": None,
                "test_acc": acc0}]
    tag = "noise adaptor" if noise_adaptor else "no noise"
    template = Checkpoint(
        kind="qat", model_name=fp.model_name, model_kwargs=fp.model_kwargs, input_shape=fp.input_shape,
        model_source=fp.model_source,
        num_classes=fp.num_classes, channel_scale=fp.channel_scale, state_dict={},
        data_fingerprint=dataset.fingerprint, data_name=dataset.name, seed=seed, p=p,
        noise_adaptor=bool(noise_adaptor), epochs=epochs,
        hparams={"lr": lr, "batch_size": batch_size, "weight_decay": weight_decay, "momentum": MOMENTUM,
                 **({"l1_sparsity": l1_sparsity} if l1_sparsity > 0 else {}),  # absent at 0: same bytes as before
                 **({"noise_range": noise_range} if noise_range != DEFAULT_NOISE_RANGE else {}),  # absent at 1
                 **_augment_hparam(dataset)},
        parent={"path": fp.path, "data_fingerprint": fp.data_fingerprint, "kind": fp.kind})
    return run_and_save(model, dataset, template, out, dev, f"qat p={p} {tag}", progress, stop_after, history)


def check_resumable(ck: Checkpoint, dataset: Optional[Dataset] = None) -> nn.Module:
    """CheckpointError (one line) unless `resume_training` can continue `ck` (on `dataset`, if given: same model
    input and classes, same data): unfinished, with optimizer / schedule / RNG state and weights of its own
    model. Returns the rebuilt model (weights loaded, on CPU)."""
    where = ck.path or "checkpoint"
    if dataset is not None:
        check_compatible(ck, dataset)
    if ck.epoch >= ck.epochs:
        raise CheckpointError(f"{where}: run already complete (epoch {ck.epoch} of {ck.epochs}); nothing to resume")
    if ck.optimizer_state is None or ck.scheduler_state is None or ck.rng_state is None:
        raise CheckpointError(f"{where}: lacks optimizer/scheduler/rng state needed to resume")
    return ck.build_model()


def resume_training(checkpoint: Checkpoint | str, dataset: Dataset, device: Optional[str] = None,
                    out: Optional[str] = None, progress: bool = True,
                    stop_after: Optional[int] = None) -> TrainResult:
    """Continue an interrupted fp or QAT run from its checkpoint (weights, step sizes, optimizer, schedule,
    RNG state) up to its planned epochs; on CPU the result equals the uninterrupted run. Saves to `out`
    (default: the checkpoint's own path) after every epoch."""
    ck = load_checkpoint(checkpoint) if not isinstance(checkpoint, Checkpoint) else checkpoint
    model = check_resumable(ck, dataset)
    dev = distributed.rank_device(device)
    model = model.to(dev)
    template = dataclasses.replace(ck, path=None)
    desc = f"resume {ck.kind} {ck.model_name}"
    return run_and_save(model, dataset, template, out if out is not None else ck.path, dev, desc, progress,
                        stop_after, ck.history, resume_from=ck)


def step_sizes(model: nn.Module) -> dict[str, float]:
    """{layer path: s} of every QuantReLU."""
    return {name: float(m.step_size.detach().abs()) for name, m in quant_layers(model)}
