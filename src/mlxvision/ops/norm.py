"""BatchNorm and ReLU whose gradients keep only what they need.

Differentiated as written, :class:`mlx.nn.BatchNorm` in training mode keeps several
full-size intermediates for its backward pass (the centred input, the normalised input, the
squares of the variance) and computes its batch statistics twice (biased and unbiased), and
``mx.maximum(x, 0)`` keeps its input. Here the training-mode batch norm is one custom
function: its forward computes the statistics once, in float32, and its backward recomputes
the normalised input from the layer's input and the per-channel mean and variance, so a
training step keeps one tensor per normalisation (its input) as PyTorch's does. On MLX's CUDA
backend the statistics, the backward pass's channel sums and both elementwise passes are CUDA
kernels (:mod:`mlxvision.ops.cuda_norm`) that read their inputs in their own dtype. :func:`relu`
masks its gradient with its output, which the next layer keeps anyway, so the normalised
values it was computed from are freed. Models get both through
:func:`~mlxvision.ops.use_fast_layers` (their ``nn.BatchNorm`` and ``nn.ReLU`` modules).
Models that write a batch norm followed by a ReLU as :func:`norm_relu` get both in one pass on
CUDA (:func:`batch_norm_relu`): the ReLU, a residual added before it, and the ReLU's gradient
run inside the batch norm's kernels.
"""

from __future__ import annotations

import functools

import mlx.core as mx
import mlx.nn as nn

from ..backend import on_cuda
from . import cuda_norm
from .conv import fast_conv_enabled
from .scalars import mean as mean_over
from .scalars import runtime_scalar


@mx.custom_function
def _relu(x: mx.array) -> mx.array:
    return mx.maximum(x, 0)


@_relu.vjp
def _relu_vjp(primals, cotangent, output):
    # a product with the mask: MLX's CPU backend runs `where` with a scalar through a slow
    # broadcasting path (forward and backward of a 128×32×32×16 float32 input: 13.5 ms with
    # `where`, 7.0 ms with the product, 6.4 ms for MLX's own ReLU)
    return cotangent * (output > 0)


def relu(x: mx.array) -> mx.array:
    """``max(x, 0)``, with a gradient computed from the output instead of the input.

    Under :func:`~mlxvision.ops.fast_conv_disabled` (exporters) it is ``mx.maximum(x, 0)``.

    Example:
        >>> x = mx.array([-1.0, 0.0, 2.0])
        >>> relu(x).tolist(), mx.grad(lambda v: relu(v).sum())(x).tolist()
        ([0.0, 0.0, 2.0], [0.0, 0.0, 1.0])
    """
    return _relu(x) if fast_conv_enabled() else mx.maximum(x, 0)


class ReLU(nn.ReLU):
    """:class:`mlx.nn.ReLU` computed by :func:`relu` in training mode. In eval mode it is
    ``mx.maximum(x, 0)``, which :func:`mlx.core.compile` fuses with the layers around it
    (a custom function is a boundary to fusion: it cost ResNet-18's compiled inference a
    quarter of its speed on an H200).

    Example:
        >>> ReLU()(mx.array([-2.0, 3.0])).tolist()
        [0.0, 3.0]
    """

    def __call__(self, x: mx.array) -> mx.array:
        return relu(x) if self.training else mx.maximum(x, 0)


def _forward_float32(x: mx.array) -> mx.array:
    """``x`` in float32 for the forward pass, as a node of its own. Under :func:`mx.compile` a
    plain cast (or a promotion) of ``x`` is merged with the backward pass's cast of the same
    ``x``; the merged float32 copy is then computed in the forward pass and kept until the
    backward pass, twice the size of the bfloat16 input it duplicates (on an H200, before the
    elementwise passes there became kernels, that was about 1.2 GB of ResNet-18's 2.5 GB
    training peak at batch 512). ``x * 1`` is a different node."""
    return x if x.dtype == mx.float32 else (x * 1).astype(mx.float32)


