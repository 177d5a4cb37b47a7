"""Faster building blocks for MLX's CPU backend: convolutions lowered to matrix products.

Example:
    >>> import mlx.nn as nn
    >>> from mlxvision.ops import use_fast_conv
    >>> model = use_fast_conv(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)))
    >>> type(model.layers[0]).__module__
    'mlxvision.ops.layers'
"""

from .conv import (
    CUDA_PLAN,
    LOWERED_PLAN,
    MLX_PLAN,
    ROWS_PLAN,
    STRIDED_PLAN,
    ConvPlan,
    choose_plan,
    conv2d,
    fast_conv_disabled,
    fast_conv_enabled,
)
from .layers import Conv2d, MaxPool2d, use_fast_conv
from .malloc import keep_freed_memory

__all__ = [
    "LOWERED_PLAN",
    "MLX_PLAN",
    "ROWS_PLAN",
    "CUDA_PLAN",
    "STRIDED_PLAN",
    "Conv2d",
    "ConvPlan",
    "MaxPool2d",
    "choose_plan",
    "conv2d",
    "fast_conv_disabled",
    "fast_conv_enabled",
    "keep_freed_memory",
    "use_fast_conv",
]
