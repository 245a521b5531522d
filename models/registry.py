"""Model registry: `build_model(name, in_channels=..., num_classes=..., input_size=...)`.

Every model takes `in_channels`, `num_classes` and `input_size` (square side in pixels) plus optional
width arguments (`base_width` for the ResNets, `widths` for the small nets). The exact keyword arguments
are what a checkpoint records to rebuild the model.

This package imports only torch and the standard library (the layering rule tests/test_layering.py
enforces), so a refusal here is a `ModelRegistryError` (a ValueError). na_deploy's callers
(`na_deploy.training.loop.build_registry_model` / `check_model_name`, `Checkpoint.build_model`) turn it into
na_deploy's `ModelError`, which the CLI prints as a one-line `error: ...` with exit code 2.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from torch import nn

from na_deploy.models.resnet import resnet18, resnet20, resnet34, resnet50
from na_deploy.models.small import digits_cnn, tiny_resnet


class ModelRegistryError(ValueError):
    """The registry refuses a model name or its arguments; the message is one line naming the model."""


class ModelSpec(NamedTuple):
    factory: Callable[..., nn.Module]
    min_size: int          # smallest input side the net accepts
    size_multiple: int     # input side must be a multiple of this (1 = any)
    default_size: int      # the side it was designed for
    description: str


_SPECS: dict[str, ModelSpec] = {
    "digits_cnn": ModelSpec(digits_cnn, 4, 4, 8, "3-conv CNN for 8x8 digits (avgpool, flatten, fc)"),
    "tiny_resnet": ModelSpec(tiny_resnet, 4, 1, 28, "2-block ResNet for 28x28 inputs"),
    "resnet18": ModelSpec(resnet18, 8, 1, 32, "CIFAR-style ResNet-18, basic blocks [2,2,2,2]"),
    "resnet20": ModelSpec(resnet20, 4, 1, 32, "CIFAR ResNet-20, basic blocks [3,3,3], widths 16/32/64"),
    "resnet34": ModelSpec(resnet34, 8, 1, 32, "CIFAR-style ResNet-34, basic blocks [3,4,6,3]"),
    "resnet50": ModelSpec(resnet50, 8, 1, 32, "CIFAR-style ResNet-50, bottleneck blocks [3,4,6,3]"),
}

MODEL_NAMES: tuple[str, ...] = tuple(_SPECS)


def model_spec(name: str) -> ModelSpec:
    """The registry entry for `name`; ModelRegistryError listing the known names otherwise."""
    if name not in _SPECS:
        raise ModelRegistryError(f"model: unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    return _SPECS[name]


def build_model(name: str, in_channels: int = 3, num_classes: int = 10, input_size: int | None = None,
                **kwargs: Any) -> nn.Module:
    """Build the named model. `input_size` defaults to the size the model was designed for.

    ModelRegistryError for an unknown name, a bad size or channel count, or unknown keyword arguments."""
    spec = model_spec(name)
    size = spec.default_size if input_size is None else int(input_size)
    if int(in_channels) < 1:
        raise ModelRegistryError(f"model {name}: in_channels must be >= 1, got {in_channels}")
    if int(num_classes) < 1:
        raise ModelRegistryError(f"model {name}: num_classes must be >= 1, got {num_classes}")
    if size < spec.min_size or size % spec.size_multiple:
        raise ModelRegistryError(f"model {name}: input_size {size} not allowed; needs >= {spec.min_size}"
                                 f" and a multiple of {spec.size_multiple}")
    try:
        return spec.factory(in_channels=int(in_channels), num_classes=int(num_classes), input_size=size,
                            **kwargs)
    except TypeError as e:
        raise ModelRegistryError(f"model {name}: bad keyword arguments {sorted(kwargs)}: {e}") from e
