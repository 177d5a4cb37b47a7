"""MobileNetV2 and MobileNetV3 (small, large), in torchvision's layout (names and layer order)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import mlx.core as mx
import mlx.nn as nn

from .base import ImageClassifier
from .layers import (
    ConvNormAct,
    Hardsigmoid,
    SqueezeExcitation,
    global_avg_pool,
    init_kaiming,
    make_divisible,
)
from .registry import register_model

V2_PAPER = "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018"
V3_PAPER = "Howard et al., Searching for MobileNetV3, ICCV 2019"


# --- MobileNetV2 ------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand (ReLU6), 3×3 depthwise (ReLU6), 1×1 linear projection,
    with a residual connection where the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(in_channels, hidden, 1, activation=nn.ReLU6))
        layers += [
            ConvNormAct(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def __call__(self, x: mx.array) -> mx.array:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(ImageClassifier):
    """torchvision's MobileNetV2: stride-2 3×3 stem, 17 inverted residual blocks, 1×1 conv to
    1280 channels, average pool, dropout, linear.

    Example:
        >>> MobileNetV2(num_classes=10)(mx.zeros((2, 32, 32, 3))).shape
        (2, 10)
    """

    classifier_name = "classifier.layers.1"
    SETTINGS = (  # expand ratio t, channels c, repeats n, first stride s
        (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
    )  # fmt: skip

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        width_mult: float = 1.0,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(num_classes, in_channels)
        channels = make_divisible(32 * width_mult)
        last_channels = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvNormAct(in_channels, channels, 3, 2, activation=nn.ReLU6)]
        for t, c, n, s in self.SETTINGS:
            out_channels = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(channels, out_channels, s if i == 0 else 1, t))
                channels = out_channels
        layers.append(ConvNormAct(channels, last_channels, 1, activation=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last_channels, num_classes))
        init_kaiming(self, linear_std=0.01)

    def __call__(self, x: mx.array) -> mx.array:
        self.check_input(x)
        return self.classifier(global_avg_pool(self.features(x)))


@register_model(input_size=(224, 224), paper=V2_PAPER)
def mobilenet_v2(
    num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0, dropout: float = 0.2
) -> MobileNetV2:
    """torchvision's MobileNetV2 (width multiplier 1.0 by default)."""
    return MobileNetV2(num_classes, in_channels, width_mult, dropout)


# --- MobileNetV3 ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockConfig:
    """One MobileNetV3 block: channels in, kernel, expanded, out, squeeze-excite, hardswish,
    stride."""

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    use_se: bool
    use_hardswish: bool
    stride: int


SMALL = [
    BlockConfig(16, 3, 16, 16, True, False, 2),
    BlockConfig(16, 3, 72, 24, False, False, 2),
    BlockConfig(24, 3, 88, 24, False, False, 1),
    BlockConfig(24, 5, 96, 40, True, True, 2),
    BlockConfig(40, 5, 240, 40, True, True, 1),
    BlockConfig(40, 5, 240, 40, True, True, 1),
    BlockConfig(40, 5, 120, 48, True, True, 1),
    BlockConfig(48, 5, 144, 48, True, True, 1),
    BlockConfig(48, 5, 288, 96, True, True, 2),
    BlockConfig(96, 5, 576, 96, True, True, 1),
    BlockConfig(96, 5, 576, 96, True, True, 1),
]
LARGE = [
    BlockConfig(16, 3, 16, 16, False, False, 1),
    BlockConfig(16, 3, 64, 24, False, False, 2),
    BlockConfig(24, 3, 72, 24, False, False, 1),
    BlockConfig(24, 5, 72, 40, True, False, 2),
    BlockConfig(40, 5, 120, 40, True, False, 1),
    BlockConfig(40, 5, 120, 40, True, False, 1),
    BlockConfig(40, 3, 240, 80, False, True, 2),
    BlockConfig(80, 3, 200, 80, False, True, 1),
    BlockConfig(80, 3, 184, 80, False, True, 1),
    BlockConfig(80, 3, 184, 80, False, True, 1),
    BlockConfig(80, 3, 480, 112, True, True, 1),
    BlockConfig(112, 3, 672, 112, True, True, 1),
    BlockConfig(112, 5, 672, 160, True, True, 2),
    BlockConfig(160, 5, 960, 160, True, True, 1),
    BlockConfig(160, 5, 960, 160, True, True, 1),
]

