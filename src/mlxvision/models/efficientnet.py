"""EfficientNet-B0 in torchvision's layout (names and layer order), with stochastic depth."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from .base import ImageClassifier
from .layers import ConvNormAct, SqueezeExcitation, StochasticDepth, global_avg_pool, init_kaiming
from .registry import register_model

PAPER = "Tan & Le, EfficientNet: Rethinking Model Scaling for CNNs, ICML 2019"
# expand ratio, kernel, first stride, channels in, channels out, blocks
B0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1×1 expand (SiLU), depthwise k×k (SiLU), squeeze-excite,
    1×1 projection; residual with stochastic depth where the shape is kept."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: int,
        kernel: int,
        stride: int,
        drop_prob: float,
    ) -> None:
        super().__init__()
        expanded = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(ConvNormAct(in_channels, expanded, 1, activation=nn.SiLU))
        layers += [
            ConvNormAct(expanded, expanded, kernel, stride, groups=expanded, activation=nn.SiLU),
            SqueezeExcitation(expanded, max(1, in_channels // 4), activation=nn.SiLU),
            ConvNormAct(expanded, out_channels, 1, activation=None),
        ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop_prob)

    def __call__(self, x: mx.array) -> mx.array:
        out = self.block(x)
        return x + self.stochastic_depth(out) if self.use_residual else out


class EfficientNet(ImageClassifier):
    """torchvision's EfficientNet (B0 stages by default): SiLU stem, MBConv stages, 1×1 conv to
    4× the last stage's channels, average pool, dropout, linear.

    Stochastic depth drops block ``i`` of ``n`` with probability
    ``stochastic_depth_prob · i / n`` while training.

    Example:
        >>> EfficientNet(num_classes=10)(mx.zeros((2, 32, 32, 3))).shape
        (2, 10)
    """

    classifier_name = "classifier.layers.1"

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        stages: tuple[tuple[int, ...], ...] = B0_STAGES,
        dropout: float = 0.2,
        stochastic_depth_prob: float = 0.2,
    ) -> None:
        super().__init__(num_classes, in_channels)
        total = sum(stage[-1] for stage in stages)
        layers: list[nn.Module] = [ConvNormAct(in_channels, stages[0][3], 3, 2, activation=nn.SiLU)]
        index = 0
        for expand, kernel, stride, channels_in, channels_out, blocks in stages:
            stage = []
            for i in range(blocks):
                drop = stochastic_depth_prob * index / total
                block_in, block_stride = (channels_in, stride) if i == 0 else (channels_out, 1)
                stage.append(MBConv(block_in, channels_out, expand, kernel, block_stride, drop))
                index += 1
            layers.append(nn.Sequential(*stage))
        last_in = stages[-1][4]
        layers.append(ConvNormAct(last_in, 4 * last_in, 1, activation=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * last_in, num_classes))
        init_kaiming(self)
        head = self.classifier.layers[1]
        bound = 1.0 / math.sqrt(num_classes)
        head.weight = mx.random.uniform(-bound, bound, head.weight.shape)
        head.bias = mx.zeros_like(head.bias)

    def __call__(self, x: mx.array) -> mx.array:
        self.check_input(x)
        return self.classifier(global_avg_pool(self.features(x)))


@register_model(input_size=(224, 224), paper=PAPER)
def efficientnet_b0(
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float = 0.2,
    stochastic_depth_prob: float = 0.2,
) -> EfficientNet:
    """torchvision's EfficientNet-B0, with stochastic depth (0.2) while training."""
    return EfficientNet(num_classes, in_channels, B0_STAGES, dropout, stochastic_depth_prob)
