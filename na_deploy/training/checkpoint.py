"""Training checkpoints: one `torch.save`d dict, written atomically, holding everything needed to rebuild
the model (and its quantized activations) and to resume training.

Keys (FORMAT_VERSION 1):
    format, version, kind ("fp" | "qat"), model_name, model_kwargs (in_channels, num_classes, input_size,
    + width options), input_shape (C, H, W), num_classes, p (None for fp), noise_adaptor (None for fp),
    channel_scale (per-channel input scale, C4: x_norm = x_uint8 * scale_c), state_dict (step sizes s of
    every QuantReLU included), optimizer_state, scheduler_state, epoch (completed), epochs (planned),
    hparams (lr, batch_size, weight_decay, momentum), data_fingerprint, data_name, seed, history,
    rng_state (torch CPU RNG + shuffle generator, for an exact resume), parent (the fp checkpoint a QAT run
    started from: path + data fingerprint), na_deploy_version; model_source only for a model from outside the
    registry or from a weights file (`na_deploy.training.model_spec`: the spec, a builder file's SHA-256, the
    weights file's name and SHA-256; C8), so registry checkpoints keep their bytes.

Loading uses `torch.load(weights_only=True)`: only tensors and plain Python containers are accepted.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from na_deploy import __version__
from na_deploy.atomic import atomic_write_bytes
from na_deploy.data.arrays import Normalization
from na_deploy.errors import CheckpointError, ModelError, NaDeployError
from na_deploy.models import ModelRegistryError, build_model, model_spec
from na_deploy.training.model_spec import build_external, check_source, check_spec, is_external

FORMAT_NAME = "na-deploy-checkpoint"
FORMAT_VERSION = 1
KINDS = ("fp", "qat")


def build_registry_model(name: str, **kwargs: Any) -> nn.Module:
    """`na_deploy.models.build_model(name, **kwargs)`, or the module of an external spec (torchvision:NAME,
    module:builder, file.py:builder; `model_spec.build_external`); the registry's refusal (unknown name, bad
    size or arguments) becomes a `ModelError` with the same one-line message."""
    if is_external(name):
        return build_external(name, **kwargs)
    try:
        return build_model(name, **kwargs)
    except ModelRegistryError as e:
        raise ModelError(str(e)) from e


def check_model_name(name: str) -> None:
    """ModelError listing the known models unless `name` is one of them (or an external spec whose builder
    can be found)."""
    if is_external(name):
        check_spec(name)
        return
    try:
        model_spec(name)
    except ModelRegistryError as e:
        raise ModelError(str(e)) from e


@dataclass
class Checkpoint:
    """A loaded (or about to be saved) checkpoint. `build_model()` rebuilds the torch model."""

    kind: str
    model_name: str
    model_kwargs: dict
    input_shape: tuple[int, int, int]
    num_classes: int
    channel_scale: tuple[float, ...]
    state_dict: dict
    data_fingerprint: str
    seed: int
    p: Optional[int] = None
    noise_adaptor: Optional[bool] = None
    data_name: str = ""
    epoch: int = 0
    epochs: int = 0
    hparams: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    optimizer_state: Optional[dict] = None
    scheduler_state: Optional[dict] = None
    rng_state: Optional[dict] = None
    parent: Optional[dict] = None
    model_source: Optional[dict] = None  # external spec / weights file provenance (model_spec.source_record)
    path: Optional[str] = None  # where it was loaded from (not saved)

    @property
    def normalization(self) -> Normalization:
        return Normalization(tuple(self.channel_scale))

    def build_model(self, load_weights: bool = True) -> nn.Module:
        """The torch model: registry model (+ QuantReLUs with p / noise flag for kind "qat"), weights loaded."""
        from na_deploy.training.quantizer import set_noise_range
        from na_deploy.training.surgery import quantize_model

        where = self.path or "checkpoint"
        try:
            check_source(self.model_name, self.model_source, where)
            model = build_registry_model(self.model_name, **self.model_kwargs)
            if self.kind == "qat":
                model = quantize_model(model, self.p, bool(self.noise_adaptor))
                set_noise_range(model, self.hparams.get("noise_range", 1.0))  # absent (old files): W = 1
        except NaDeployError as e:
            raise CheckpointError(f"{where}: cannot rebuild model {self.model_name!r}: {e}") from e
        if load_weights:
            load_weights_into(model, self.state_dict, where, self.model_name)
        return model

    def to_dict(self) -> dict:
        return {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": self.kind,
            "model_name": self.model_name, "model_kwargs": dict(self.model_kwargs),
            "input_shape": list(self.input_shape), "num_classes": int(self.num_classes),
            "p": self.p, "noise_adaptor": self.noise_adaptor, "channel_scale": [float(s) for s in self.channel_scale],
            "state_dict": self.state_dict, "optimizer_state": self.optimizer_state,
            "scheduler_state": self.scheduler_state, "epoch": int(self.epoch), "epochs": int(self.epochs),
            "hparams": dict(self.hparams), "data_fingerprint": self.data_fingerprint, "data_name": self.data_name,
            "seed": int(self.seed), "history": list(self.history), "rng_state": self.rng_state,
            "parent": self.parent, "na_deploy_version": __version__,
            **({"model_source": dict(self.model_source)} if self.model_source is not None else {}),
        }


def load_weights_into(model: nn.Module, state_dict: dict, where: str, model_name: str) -> None:
    """Strict load; a key/shape mismatch (weights of another model) -> CheckpointError."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    extra = [k for k in state_dict if k not in own]
    shapes = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or extra or shapes:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra
                  else f"shape mismatch at {shapes[:3]}")
        raise CheckpointError(f"{where}: state_dict does not match model {model_name!r} ({detail}); "
                              f"the weights belong to another model")
    model.load_state_dict(state_dict, strict=True)


