"""A fast CIFAR-10 network: the architecture of Keller Jordan's airbench94.

airbench94 (Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", arXiv:2404.00498;
github.com/KellerJordan/cifar10-airbench) descends from the hlb-CIFAR10 record nets
(tysam-code) and David Page's ResNet-9 ("How to train your ResNet", myrtle.ai). Its network:
a 2×2 convolution stem (24 channels, initialised to whiten the images' 2×2 patches), GELU,
then three groups of conv3×3 → 2×2 max-pool → BatchNorm → GELU → conv3×3 → BatchNorm → GELU
(widths 64, 256, 256), a global max-pool and a bias-free linear layer whose logits are scaled
by 1/9. It is not residual.

Differences from the original, kept small on purpose: the BatchNorm scale is trainable
(airbench freezes it at 1), and ``residual=True`` optionally adds an identity skip around each
group's second convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .base import ImageClassifier
from .layers import init_kaiming
from .registry import register_model

PAPER = "Jordan, 94% on CIFAR-10 in 3.29 Seconds on a Single GPU, arXiv:2404.00498 (airbench94)"


class ConvGroup(nn.Module):
    """conv3×3 → max-pool 2×2 → BN → GELU → conv3×3 → BN → GELU (optionally residual)."""

    def __init__(self, in_channels: int, out_channels: int, residual: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.norm1 = nn.BatchNorm(out_channels, eps=1e-12, momentum=0.4)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm(out_channels, eps=1e-12, momentum=0.4)
        self.residual = residual

    def __call__(self, x: mx.array) -> mx.array:
        x = nn.gelu(self.norm1(self.pool(self.conv1(x))))
        out = nn.gelu(self.norm2(self.conv2(x)))
        return x + out if self.residual else out


class FastNet(ImageClassifier):
    """airbench94's network (see the module docstring). Inputs of at least 16×16.

    Call :meth:`init_whitening` with a sample of normalized training images before training,
    as airbench does.

    Example:
        >>> FastNet(num_classes=10)(mx.zeros((2, 32, 32, 3))).shape
        (2, 10)
    """

    classifier_name = "head"

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: Sequence[int] = (64, 256, 256),
        residual: bool = False,
        logit_scale: float = 1 / 9,
    ) -> None:
        super().__init__(num_classes, in_channels)
        whiten_width = 2 * in_channels * 2 * 2
        self.whiten = nn.Conv2d(in_channels, whiten_width, kernel_size=2)
        channels = [whiten_width, *widths]
        self.blocks = nn.Sequential(
            *[ConvGroup(a, b, residual) for a, b in zip(channels[:-1], channels[1:], strict=True)]
        )
        self.head = nn.Linear(channels[-1], num_classes, bias=False)
        self.logit_scale = logit_scale
        init_kaiming(self)

    def __call__(self, x: mx.array) -> mx.array:
        self.check_input(x)
        x = self.blocks(nn.gelu(self.whiten(x)))
        return self.head(mx.max(x, axis=(1, 2))) * self.logit_scale

    def init_whitening(self, images: mx.array | np.ndarray, eps: float = 5e-4) -> FastNet:
        """Set the stem to whiten 2×2 patches of ``images`` (NHWC floats, normalized as for
        training; a few thousand suffice): filters ``±v / sqrt(λ + eps)`` for each eigenpair
        ``(λ, v)`` of the patches' second-moment matrix; bias zero. Returns the model.

        Example:
            >>> model = FastNet().init_whitening(np.random.rand(8, 32, 32, 3))
            >>> model.whiten.weight.shape
            (24, 2, 2, 3)
        """
        x = np.asarray(images, dtype=np.float64)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"init_whitening: expected images of shape (N, H, W, {self.in_channels}), "
                f"received shape {x.shape}"
            )
        windows = np.lib.stride_tricks.sliding_window_view(x, (2, 2), axis=(1, 2))
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 4 * self.in_channels)
        eigenvalues, eigenvectors = np.linalg.eigh(patches.T @ patches / len(patches))
        filters = eigenvectors.T[::-1] / np.sqrt(eigenvalues[::-1, None] + eps)
        weight = np.concatenate([filters, -filters]).reshape(self.whiten.weight.shape)
        dtype = self.whiten.weight.dtype
        self.whiten.weight = mx.array(weight.astype(np.float32)).astype(dtype)
        self.whiten.bias = mx.zeros_like(self.whiten.bias)
        return self


@register_model("airbench_net", input_size=(32, 32), paper=PAPER)
def airbench_net(
    num_classes: int = 10,
    in_channels: int = 3,
    widths: Sequence[int] = (64, 256, 256),
    residual: bool = False,
) -> FastNet:
    """airbench94's fast CIFAR-10 net: whitening stem and three conv-pool-BN-GELU groups."""
    return FastNet(num_classes, in_channels, tuple(widths), residual)
