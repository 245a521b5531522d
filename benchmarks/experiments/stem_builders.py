"""Builders for the studies of issue 19 (`--model benchmarks/experiments/stem_builders.py:NAME`).

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


def densenet_small(in_channels: int = 3, num_classes: int = 10):
    """A small member of torchvision's DenseNet family (torchvision.models.DenseNet: growth rate 12, dense
    blocks of 2, 2, 2 layers, 16 initial features; its own max-pool stem, concatenations and transitions), for a
    DenseNet pipeline run with a Lava verify that fits this machine (densenet121 needs 1429 cores at 32x32)."""
    from torchvision.models import DenseNet

    if in_channels != 3:
        raise ValueError(f"densenet_small: in_channels {in_channels}; allowed: 3 (torchvision's DenseNet stem)")
    return DenseNet(growth_rate=12, block_config=(2, 2, 2), num_init_features=16, bn_size=4,
                    num_classes=num_classes)
