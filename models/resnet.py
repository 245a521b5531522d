"""CIFAR-style residual networks: ResNet-18/34 and ResNet-20 (basic blocks), ResNet-50 (bottleneck).

Conversion-friendly by construction (contract C2/C3):
* every conv is followed by BatchNorm (folded later) and has no bias;
* every activation is its own `nn.ReLU` module (one instance per use site), so surgery can replace it;
* downsampling happens only with strided convolutions; a shortcut that changes shape is a 1x1 strided
  conv + BN, otherwise the identity.  There is never a pool inside a residual path (a pool would break
  the integer shortcut add), and the stem has no max-pool;
* the head is global average pooling (`nn.AdaptiveAvgPool2d(1)`) -> `nn.Flatten` -> `nn.Linear`.

Block output: y = ReLU(F(x) + shortcut(x)).

Stem: a 3x3 conv with stride 1 for inputs up to 64 px (CIFAR style: 32x32 stays 32x32 into stage 1),
stride 2 for larger inputs (e.g. 224 px ImageNet-like data), which keeps compute bounded without a pool.
"""
from __future__ import annotations

from typing import Sequence, Type, Union

from torch import Tensor, nn


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
    """[Conv(k, stride, pad=k//2, no bias), BN]."""
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out)]


def make_shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    """Identity when shapes agree, else a 1x1 strided conv + BN (never a pool)."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(*conv_bn(c_in, c_out, 1, stride))


class BasicBlock(nn.Module):
    """y = relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x)); conv1 carries the stride."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1):
        super().__init__()
        c_out = planes * self.expansion
        self.conv1, self.bn1 = conv_bn(c_in, planes, 3, stride)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = conv_bn(planes, c_out, 3, 1)
        self.shortcut = make_shortcut(c_in, c_out, stride)
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """y = relu3(bn3(conv3_1x1(relu2(bn2(conv2_3x3(relu1(bn1(conv1_1x1(x)))))))) + shortcut(x));
    the 3x3 conv carries the stride; output channels = 4 * planes."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1):
        super().__init__()
        c_out = planes * self.expansion
        self.conv1, self.bn1 = conv_bn(c_in, planes, 1, 1)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = conv_bn(planes, planes, 3, stride)
        self.relu2 = nn.ReLU()
        self.conv3, self.bn3 = conv_bn(planes, c_out, 1, 1)
        self.shortcut = make_shortcut(c_in, c_out, stride)
        self.relu3 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.shortcut(x))


Block = Union[Type[BasicBlock], Type[Bottleneck]]


class ResNet(nn.Module):
    """stem (conv3x3-BN-ReLU) -> stages of blocks (first block of stage i>0 has stride 2) ->
    global avgpool -> flatten -> fc."""

    def __init__(self, block: Block, blocks_per_stage: Sequence[int], widths: Sequence[int],
                 in_channels: int = 3, num_classes: int = 10, input_size: int = 32):
        super().__init__()
        stem_stride = 1 if input_size <= 64 else 2
        self.stem = nn.Sequential(*conv_bn(in_channels, widths[0], 3, stem_stride), nn.ReLU())
        stages = []
        c_in = widths[0]
        for i, (n, planes) in enumerate(zip(blocks_per_stage, widths)):
            layers = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(block(c_in, planes, stride))
                c_in = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.pool(self.stages(self.stem(x)))))


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, relu), BN gamma=1 beta=0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _widths(base: int, n: int) -> list[int]:
    return [base * 2 ** i for i in range(n)]


def resnet18(in_channels: int = 3, num_classes: int = 10, input_size: int = 32, base_width: int = 64) -> ResNet:
    """ResNet-18: basic blocks [2, 2, 2, 2], widths base*(1, 2, 4, 8)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], _widths(base_width, 4), in_channels, num_classes, input_size)


def resnet34(in_channels: int = 3, num_classes: int = 10, input_size: int = 32, base_width: int = 64) -> ResNet:
    """ResNet-34: basic blocks [3, 4, 6, 3], widths base*(1, 2, 4, 8)."""
    return ResNet(BasicBlock, [3, 4, 6, 3], _widths(base_width, 4), in_channels, num_classes, input_size)


def resnet20(in_channels: int = 3, num_classes: int = 10, input_size: int = 32, base_width: int = 16) -> ResNet:
    """ResNet-20 (He et al. CIFAR): basic blocks [3, 3, 3], widths base*(1, 2, 4) = 16, 32, 64."""
    return ResNet(BasicBlock, [3, 3, 3], _widths(base_width, 3), in_channels, num_classes, input_size)


def resnet50(in_channels: int = 3, num_classes: int = 10, input_size: int = 32, base_width: int = 64) -> ResNet:
    """ResNet-50: bottleneck blocks [3, 4, 6, 3], planes base*(1, 2, 4, 8), outputs 4x planes."""
    return ResNet(Bottleneck, [3, 4, 6, 3], _widths(base_width, 4), in_channels, num_classes, input_size)
