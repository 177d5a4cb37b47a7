"""Drop-in :class:`mlx.nn.Conv2d` and :class:`mlx.nn.MaxPool2d` that run the fastest
formulation for their shape and device, and :func:`use_fast_layers`, which puts them (and
:mod:`.norm`'s BatchNorm and ReLU, :mod:`.activation`'s SiLU and GELU) into a model."""

from __future__ import annotations

from typing import TypeVar

import mlx.core as mx
import mlx.nn as nn

from ..backend import on_cpu, on_cuda
from .activation import GELU, SiLU
from .conv import ConvPlan, conv2d, fast_conv_enabled
from .norm import BatchNorm, ReLU

M = TypeVar("M", bound=nn.Module)


class Conv2d(nn.Conv2d):
    """:class:`mlx.nn.Conv2d` (same arguments, parameters ``weight`` OHWI and ``bias``) whose
    convolution is :func:`mlxvision.ops.conv2d` with ``method="auto"``: on the CPU the
    matmul lowerings where they measured faster, elsewhere :func:`mlx.core.conv2d`. In eval
    mode it asks for ``inference=True``.

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
            inference=not self.training,
        )
        if "bias" in self:
            y = y + self.bias
        return y


class MaxPool2d(nn.MaxPool2d):
    """:class:`mlx.nn.MaxPool2d` computed in the form that measured fastest on each device;
    the output is identical.

    - On the CPU, non-overlapping unpadded pooling (kernel = stride, as 2×2 pooling of
      stride 2) is a reshape and a ``max`` over two axes: its backward pass measured 6×
      faster than MLX's pooling gradient (0.20 against 1.25 s for a 500×31×31×32 input).
    - On CUDA, every pooling is the elementwise maximum of the window's strided slices (padding
      with ``-inf``), which compiles into one kernel: 2×2 pooling of a 256×32×32×64 bf16
      input took 0.075 ms against 0.93 for MLX's strided reduction, its gradient 0.44
      against 0.99 ms (H200). Where a window holds equal maxima, the gradient goes to the
      first of them, as in PyTorch, instead of being split between them.
    - Elsewhere, and under :func:`~mlxvision.ops.fast_conv_disabled` (exporters), it is MLX's
      pooling.

    Example:
        >>> x = mx.random.normal((2, 7, 7, 3))
        >>> mx.array_equal(MaxPool2d(2, 2)(x), nn.MaxPool2d(2, 2)(x)).item()
        True
    """

    def __call__(self, x: mx.array) -> mx.array:
        kernel, stride, padding = self._kernel_size, self._stride, self._padding
        if not fast_conv_enabled():
            return super().__call__(x)
        if on_cuda():
            return max_of_window_slices(x, kernel, stride, padding)
        unpadded = all(p == (0, 0) for p in padding)
        if on_cpu() and unpadded and kernel == stride:
            return reshape_max(x, kernel)
        return super().__call__(x)


def reshape_max(x: mx.array, kernel: tuple[int, int]) -> mx.array:
    """Non-overlapping unpadded max pooling (stride = ``kernel``) of NHWC ``x`` as a reshape
    and a ``max`` over the two window axes; rows and columns that fill no window are dropped.

    Example:
        >>> x = mx.arange(16.0).reshape(1, 4, 4, 1)
        >>> reshape_max(x, (2, 2)).reshape(-1).tolist()
        [5.0, 7.0, 13.0, 15.0]
    """
    (kh, kw), (n, height, width, channels) = kernel, x.shape
    rows, cols = height // kh, width // kw
    x = x[:, : rows * kh, : cols * kw]
    return x.reshape(n, rows, kh, cols, kw, channels).max(axis=(2, 4))


def max_of_window_slices(
    x: mx.array,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
) -> mx.array:
    """Max pooling of NHWC ``x`` as the elementwise maximum of one strided slice per window
    position; ``padding`` is ``((top, bottom), (left, right))``, filled with ``-inf``.

    Example:
        >>> x = mx.arange(16.0).reshape(1, 4, 4, 1)
        >>> max_of_window_slices(x, (3, 3), (2, 2), ((1, 1), (1, 1))).reshape(-1).tolist()
        [5.0, 7.0, 13.0, 15.0]
    """
    (kh, kw), (sh, sw) = kernel, stride
    if any(p != (0, 0) for p in padding):
        x = mx.pad(x, [(0, 0), *padding, (0, 0)], constant_values=-float("inf"))
    rows = (x.shape[1] - kh) // sh + 1
    cols = (x.shape[2] - kw) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            window = x[:, i : i + sh * (rows - 1) + 1 : sh, j : j + sw * (cols - 1) + 1 : sw]
            # MLX's maximum sends a tie's gradient to its second argument: the earlier position
            out = window if out is None else mx.maximum(window, out)
    return out


def use_fast_layers(model: M, enabled: bool = True) -> M:
    """Make every :class:`mlx.nn.Conv2d`, :class:`mlx.nn.MaxPool2d`, :class:`mlx.nn.BatchNorm`,
    :class:`mlx.nn.ReLU`, :class:`mlx.nn.SiLU` and :class:`mlx.nn.GELU` in ``model`` this
    package's :class:`Conv2d`, :class:`MaxPool2d`, :class:`~mlxvision.ops.norm.BatchNorm`,
    :class:`~mlxvision.ops.norm.ReLU`, :class:`~mlxvision.ops.activation.SiLU` and
    :class:`~mlxvision.ops.activation.GELU`, in place.

    The layers keep their identity, parameters (the same arrays) and names; only their class
    changes, so optimizers, checkpoints and weight conversion see no difference.
    ``enabled=False`` turns them back into MLX's classes. Returns ``model``.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm(4), nn.ReLU(), nn.Linear(4, 2))
        >>> model = use_fast_layers(model)
        >>> [type(layer).__module__.rsplit(".", 1)[-1] for layer in model.layers]
        ['layers', 'norm', 'norm', 'linear']
        >>> isinstance(use_fast_layers(model, enabled=False).layers[0], Conv2d)
        False
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"use_fast_layers: model must be an mlx.nn.Module, got {type(model)!r}")
    swaps = {
        nn.Conv2d: Conv2d,
        nn.MaxPool2d: MaxPool2d,
        nn.BatchNorm: BatchNorm,
        nn.ReLU: ReLU,
        nn.SiLU: SiLU,
        nn.GELU: GELU,
    }
    if not enabled:
        swaps = {fast: plain for plain, fast in swaps.items()}
    for module in model.modules():
        target = swaps.get(type(module))
        if target is not None:
            module.__class__ = target
    return model
