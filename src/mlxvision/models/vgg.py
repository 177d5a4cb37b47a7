"""VGG with batch normalization, in torchvision's layout (names and layer order)."""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn

from .base import ImageClassifier
from .layers import adaptive_avg_pool2d, init_kaiming
from .registry import register_model

VGG_PAPER = (
    "Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image "
    "Recognition, ICLR 2015"
)
M = "M"
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "vgg13": [64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "vgg16": [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M],
    "vgg19": [64, 64, M, 128, 128, M] + [256] * 4 + [M] + ([512] * 4 + [M]) * 2,
}


class VGG(ImageClassifier):
    """``features`` (3×3 conv-BN-ReLU, 2×2 max-pools), adaptive average pool to 7×7,
    ``classifier`` (4096-4096-classes with ReLU and dropout), as torchvision's ``vgg*_bn``.

    Images must be at least 32×32 (five 2×2 pools); smaller feature maps than 7×7 are repeated
    to 7×7 by the adaptive pool, as in torchvision. ``hidden`` is the width of the two hidden
    linear layers (4096 in torchvision).

    Example:
        >>> model = VGG([8, "M"], num_classes=3, hidden=16)
        >>> model(mx.zeros((1, 4, 4, 3))).shape
        (1, 3)
    """

    classifier_name = "classifier.layers.6"

    def __init__(
        self,
        config: Sequence[int | str],
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.5,
        hidden: int = 4096,
    ) -> None:
        super().__init__(num_classes, in_channels)
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == M:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.BatchNorm(int(item))]
                layers.append(nn.ReLU())
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        init_kaiming(self, linear_std=0.01)

    def __call__(self, x: mx.array) -> mx.array:
        self.check_input(x)
        x = adaptive_avg_pool2d(self.features(x), (7, 7))
        # torchvision flattens NCHW features: order them (C, H, W) so weights convert
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
        return self.classifier(x)


def _builder(name: str):
    def build(
        num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5, hidden: int = 4096
    ) -> VGG:
        return VGG(CONFIGS[name], num_classes, in_channels, dropout, hidden)

    build.__name__ = f"{name}_bn"
    convs = sum(1 for item in CONFIGS[name] if item != M)
    build.__doc__ = (
        f"torchvision's {name}_bn: {convs} conv-BN-ReLU layers and 3 linear layers (``hidden`` "
        "wide: 4096 as in the paper; a smaller width is common for small images)."
    )
    return register_model(input_size=(224, 224), paper=VGG_PAPER)(build)


vgg11_bn = _builder("vgg11")
vgg13_bn = _builder("vgg13")
vgg16_bn = _builder("vgg16")
vgg19_bn = _builder("vgg19")
