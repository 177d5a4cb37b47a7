"""Faster building blocks for MLX: on the CPU, convolutions lowered to matrix products; on
CUDA, cuDNN's weight-gradient kernel and batch-norm kernels; everywhere, a BatchNorm and a ReLU
whose backward pass keeps less memory; on the CPU, a SiLU and a GELU without MLX's slow
``exp`` and ``erf``.

Example:
    >>> import mlx.nn as nn
    >>> from mlxvision.ops import use_fast_layers
    >>> model = use_fast_layers(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)))
    >>> type(model.layers[0]).__module__
    'mlxvision.ops.layers'
"""

from .activation import GELU, SiLU, gelu, gelu_for_training, silu
from .conv import (
    CUDA_PLAN,
    LOWERED_PLAN,
    MLX_PLAN,
    NATIVE_PLAN,
    ROWS_PLAN,
    STRIDED_PLAN,
    ConvPlan,
    choose_plan,
    conv2d,
    convolutions_in_parts,
    fast_conv_disabled,
    fast_conv_enabled,
    part_bounds,
    unordered_conv_gradients,
)
from .layers import Conv2d, MaxPool2d, use_fast_layers
from .malloc import keep_freed_memory
from .norm import BatchNorm, ReLU, batch_norm, batch_norm_relu, norm_relu, relu

__all__ = [
    "LOWERED_PLAN",
    "MLX_PLAN",
    "NATIVE_PLAN",
    "ROWS_PLAN",
    "CUDA_PLAN",
    "STRIDED_PLAN",
    "BatchNorm",
    "Conv2d",
    "GELU",
    "ConvPlan",
    "MaxPool2d",
    "ReLU",
    "SiLU",
    "batch_norm",
    "batch_norm_relu",
    "choose_plan",
    "conv2d",
    "convolutions_in_parts",
    "fast_conv_disabled",
    "fast_conv_enabled",
    "gelu",
    "gelu_for_training",
    "keep_freed_memory",
    "norm_relu",
    "relu",
    "silu",
    "part_bounds",
    "unordered_conv_gradients",
    "use_fast_layers",
]
