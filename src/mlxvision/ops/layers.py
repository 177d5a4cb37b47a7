"""A drop-in :class:`mlx.nn.Conv2d` that runs the fastest convolution for its shape and device."""

from __future__ import annotations

from typing import TypeVar

import mlx.core as mx
import mlx.nn as nn

from .conv import ConvPlan, conv2d

M = TypeVar("M", bound=nn.Module)


class Conv2d(nn.Conv2d):
    """:class:`mlx.nn.Conv2d` (same arguments, parameters ``weight`` OHWI and ``bias``) whose
    convolution is :func:`mlxvision.ops.conv2d` with ``method="auto"``: on the CPU the
    matmul lowerings where they measured faster, elsewhere :func:`mlx.core.conv2d`.

    ``MLXVISION_FAST_CONV=0`` or :func:`mlxvision.ops.fast_conv_disabled` make it compute
    exactly what :class:`mlx.nn.Conv2d` computes.

    Example:
        >>> conv = Conv2d(3, 8, kernel_size=3, stride=2, padding=1)
        >>> x = mx.random.normal((2, 16, 16, 3))
        >>> reference = mx.conv2d(x, conv.weight, 2, 1) + conv.bias
        >>> conv(x).shape, mx.allclose(conv(x), reference, atol=1e-4).item()
        ((2, 8, 8, 8), True)
    """

    method: str | ConvPlan = "auto"

    def __call__(self, x: mx.array) -> mx.array:
        y = conv2d(
            x,
            self.weight,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            method=self.method,
        )
        if "bias" in self:
            y = y + self.bias
        return y


def use_fast_conv(model: M, enabled: bool = True) -> M:
    """Make every :class:`mlx.nn.Conv2d` in ``model`` a :class:`Conv2d`, in place.

    The layers keep their identity, parameters (the same arrays) and names; only their class
    changes, so optimizers, checkpoints and weight conversion see no difference.
    ``enabled=False`` turns them back into plain :class:`mlx.nn.Conv2d`. Returns ``model``.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1))
        >>> model = use_fast_conv(model)
        >>> [isinstance(layer, Conv2d) for layer in model.layers]
        [True, False, True]
        >>> isinstance(use_fast_conv(model, enabled=False).layers[0], Conv2d)
        False
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"use_fast_conv: model must be an mlx.nn.Module, got {type(model)!r}")
    source, target = (nn.Conv2d, Conv2d) if enabled else (Conv2d, nn.Conv2d)
    for module in model.modules():
        if type(module) is source:
            module.__class__ = target
    return model
