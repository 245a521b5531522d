"""Builders for the stem comparison of issue 19 (`--model benchmarks/experiments/stem_builders.py:NAME`).

torchvision's ResNet-18 downsamples by 4 in its stem (7x7 conv stride 2, then max-pool 3/2/1, which `quantize`
turns into an average pool and conversion carries through a graded node). The registry's ResNet-18 uses a 3x3
stride-1 stem up to 64 px; `resnet18_stride2_stem` is the same network with its stride-2 stem (what it uses
above 64 px) at any input size, so the two stems can be compared on the same 64x64 data at a comparable cost.
"""
from __future__ import annotations

from na_deploy.models.resnet import resnet18


def resnet18_stride2_stem(in_channels: int = 3, num_classes: int = 10):
    """The registry's ResNet-18 with its stride-2 3x3 stem (input_size > 64 selects it)."""
    return resnet18(in_channels, num_classes, input_size=65)
