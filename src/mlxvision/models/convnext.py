"""ConvNeXt-Tiny in torchvision's layout (names and layer order), with layer scale and
stochastic depth. NHWC needs no permutes: the channel LayerNorm is a plain ``nn.LayerNorm``."""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn

from .base import ImageClassifier
from .layers import StochasticDepth, global_avg_pool, init_std
from .registry import register_model

PAPER = "Liu et al., A ConvNet for the 2020s, CVPR 2022"


class CNBlock(nn.Module):
    """7×7 depthwise conv, LayerNorm, 4× MLP with GELU, layer scale, stochastic depth, residual.

    ``block`` keeps torchvision's seven slots (its two permutes are identities in NHWC).
    """

    def __init__(self, dim: int, layer_scale: float, drop_prob: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
            nn.Identity(),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            nn.Identity(),
        )
        self.layer_scale = mx.full((dim,), layer_scale)
        self.stochastic_depth = StochasticDepth(drop_prob)

    def __call__(self, x: mx.array) -> mx.array:
        return x + self.stochastic_depth(self.layer_scale * self.block(x))


class ConvNeXt(ImageClassifier):
    """torchvision's ConvNeXt: 4×4/4 patchify stem with LayerNorm, four stages of
    :class:`CNBlock` separated by LayerNorm + 2×2/2 conv downsampling, average pool, LayerNorm,
    linear. Stochastic depth rises linearly from 0 to ``stochastic_depth_prob`` over the blocks.

    Example:
        >>> model = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=10)
        >>> model(mx.zeros((1, 32, 32, 3))).shape
        (1, 10)
    """

    classifier_name = "classifier.layers.2"

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        num_classes: int = 1000,
        in_channels: int = 3,
        stochastic_depth_prob: float = 0.1,
        layer_scale: float = 1e-6,
    ) -> None:
        super().__init__(num_classes, in_channels)
        layers: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(in_channels, dims[0], 4, stride=4), nn.LayerNorm(dims[0], eps=1e-6)
            )
        ]
        total, index = sum(depths), 0
        for stage, (depth, dim) in enumerate(zip(depths, dims, strict=True)):
            blocks = []
            for _ in range(depth):
                drop = stochastic_depth_prob * index / max(total - 1, 1)
                blocks.append(CNBlock(dim, layer_scale, drop))
                index += 1
            layers.append(nn.Sequential(*blocks))
            if stage + 1 < len(dims):
                layers.append(
                    nn.Sequential(
                        nn.LayerNorm(dim, eps=1e-6), nn.Conv2d(dim, dims[stage + 1], 2, stride=2)
                    )
                )
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.LayerNorm(dims[-1], eps=1e-6), nn.Identity(), nn.Linear(dims[-1], num_classes)
        )
        init_std(self)

    def __call__(self, x: mx.array) -> mx.array:
        self.check_input(x)
        return self.classifier(global_avg_pool(self.features(x)))


@register_model(input_size=(224, 224), paper=PAPER)
def convnext_tiny(
    num_classes: int = 1000, in_channels: int = 3, stochastic_depth_prob: float = 0.1
) -> ConvNeXt:
    """torchvision's ConvNeXt-Tiny (depths 3-3-9-3, widths 96-192-384-768)."""
    return ConvNeXt((3, 3, 9, 3), (96, 192, 384, 768), num_classes, in_channels,
                    stochastic_depth_prob)  # fmt: skip
