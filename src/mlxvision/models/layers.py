"""Building blocks shared by the zoo, named and ordered as torchvision's so weights convert.

All layers take NHWC input. Containers are :class:`mlx.nn.Sequential` subclasses, whose
parameters are named ``layers.<i>.…``; dropping each ``layers`` segment gives torchvision's name
(see :mod:`mlxvision.models.convert`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..ops.norm import norm_relu
from ..ops.scalars import mean, runtime_scalar


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to a multiple of ``divisor``, never below 90% of ``value`` (MobileNet rule).

    Example:
        >>> make_divisible(37.5), make_divisible(16 * 0.75)
        (40, 16)
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def hardsigmoid(x: mx.array) -> mx.array:
    """``relu6(x + 3) / 6``, as ``torch.nn.Hardsigmoid``.

    Example:
        >>> hardsigmoid(mx.array([-4.0, 0.0, 4.0])).tolist()
        [0.0, 0.5, 1.0]
    """
    return mx.clip(x + 3, 0, 6) / 6


class Hardsigmoid(nn.Module):
    """Module form of :func:`hardsigmoid`."""

    def __call__(self, x: mx.array) -> mx.array:
        return hardsigmoid(x)


class ConvNormAct(nn.Sequential):
    """Conv2d → norm → activation, torchvision's ``Conv2dNormActivation`` (padding keeps size).

    ``activation=None`` leaves the activation out (two layers, as in torchvision). The
    convolution has a bias only when there is no norm layer, unless ``bias`` says otherwise.
    The norm and the activation run as :func:`mlxvision.ops.norm_relu`: one pass for a batch
    norm and a ReLU of :func:`~mlxvision.ops.use_fast_layers`.

    Example:
        >>> block = ConvNormAct(3, 8, kernel_size=3, stride=2)
        >>> block(mx.zeros((1, 8, 8, 3))).shape
        (1, 4, 4, 8)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        norm: Callable[[int], nn.Module] | None = nn.BatchNorm,
        activation: Callable[[], nn.Module] | None = nn.ReLU,
        padding: int | None = None,
        bias: bool | None = None,
    ) -> None:
        padding = (kernel_size - 1) // 2 if padding is None else padding
        bias = norm is None if bias is None else bias
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, 1, groups, bias)
        ]
        if norm is not None:
            layers.append(norm(out_channels))
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)

    def __call__(self, x: mx.array) -> mx.array:
        if len(self.layers) == 3:  # convolution, norm, activation
            convolution, norm, activation = self.layers
            return norm_relu(norm, convolution(x), activation)
        return super().__call__(x)


class SqueezeExcitation(nn.Module):
    """Channel attention: ``x · scale(fc2(act(fc1(mean_hw(x)))))``, with 1×1 convolutions.

    Example:
        >>> se = SqueezeExcitation(8, 2)
        >>> se(mx.ones((1, 4, 4, 8))).shape
        (1, 4, 4, 8)
    """

    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        activation: Callable[[], nn.Module] = nn.ReLU,
        scale_activation: Callable[[], nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def __call__(self, x: mx.array) -> mx.array:
        scale = mean(x, axis=(1, 2), keepdims=True)
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(scale))))
        return x * scale