def _with_kernels(x: mx.array) -> bool:
    return on_cuda() and x.size <= cuda_norm.MAX_ELEMENTS


def _scale_and_shift(weight, bias, mean, variance, eps):
    scale = weight.astype(mx.float32) * mx.rsqrt(variance + eps)
    return scale, bias.astype(mx.float32) - mean * scale


def _input_gradient_terms(weight, eps, x, sums, statistics):
    """Per-channel ``(dy_scale, x_scale, constant)`` of ``dx = dy·dy_scale + x·x_scale +
    constant``, and the weight's gradient, from ``sums = (Σdy, Σdy·(x - mean))`` and
    ``statistics = (mean, variance, their cotangents)``."""
    sum_dy, sum_dy_centred = sums
    mean, variance, d_mean, d_variance = statistics
    inv_count = runtime_scalar(x.shape[-1] / x.size)
    inv_std = mx.rsqrt(variance + eps)
    scale = weight.astype(mx.float32) * inv_std
    sum_dy_normalised = sum_dy_centred * inv_std
    # dx = scale·(dy - mean(dy) - x̂·mean(dy·x̂)), with x̂ = (x - mean)·inv_std, written as
    # per-channel coefficients of dy and x, so the one elementwise pass reads dy and x only
    x_scale = -scale * inv_std * sum_dy_normalised * inv_count
    constant = -scale * sum_dy * inv_count - x_scale * mean
    # the statistics are outputs too: their cotangents (zero when only the running
    # statistics use them) flow back through mean = Σx/M and variance = Σ(x - mean)²/M
    x_scale = x_scale + 2 * d_variance * inv_count
    constant = constant + (d_mean - 2 * d_variance * mean) * inv_count
    return (scale, x_scale, constant), sum_dy_normalised


def _kernel_gradients(x, weight, bias, eps, dy, statistics, relu_output=None):
    """``(dx, dweight, dbias)`` of the batch norm through the CUDA kernels, ``dy`` counted only
    where ``relu_output > 0`` when it is given."""
    mean = statistics[0]
    sums = cuda_norm.channel_grad_sums(dy, x, mean, relu_output)
    terms, d_weight = _input_gradient_terms(weight, eps, x, sums, statistics)
    dx = cuda_norm.channel_affine_pair(dy, x, *terms, x.dtype, relu_output)
    return dx, d_weight.astype(weight.dtype), sums[0].astype(bias.dtype)


@functools.cache
def _batch_norm_fn(eps: float):
    """``(x, weight, bias) -> (y, mean, variance)`` over every axis but the last, statistics
    in float32, ``y`` in the dtype :class:`mlx.nn.BatchNorm` would give."""

    @mx.custom_function
    def batch_norm(x: mx.array, weight: mx.array, bias: mx.array):
        kernels = _with_kernels(x)
        if kernels:
            mean, variance = cuda_norm.channel_stats(x)
        else:
            axes = tuple(range(x.ndim - 1))
            x32 = _forward_float32(x)
            mean = mean_over(x32, axes)
            variance = mean_over(mx.square(x32 - mean), axes)
        scale, shift = _scale_and_shift(weight, bias, mean, variance, eps)
        out_dtype = mx.result_type(x.dtype, weight.dtype)
        if kernels:
            y = cuda_norm.channel_affine(x, scale, shift, out_dtype)
        else:
            y = (x32 * scale + shift).astype(out_dtype)
        return y, mean, variance

    @batch_norm.vjp
    def batch_norm_vjp(primals, cotangents, outputs):
        x, weight, bias = primals
        dy, d_mean, d_variance = cotangents
        _, mean, variance = outputs
        statistics = (mean, variance, d_mean, d_variance)
        if _with_kernels(x):
            return _kernel_gradients(x, weight, bias, eps, dy, statistics)
        axes = tuple(range(x.ndim - 1))
        dy32 = dy.astype(mx.float32)
        sum_dy = dy32.sum(axis=axes)
        sums = sum_dy, (dy32 * x).sum(axis=axes) - mean * sum_dy
        terms, d_weight = _input_gradient_terms(weight, eps, x, sums, statistics)
        dy_scale, x_scale, constant = terms
        dx = (dy_scale * dy32 + x_scale * x + constant).astype(x.dtype)
        return dx, d_weight.astype(weight.dtype), sum_dy.astype(bias.dtype)

    return batch_norm


