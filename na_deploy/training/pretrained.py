"""A full-precision checkpoint from a weights file, without training (`quantize --weights FILE`, issue 19).

The paper (arXiv 2312.05290 §5.1) starts QAT from pretrained full-precision models. `pretrained_fp` builds the
model of a spec, loads the weights strictly (`weights.build_with_weights`), measures the test accuracy of the
full-precision model and writes a kind "fp" checkpoint with 0 epochs (history: epoch 0 only), recording the
spec, the builder file's and the weights file's SHA-256 in `model_source` (docs/contract.md C8). Note: the
input scale is the data's x/255/std per channel (C4, no mean subtraction), not torchvision's normalisation;
QAT adapts the weights to it.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from na_deploy.data.arrays import Dataset
from na_deploy.errors import ModelError
from na_deploy.training import distributed
from na_deploy.training.checkpoint import Checkpoint, cpu_state_dict, save_checkpoint
from na_deploy.training.loop import MOMENTUM, TrainResult, dataset_accuracy, model_kwargs_for
from na_deploy.training.weights import build_with_weights


def pretrained_fp(dataset: Dataset, spec: str, weights: str, *, reset_head: bool = False, seed: int = 0,
                  device: Optional[str] = None, batch_size: int = 64, weight_decay: float = 5e-4,
                  out: Optional[str] = None, log: Optional[Callable[[str], None]] = None) -> TrainResult:
    """The fp checkpoint of `spec` with the `weights` file's state_dict (no training; written to `out`)."""
    dev = distributed.rank_device(device)
    kwargs = model_kwargs_for(dataset, None)
    torch.manual_seed(seed)  # a reset head is initialised from the seed
    model, source = build_with_weights(spec, kwargs, weights, reset_head, log)
    model = model.to(dev)
    acc = dataset_accuracy(model, dataset, dataset.normalization, device=dev)
    history = [{"epoch": 0, "lr": 0.0, "train_loss": None, "train_acc": None, "test_acc": acc}]
    ckpt = Checkpoint(
        kind="fp", model_name=spec, model_kwargs=kwargs, input_shape=dataset.input_shape,
        num_classes=dataset.num_classes, channel_scale=dataset.normalization.channel_scale,
        state_dict=cpu_state_dict(model), data_fingerprint=dataset.fingerprint, data_name=dataset.name, seed=seed,
        epochs=0, history=history, model_source=source,
        hparams={"lr": 0.0, "batch_size": batch_size, "weight_decay": weight_decay, "momentum": MOMENTUM,
                 "pretrained": True})
    if out is not None and distributed.current().is_main:
        save_checkpoint(ckpt, out)
        ckpt.path = str(out)
    return TrainResult(model, ckpt, history)


def check_model_before_writing(spec: str, model_kwargs: dict, weights: Optional[str] = None,
                               reset_head: bool = False, p: int = 2) -> torch.nn.Module:
    """Every refusal a run could meet in its model, before anything is written (issue 19 item 5): a spec whose
    builder does not exist, a file that raises on import, a builder returning no module, a weights file with
    missing / unexpected / mis-shaped keys, an op with no exact SNN form (GELU, SiLU, attention, ...). One-line
    ModelError naming it; the global torch RNG is left as it was (the run then builds its model from its seed).
    Returns the quantized model (untrained step sizes), for a structural conversion check by the caller."""
    from na_deploy.training.checkpoint import check_model_name
    from na_deploy.training.surgery import quantize_model

    check_model_name(spec)
    with torch.random.fork_rng(devices=[]):
        model, _ = build_with_weights(spec, model_kwargs, weights, reset_head, None)
        try:
            return quantize_model(model, p)
        except ModelError as e:
            raise ModelError(f"--model {spec}: {e}") from e