class StochasticDepth(nn.Module):
    """Drop whole residual branches per sample while training (Huang et al., 2016), "row" mode.

    In training each sample's branch is zeroed with probability ``p`` and otherwise scaled by
    ``1 / (1 - p)``; in eval mode it is the identity.

    Example:
        >>> drop = StochasticDepth(0.5)
        >>> drop.eval()(mx.ones((2, 3))).tolist()
        [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"StochasticDepth: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, x: mx.array) -> mx.array:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        # the rate differs per block: as constants, each block would compile kernels of its own
        keep = mx.random.bernoulli(runtime_scalar(survival), shape).astype(x.dtype)
        return x * keep / runtime_scalar(survival, x.dtype) if survival > 0 else x * keep

    def _extra_repr(self) -> str:
        return f"p={self.p}"


def global_avg_pool(x: mx.array) -> mx.array:
    """Mean over height and width: ``(N, H, W, C) → (N, C)``.

    Example:
        >>> global_avg_pool(mx.ones((2, 4, 4, 3))).shape
        (2, 3)
    """
    return mean(x, axis=(1, 2))


def adaptive_avg_pool2d(x: mx.array, output_size: tuple[int, int]) -> mx.array:
    """Average-pool NHWC ``x`` to ``output_size`` with torch's ``AdaptiveAvgPool2d`` bins.

    Bin ``i`` of ``n`` over a length ``L`` covers ``[floor(i·L/n), ceil((i+1)·L/n))``, so
    smaller inputs are upsampled by repetition (a 1×1 map becomes 7×7 copies).

    Example:
        >>> adaptive_avg_pool2d(mx.ones((1, 1, 1, 2)), (7, 7)).shape
        (1, 7, 7, 2)
    """
    n, height, width, c = x.shape
    out_h, out_w = output_size
    if (height, width) == (out_h, out_w):
        return x
    if height % out_h == 0 and width % out_w == 0:
        x = x.reshape(n, out_h, height // out_h, out_w, width // out_w, c)
        return mean(x, axis=(2, 4))
    if out_h % height == 0 and out_w % width == 0:  # every bin is one input pixel, repeated
        shape = (n, height, out_h // height, width, out_w // width, c)
        x = mx.broadcast_to(x[:, :, None, :, None, :], shape)
        return x.reshape(n, out_h, out_w, c)
    rows = mx.array(_pool_matrix(height, out_h), dtype=x.dtype)
    cols = mx.array(_pool_matrix(width, out_w), dtype=x.dtype)
    x = mx.einsum("ih,nhwc->niwc", rows, x)
    return mx.einsum("jw,niwc->nijc", cols, x)


def _pool_matrix(length: int, bins: int) -> list[list[float]]:
    matrix = []
    for i in range(bins):
        start, end = (i * length) // bins, math.ceil((i + 1) * length / bins)
        matrix.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(length)])
    return matrix


def init_dirac(conv: nn.Conv2d) -> nn.Conv2d:
    """Make the first ``in_channels`` filters of ``conv`` identities (a 1 at the kernel's
    centre on their own input channel, 0 elsewhere), as ``torch.nn.init.dirac_`` does to the
    filters of the airbench records: the layer starts by passing its input through. The other
    filters keep their values. Returns the layer.

    Example:
        >>> conv = init_dirac(nn.Conv2d(2, 4, 3, padding=1, bias=False))
        >>> x = mx.random.normal((1, 5, 5, 2))
        >>> bool(mx.allclose(conv(x)[..., :2], x))
        True
    """
    out_channels, height, width, in_channels = conv.weight.shape
    count = min(out_channels, in_channels)
    identity = np.zeros((count, height, width, in_channels), np.float32)
    identity[np.arange(count), height // 2, width // 2, np.arange(count)] = 1.0
    identity = mx.array(identity).astype(conv.weight.dtype)
    conv.weight = mx.concatenate([identity, conv.weight[count:]])
    return conv


def init_kaiming(model: nn.Module, linear_std: float | None = None) -> nn.Module:
    """He (Kaiming) initialisation with fan-out and ReLU gain for convolution weights, zero
    biases, as torchvision's CNNs start; linear weights of std ``linear_std`` with zero bias when
    ``linear_std`` is given. BatchNorm keeps weight 1 and bias 0. Returns the model.

    Weights are drawn uniformly with the same variance as torchvision's normal draws: far
    faster to generate on the CPU, and no different for training.

    Example:
        >>> conv = init_kaiming(nn.Conv2d(4, 8, 3))
        >>> float(conv.bias.abs().sum())
        0.0
    """
    for _, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            out_channels, kh, kw, _ = module.weight.shape
            module.weight = _uniform(module.weight, math.sqrt(2.0 / (out_channels * kh * kw)))
            if "bias" in module:
                module.bias = mx.zeros_like(module.bias)
        elif isinstance(module, nn.Linear) and linear_std is not None:
            module.weight = _uniform(module.weight, linear_std)
            if "bias" in module:
                module.bias = mx.zeros_like(module.bias)
    return model


def init_std(model: nn.Module, std: float = 0.02) -> nn.Module:
    """Weights of std ``std`` bounded by ±2σ, zero biases, for every convolution and linear
    layer, as ConvNeXt and ViT start (they draw from a normal truncated at ±2σ; a uniform draw
    with the same variance, bounded at ±1.73σ, is much faster to generate). Returns the model.

    Example:
        >>> layer = init_std(nn.Linear(100, 100))
        >>> float(layer.weight.abs().max()) <= 0.04
        True
    """
    for _, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            module.weight = _uniform(module.weight, std)
            if "bias" in module:
                module.bias = mx.zeros_like(module.bias)
    return model


def _uniform(like: mx.array, std: float) -> mx.array:
    bound = math.sqrt(3.0) * std
    return mx.random.uniform(-bound, bound, like.shape, like.dtype)