def cpu_state_dict(model: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _tensors_to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _tensors_to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_tensors_to_cpu(v) for v in obj)
    return obj


def save_checkpoint(ckpt: Checkpoint, path: str | os.PathLike) -> Path:
    """torch.save the checkpoint dict atomically (temp file + rename); returns the path. Saved into memory first:
    torch names the archive inside the zip after the file it writes, and the temp file's name is random, so the
    same checkpoint saved twice would differ in bytes (a buffer's archive is always named "archive")."""
    if ckpt.kind not in KINDS:
        raise CheckpointError(f"{path}: kind must be one of {KINDS}, got {ckpt.kind!r}")
    path = Path(path)
    buf = io.BytesIO()
    torch.save(_tensors_to_cpu(ckpt.to_dict()), buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


_REQUIRED = ("kind", "model_name", "model_kwargs", "input_shape", "num_classes", "channel_scale",
             "state_dict", "data_fingerprint", "seed")


MAX_INPUT_ELEMENTS = 2 ** 26  # one sample's elements: a declared input_shape beyond it is refused, not allocated


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load and validate. CheckpointError: missing file, not a checkpoint, version mismatch, bad fields."""
    path = str(path)
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a na-deploy checkpoint (torch.load failed: {type(e).__name__}); "
                              f"allowed: a file written by `na-deploy train` / `quantize`") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a na-deploy checkpoint (format field missing); allowed: a file "
                              f"written by `na-deploy train` / `quantize`")
    if raw.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {raw.get('version')!r}; this na-deploy reads "
                              f"version {FORMAT_VERSION}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks field(s) {', '.join(missing)}")
    if raw["kind"] not in KINDS:
        raise CheckpointError(f"{path}: field kind is {raw['kind']!r}; allowed: {', '.join(KINDS)}")
    if raw["kind"] == "qat" and not (isinstance(raw.get("p"), int) and raw["p"] >= 1):
        raise CheckpointError(f"{path}: field p is {raw.get('p')!r}; allowed: a positive integer for kind qat")
    try:
        ck = _checkpoint_of(raw, path)
    except (TypeError, ValueError, OverflowError) as e:
        msg = " ".join(str(e).split())
        raise CheckpointError(f"{path}: a field has the wrong type or value ({type(e).__name__}: {msg}); allowed: "
                              "a file written by `na-deploy train` / `quantize`") from None
    n = 1
    for d in ck.input_shape:
        n *= max(d, 0)
    if not ck.input_shape or min(ck.input_shape) < 1 or n > MAX_INPUT_ELEMENTS:
        raise CheckpointError(f"{path}: field input_shape is {ck.input_shape}; allowed: dimensions >= 1 with at "
                              f"most {MAX_INPUT_ELEMENTS} elements")
    return ck


def _checkpoint_of(raw: dict, path: str) -> Checkpoint:
    """The Checkpoint of a raw dict whose format, version, required fields, kind and p are checked."""
    return Checkpoint(
        kind=raw["kind"], model_name=raw["model_name"], model_kwargs=dict(raw["model_kwargs"]),
        input_shape=tuple(int(d) for d in raw["input_shape"]), num_classes=int(raw["num_classes"]),
        channel_scale=tuple(float(s) for s in raw["channel_scale"]), state_dict=raw["state_dict"],
        data_fingerprint=raw["data_fingerprint"], seed=int(raw["seed"]), p=raw.get("p"),
        noise_adaptor=raw.get("noise_adaptor"), data_name=raw.get("data_name", ""),
        epoch=int(raw.get("epoch", 0)), epochs=int(raw.get("epochs", 0)), hparams=dict(raw.get("hparams") or {}),
        history=list(raw.get("history") or []), optimizer_state=raw.get("optimizer_state"),
        scheduler_state=raw.get("scheduler_state"), rng_state=raw.get("rng_state"), parent=raw.get("parent"),
        model_source=raw.get("model_source"), path=path,
    )