@functools.cache
def _batch_norm_relu_fn(eps: float):
    """``(x, weight, bias[, residual]) -> (relu(y [+ residual]), mean, variance)`` in the CUDA
    kernels, with ``y`` as :func:`_batch_norm_fn` gives it. The ReLU's gradient is taken from
    the output: without a residual the backward kernels mask ``dy`` themselves; with one, the
    masked ``dy`` is the residual's gradient, so it is computed once and used by both."""

    @mx.custom_function
    def batch_norm_relu(x, weight, bias, *rest):
        mean, variance = cuda_norm.channel_stats(x)
        scale, shift = _scale_and_shift(weight, bias, mean, variance, eps)
        out_dtype = mx.result_type(x.dtype, weight.dtype, *(r.dtype for r in rest))
        y = cuda_norm.channel_affine(
            x, scale, shift, out_dtype, relu=True, residual=rest[0] if rest else None
        )
        return y, mean, variance

    @batch_norm_relu.vjp
    def batch_norm_relu_vjp(primals, cotangents, outputs):
        x, weight, bias, *rest = primals  # three inputs or more: a tuple
        d_out, d_mean, d_variance = cotangents
        y, mean, variance = outputs
        if rest:
            dy, relu_output = d_out * (y > 0), None
        else:
            dy, relu_output = d_out, y
        statistics = (mean, variance, d_mean, d_variance)
        gradients = _kernel_gradients(x, weight, bias, eps, dy, statistics, relu_output)
        return gradients + tuple(dy.astype(r.dtype) for r in rest)

    return batch_norm_relu


def batch_norm(
    x: mx.array, weight: mx.array, bias: mx.array, eps: float = 1e-5
) -> tuple[mx.array, mx.array, mx.array]:
    """Training-mode batch normalisation over every axis but the last (channels).

    Returns the output ``weight · (x - mean) / sqrt(variance + eps) + bias`` and the batch's
    per-channel ``mean`` and biased ``variance`` (float32). The backward pass keeps only
    ``x``, ``weight`` and the statistics.

    Example:
        >>> x = mx.random.normal((4, 3, 3, 2))
        >>> y, mean, variance = batch_norm(x, mx.ones(2), mx.zeros(2))
        >>> y.shape, mx.allclose(y.mean(axis=(0, 1, 2)), mx.zeros(2), atol=1e-5).item()
        ((4, 3, 3, 2), True)
    """
    return _batch_norm_fn(float(eps))(x, weight, bias)


def batch_norm_relu(
    x: mx.array,
    weight: mx.array,
    bias: mx.array,
    eps: float = 1e-5,
    residual: mx.array | None = None,
) -> tuple[mx.array, mx.array, mx.array]:
    """:func:`batch_norm` followed by ``relu(y + residual)`` (``residual`` optional): returns
    that, the mean and the biased variance. On CUDA it is one custom function whose kernels
    apply the ReLU and mask the gradient with its output; elsewhere it is :func:`batch_norm`
    and :func:`relu`.

    Example:
        >>> x = mx.random.normal((4, 3, 3, 2))
        >>> y, mean, variance = batch_norm_relu(x, mx.ones(2), mx.zeros(2))
        >>> (y >= 0).all().item(), mean.shape
        (True, (2,))
    """
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual: expected the input's shape {x.shape}, got {residual.shape}")
    if _with_kernels(x):
        extra = () if residual is None else (residual,)
        return _batch_norm_relu_fn(float(eps))(x, weight, bias, *extra)
    y, mean, variance = batch_norm(x, weight, bias, eps)
    return relu(y if residual is None else y + residual), mean, variance


