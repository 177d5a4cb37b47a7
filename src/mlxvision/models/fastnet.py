"""A fast CIFAR-10 network: the architecture of Keller Jordan's airbench94.

airbench94 (Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", arXiv:2404.00498;
github.com/KellerJordan/cifar10-airbench) descends from the hlb-CIFAR10 record nets
(tysam-code) and David Page's ResNet-9 ("How to train your ResNet", myrtle.ai). Its network:
a 2×2 convolution stem (24 channels, initialised to whiten the images' 2×2 patches), GELU,
then three groups of conv3×3 → 2×2 max-pool → BatchNorm → GELU → conv3×3 → BatchNorm → GELU
(widths 64, 256, 256), a global max-pool and a bias-free linear layer whose logits are scaled
by ``logit_scale`` (1/9 in airbench94, 1/width in airbench94_muon). It is not residual.

Initialisation as in the records: the first ``in_channels`` filters of every 3×3 convolution
are identities (:func:`~mlxvision.models.layers.init_dirac`), the head's weights have standard
deviation 1. Differences from the original, kept small on purpose: the BatchNorm scale is
trainable (airbench freezes it at 1; :func:`freeze_like_airbench` does too), and
``residual=True`` optionally adds an identity skip around each group's second convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .base import ImageClassifier
from .layers import init_dirac, init_kaiming
from .registry import register_model

#: ``activation`` choices: airbench's GELU, or ReLU, cheaper on a CPU. They are layers, so
#: :func:`mlxvision.ops.use_fast_layers` (which :func:`~mlxvision.models.create_model` applies)
#: gives them the package's forms: on the CPU a GELU without MLX's ``erf`` (~40 ns a value).
ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}

PAPER = "Jordan, 94% on CIFAR-10 in 3.29 Seconds on a Single GPU, arXiv:2404.00498 (airbench94)"


class ConvGroup(nn.Module):
    """conv3×3 → max-pool 2×2 → BN → GELU → conv3×3 → BN → GELU (optionally residual)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        residual: bool = False,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.activation = activation()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.norm1 = nn.BatchNorm(out_channels, eps=1e-12, momentum=0.4)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm(out_channels, eps=1e-12, momentum=0.4)
        self.residual = residual

    def __call__(self, x: mx.array) -> mx.array:
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        out = self.activation(self.norm2(self.conv2(x)))
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
        activation: str = "gelu",
    ) -> None:
        super().__init__(num_classes, in_channels)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation: expected one of {', '.join(ACTIVATIONS)}, got {activation!r}"
            )
        self.activation = ACTIVATIONS[activation]()
        whiten_width = 2 * in_channels * 2 * 2
        self.whiten = nn.Conv2d(in_channels, whiten_width, kernel_size=2)
        channels = [whiten_width, *widths]
        self.blocks = nn.Sequential(
            *[
                ConvGroup(a, b, residual, ACTIVATIONS[activation])
                for a, b in zip(channels[:-1], channels[1:], strict=True)
            ]
        )
        self.head = nn.Linear(channels[-1], num_classes, bias=False)
        self.logit_scale = logit_scale
        init_kaiming(self, linear_std=1.0)
        for group in self.blocks.layers:
            init_dirac(group.conv1)
            init_dirac(group.conv2)

    def __call__(self, x: mx.array) -> mx.array:
        self.check_input(x)
        x = self.blocks(self.activation(self.whiten(x)))
        return self.head(mx.max(x, axis=(1, 2))) * self.logit_scale

    def init_whitening(self, images: mx.array | np.ndarray, eps: float = 5e-4) -> FastNet:
        """Set the stem to whiten 2×2 patches of ``images`` (NHWC floats, normalized as for
        training; a few thousand suffice): filters ``±v / sqrt(λ + eps)`` for each eigenpair
        ``(λ, v)`` of the patches' second-moment matrix; bias zero. Returns the model. The
        moments are summed on the device; only the small eigenproblem runs on the host.

        Example:
            >>> model = FastNet().init_whitening(np.random.rand(8, 32, 32, 3))
            >>> model.whiten.weight.shape
            (24, 2, 2, 3)
        """
        x = images if isinstance(images, mx.array) else mx.array(np.asarray(images, np.float32))
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"init_whitening: expected images of shape (N, H, W, {self.in_channels}), "
                f"received shape {x.shape}"
            )
        x = x.astype(mx.float32)
        corners = [x[:, :-1, :-1], x[:, :-1, 1:], x[:, 1:, :-1], x[:, 1:, 1:]]
        patches = mx.stack(corners, axis=3).reshape(-1, 4 * self.in_channels)
        moments = np.array((patches.T @ patches) / patches.shape[0], dtype=np.float64)
        eigenvalues, eigenvectors = np.linalg.eigh(moments)
        filters = eigenvectors.T[::-1] / np.sqrt(eigenvalues[::-1, None] + eps)
        weight = np.concatenate([filters, -filters]).reshape(self.whiten.weight.shape)
        dtype = self.whiten.weight.dtype
        self.whiten.weight = mx.array(weight.astype(np.float32)).astype(dtype)
        self.whiten.bias = mx.zeros_like(self.whiten.bias)
        return self


def freeze_like_airbench(model: FastNet) -> FastNet:
    """Freeze what airbench does not train: the whitening filters (set from the data by
    :meth:`FastNet.init_whitening`) and the BatchNorm scales (kept at 1). Returns the model.

    Example:
        >>> model = freeze_like_airbench(FastNet(widths=(8, 16, 16)))
        >>> "weight" in model.trainable_parameters()["whiten"]
        False
    """
    model.whiten.freeze(keys=["weight"])
    for _, module in model.named_modules():
        if isinstance(module, nn.BatchNorm):
            module.freeze(keys=["weight"], strict=False)
    return model


@register_model("airbench_net", input_size=(32, 32), paper=PAPER)
def airbench_net(
    num_classes: int = 10,
    in_channels: int = 3,
    widths: Sequence[int] = (64, 256, 256),
    residual: bool = False,
    logit_scale: float = 1 / 9,
    activation: str = "gelu",
) -> FastNet:
    """airbench94's fast CIFAR-10 net: whitening stem and three conv-pool-BN-GELU groups."""
    return FastNet(num_classes, in_channels, tuple(widths), residual, logit_scale, activation)
