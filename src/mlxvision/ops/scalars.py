"""Numbers that ``mx.compile`` passes to its fused kernels at run time.

``mx.compile`` writes a scalar made from a Python number into the source of the fused kernel
that uses it, so every distinct value compiles a kernel of its own: an NVRTC compilation of
seconds on CUDA, a C++ one on the CPU. A number that depends on the input's shape (a mean's
count) or on the layer (a drop rate per block) then costs one compilation per shape or per
layer. :func:`runtime_scalar` makes such a number a kernel argument instead, and :func:`mean`
is ``mx.mean`` with its count passed that way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import mlx.core as mx


def runtime_scalar(value: float, dtype: mx.Dtype = mx.float32) -> mx.array:
    """``value`` as a scalar of ``dtype`` that compiled kernels read when they run.

    Example:
        >>> runtime_scalar(0.25).item()
        0.25
    """
    # an array made from a Python number has no inputs and is inlined; a slice of one is not
    # (a slice and a reshape, not an index: exporters know those primitives)
    return mx.array([value], dtype)[:1].reshape(())


def mean(x: mx.array, axis: int | Sequence[int], keepdims: bool = False) -> mx.array:
    """``mx.mean(x, axis, keepdims)``, value for value, with ``1 / count`` as a
    :func:`runtime_scalar`: the same compiled kernels serve every shape.

    Example:
        >>> mean(mx.array([[1.0, 2.0], [3.0, 5.0]]), axis=0).tolist()
        [2.0, 3.5]
    """
    axes = [axis] if isinstance(axis, int) else list(axis)
    count = math.prod(x.shape[a] for a in axes)
    dtype = x.dtype if mx.issubdtype(x.dtype, mx.inexact) else mx.float32
    return x.sum(axis=axes, keepdims=keepdims) * runtime_scalar(1 / count, dtype)