class BatchNorm(nn.BatchNorm):
    """:class:`mlx.nn.BatchNorm` (same arguments, parameters and running statistics) whose
    training-mode pass is :func:`batch_norm`. In eval mode it computes what
    :class:`mlx.nn.BatchNorm` computes, in the dtype of its input and weight rather than
    promoted to the float32 of the running statistics, so a bfloat16 model stays bfloat16.
    Under :func:`~mlxvision.ops.fast_conv_disabled` it is :class:`mlx.nn.BatchNorm`.

    The running variance is updated with the unbiased batch variance, as
    :class:`mlx.nn.BatchNorm` does.

    Example:
        >>> norm = BatchNorm(3)
        >>> x = mx.random.normal((8, 5, 5, 3))
        >>> reference = nn.BatchNorm(3)
        >>> mx.allclose(norm(x), reference(x), atol=1e-5).item()
        True
        >>> mx.allclose(norm.running_var, reference.running_var, atol=1e-6).item()
        True
    """

    def __call__(self, x: mx.array) -> mx.array:
        if not self._fast(x):
            return super().__call__(x)
        if not self.training:
            # float32 running statistics would promote a bfloat16 output to float32, and with
            # it every layer after this one
            dtype = mx.result_type(x.dtype, self.weight.dtype) if "weight" in self else x.dtype
            return super().__call__(x).astype(dtype)
        return self._training_pass(x, batch_norm)

    def relu(self, x: mx.array, residual: mx.array | None = None) -> mx.array:
        """``relu(self(x) + residual)`` (``residual`` optional). In training mode on CUDA it
        is one pass (:func:`batch_norm_relu`); elsewhere it is the layers one after the other,
        the ReLU's gradient taken from its output.

        Example:
            >>> norm = BatchNorm(3)
            >>> y = norm.relu(mx.random.normal((8, 5, 5, 3)), residual=mx.ones((8, 5, 5, 3)))
            >>> (y >= 0).all().item()
            True
        """
        if not (self._fast(x) and self.training):
            y = self(x)
            y = y if residual is None else y + residual
            return relu(y) if self.training else mx.maximum(y, 0)

        def normalise(x, weight, bias, eps):
            return batch_norm_relu(x, weight, bias, eps, residual=residual)

        return self._training_pass(x, normalise)

    def _fast(self, x: mx.array) -> bool:
        return fast_conv_enabled() and 2 <= x.ndim <= 4

    def _training_pass(self, x: mx.array, normalise) -> mx.array:
        count = x.size // x.shape[-1]
        if count == 1:
            raise ValueError("BatchNorm training requires more than one value per channel.")
        if "weight" in self:
            weight, bias = self.weight, self.bias
        else:
            weight, bias = mx.ones(x.shape[-1], x.dtype), mx.zeros(x.shape[-1], x.dtype)
        y, mean, variance = normalise(x, weight, bias, self.eps)
        if self.track_running_stats:
            mean, variance = mx.stop_gradient(mean), mx.stop_gradient(variance)
            momentum = self.momentum
            unbiased = variance * runtime_scalar(count / (count - 1))
            self.running_mean = (1 - momentum) * self.running_mean + momentum * mean
            self.running_var = (1 - momentum) * self.running_var + momentum * unbiased
        return y


def norm_relu(
    norm: nn.Module, x: mx.array, activation: nn.Module, residual: mx.array | None = None
) -> mx.array:
    """``activation(norm(x) + residual)`` (``residual`` optional), as models write a batch
    norm followed by a ReLU. When ``norm`` is this module's :class:`BatchNorm` and
    ``activation`` a ReLU, it is :meth:`BatchNorm.relu`: one pass in training on CUDA.

    Example:
        >>> y = norm_relu(nn.BatchNorm(3), mx.random.normal((8, 5, 5, 3)), nn.ReLU())
        >>> (y >= 0).all().item()
        True
    """
    if isinstance(norm, BatchNorm) and isinstance(activation, nn.ReLU):
        return norm.relu(x, residual)
    y = norm(x)
    return activation(y if residual is None else y + residual)
