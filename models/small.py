"""Small networks for small images: `tiny_resnet` (28x28, e.g. MNIST-like) and `digits_cnn` (8x8 digits).

Same conversion-friendly rules as models/resnet.py: conv (no bias) + BN + its own nn.ReLU module,
downsampling by strided convs inside residual nets, average pooling only, Linear head.
"""
from __future__ import annotations

from torch import Tensor, nn

from na_deploy.models.resnet import BasicBlock, conv_bn, init_weights


class TinyResNet(nn.Module):
    """stem conv3x3/2 -> BasicBlock(w1) -> conv3x3/2 (w1 -> w2) -> BasicBlock(w2) -> global avgpool -> fc.

    28x28 -> 14x14 -> 14x14 -> 7x7 -> 7x7 -> 1x1.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
                 widths: tuple[int, int] = (16, 32)):
        super().__init__()
        w1, w2 = widths
        self.stem = nn.Sequential(*conv_bn(in_channels, w1, 3, 2), nn.ReLU())
        self.block1 = BasicBlock(w1, w1, 1)
        self.down = nn.Sequential(*conv_bn(w1, w2, 3, 2), nn.ReLU())
        self.block2 = BasicBlock(w2, w2, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w2, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block2(self.down(self.block1(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


class DigitsCNN(nn.Module):
    """conv3x3(c->w1)-BN-ReLU -> conv3x3(w1->w2)-BN-ReLU -> AvgPool 2 -> conv3x3(w2->w2)-BN-ReLU ->
    AvgPool 2 -> flatten -> fc.   8x8 -> 8x8 -> 8x8 -> 4x4 -> 4x4 -> 2x2 -> w2*4 features."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 8,
                 widths: tuple[int, int] = (16, 32)):
        super().__init__()
        w1, w2 = widths
        side = input_size // 4
        self.features = nn.Sequential(
            *conv_bn(in_channels, w1, 3, 1), nn.ReLU(),
            *conv_bn(w1, w2, 3, 1), nn.ReLU(),
            nn.AvgPool2d(2),
            *conv_bn(w2, w2, 3, 1), nn.ReLU(),
            nn.AvgPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w2 * side * side, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.features(x)))


def tiny_resnet(in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
                widths: tuple[int, int] = (16, 32)) -> TinyResNet:
    return TinyResNet(in_channels, num_classes, input_size, tuple(widths))


def digits_cnn(in_channels: int = 1, num_classes: int = 10, input_size: int = 8,
               widths: tuple[int, int] = (16, 32)) -> DigitsCNN:
    return DigitsCNN(in_channels, num_classes, input_size, tuple(widths))