_v3_norm = partial(nn.BatchNorm, eps=0.001, momentum=0.01)


class V3Block(nn.Module):
    """MobileNetV3 block: optional 1×1 expand, depthwise k×k, optional squeeze-excite (hard
    sigmoid gate), 1×1 linear projection; residual where the shape is kept."""

    def __init__(self, config: BlockConfig) -> None:
        super().__init__()
        act = nn.Hardswish if config.use_hardswish else nn.ReLU
        self.use_residual = config.stride == 1 and config.in_channels == config.out_channels
        layers: list[nn.Module] = []
        if config.expanded != config.in_channels:
            layers.append(
                ConvNormAct(config.in_channels, config.expanded, 1, norm=_v3_norm, activation=act)
            )
        layers.append(
            ConvNormAct(
                config.expanded,
                config.expanded,
                config.kernel,
                config.stride,
                groups=config.expanded,
                norm=_v3_norm,
                activation=act,
            )
        )
        if config.use_se:
            squeeze = make_divisible(config.expanded // 4, 8)
            layers.append(SqueezeExcitation(config.expanded, squeeze, scale_activation=Hardsigmoid))
        layers.append(
            ConvNormAct(config.expanded, config.out_channels, 1, norm=_v3_norm, activation=None)
        )
        self.block = nn.Sequential(*layers)

    def __call__(self, x: mx.array) -> mx.array:
        return x + self.block(x) if self.use_residual else self.block(x)


class MobileNetV3(ImageClassifier):
    """torchvision's MobileNetV3: hardswish stem, :class:`V3Block` stages, 1×1 conv to 6× the
    last block's channels, average pool, linear-hardswish-dropout-linear classifier.

    Example:
        >>> MobileNetV3(SMALL, 1024, num_classes=10)(mx.zeros((2, 32, 32, 3))).shape
        (2, 10)
    """

    classifier_name = "classifier.layers.3"

    def __init__(
        self,
        blocks: list[BlockConfig],
        last_channels: int,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(num_classes, in_channels)
        first = blocks[0].in_channels
        layers: list[nn.Module] = [
            ConvNormAct(in_channels, first, 3, 2, norm=_v3_norm, activation=nn.Hardswish)
        ]
        layers += [V3Block(config) for config in blocks]
        last_conv = 6 * blocks[-1].out_channels
        layers.append(
            ConvNormAct(
                blocks[-1].out_channels, last_conv, 1, norm=_v3_norm, activation=nn.Hardswish
            )
        )
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(last_conv, last_channels),
            nn.Hardswish(),
            nn.Dropout(dropout),
            nn.Linear(last_channels, num_classes),
        )
        init_kaiming(self, linear_std=0.01)

    def __call__(self, x: mx.array) -> mx.array:
        self.check_input(x)
        return self.classifier(global_avg_pool(self.features(x)))


@register_model(input_size=(224, 224), paper=V3_PAPER)
def mobilenet_v3_small(
    num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.2
) -> MobileNetV3:
    """torchvision's MobileNetV3-Small (11 blocks, 1024-wide classifier)."""
    return MobileNetV3(SMALL, 1024, num_classes, in_channels, dropout)


@register_model(input_size=(224, 224), paper=V3_PAPER)
def mobilenet_v3_large(
    num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.2
) -> MobileNetV3:
    """torchvision's MobileNetV3-Large (15 blocks, 1280-wide classifier)."""
    return MobileNetV3(LARGE, 1280, num_classes, in_channels, dropout)
