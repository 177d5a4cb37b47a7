"""SiLU and GELU without MLX's CPU ``exp`` and ``erf``.

MLX's CPU backend computes ``exp`` at 15–24 ns per value, ``sigmoid`` at 20 and ``erf`` at
about 47, against about 1 ns for a multiplication and 6 for ``power``, which made SiLU half of
EfficientNet-B0's inference time on a CPU and GELU most of ConvNeXt-Tiny's. Here, on the CPU:

- SiLU's sigmoid is ``1 / (1 + 2^(-x·log₂e))``, in a custom function whose backward pass
  recomputes it from ``x`` rather than keeping it; each operation runs on its own, so it is
  as fast in an uncompiled training step as in inference.
- GELU uses ``Φ(x) = erfc(z)/2`` for ``x ≤ 0`` and ``1 - erfc(z)/2`` above, ``z = |x|/√2``, with
  ``erfc(z) = e^{-z²}·erfcx(z)``, the slowly varying ``erfcx`` a Chebyshev interpolant of
  degree 12 in ``1/(1 + z/2)``, and ``e^{-t} = (e^{-t/128})^128`` with ``e^{-u}`` on
  ``[0, 88/128]`` a Chebyshev interpolant of degree 7: only multiplications and additions,
  which :func:`mlx.core.compile` fuses into one pass.

Against float64 both keep a relative error of at most 3·10⁻⁵ over float32's range, tails
included (``tests/test_ops_activation.py``; SiLU's is MLX's own, 4·10⁻⁶; MLX's ``nn.gelu``
computes ``1 + erf(x/√2)``, which loses all relative accuracy in the negative tail).
:class:`GELU` uses :func:`gelu` in eval mode and :func:`gelu_for_training`, a form in
separate passes, in training mode (see there). Elsewhere (Metal, CUDA, where
MLX's functions are fast), for inputs that are not float32, and under
:func:`~mlxvision.ops.fast_conv_disabled` (exporters) they are MLX's :func:`mlx.nn.silu` and
:func:`mlx.nn.gelu`.
"""

from __future__ import annotations

import functools
import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..backend import on_cpu, switch_setting
from .conv import fast_conv_enabled

_SQUARINGS = 7
_LIMIT = 88.0  # e^-88 is below float32's smallest normal number
_EXP_DEGREE = 7
_ERFCX_DEGREE = 12
_ERFCX_SCALE = 0.5  # erfcx is fitted in t = 1/(1 + _ERFCX_SCALE·z)
_Z_LIMIT = 9.3  # e^{-z²} underflows float32 beyond it: Φ(x) is 0 or 1 there


def _power_basis(function, degree: int, domain: tuple[float, float]) -> tuple[float, ...]:
    """Chebyshev interpolant of ``function`` on ``domain`` as power-basis coefficients in the
    variable mapped to ``[-1, 1]``, constant term first."""
    interpolant = np.polynomial.Chebyshev.interpolate(function, degree, domain=list(domain))
    return tuple(float(c) for c in np.polynomial.chebyshev.cheb2poly(interpolant.coef))


@functools.cache
def _exp_coefficients() -> tuple[float, ...]:
    return _power_basis(lambda u: np.exp(-u), _EXP_DEGREE, (0.0, _LIMIT / 2**_SQUARINGS))


@functools.cache
def _erfcx_coefficients() -> tuple[float, ...]:
    erfcx = np.vectorize(lambda z: math.exp(z * z) * math.erfc(z))
    return _power_basis(
        lambda t: erfcx((1 / t - 1) / _ERFCX_SCALE), _ERFCX_DEGREE, (_erfcx_t_min(), 1.0)
    )


def _erfcx_t_min() -> float:
    return 1 / (1 + _ERFCX_SCALE * _Z_LIMIT)


def _polynomial(coefficients: tuple[float, ...], u: mx.array) -> mx.array:
    value = coefficients[-1]
    for c in coefficients[-2::-1]:
        value = value * u + c
    return value


def _mapped(t: mx.array, low: float, high: float) -> mx.array:
    return (2.0 * t - (low + high)) * (1.0 / (high - low))


def _exp_negative(t: mx.array) -> mx.array:
    """``e^{-t}`` for ``t ≥ 0`` (0 beyond float32's range)."""
    high = _LIMIT / 2**_SQUARINGS
    p = _polynomial(
        _exp_coefficients(), _mapped(mx.minimum(t, _LIMIT) * (1.0 / 2**_SQUARINGS), 0.0, high)
    )
    for _ in range(_SQUARINGS):
        p = p * p
    return mx.where(t > _LIMIT, 0.0, p)


def _normal_cdf(x: mx.array) -> mx.array:
    """``Φ(x)``, the standard normal distribution function, with small relative error in both
    tails."""
    z = mx.abs(x) * (1 / math.sqrt(2))
    t = 1.0 / (1.0 + _ERFCX_SCALE * mx.minimum(z, _Z_LIMIT))
    erfcx = _polynomial(_erfcx_coefficients(), _mapped(t, _erfcx_t_min(), 1.0))
    half_erfc = mx.where(z > _Z_LIMIT, 0.0, 0.5 * _exp_negative(z * z) * erfcx)
    return mx.where(x > 0, 1.0 - half_erfc, half_erfc)


def _gelu_value(x: mx.array) -> mx.array:
    return x * _normal_cdf(x)


def _gelu_gradient(x: mx.array, cotangent: mx.array) -> mx.array:
    density = _exp_negative(0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
    return cotangent * (_normal_cdf(x) + x * density)


@functools.cache
def _fused(value, gradient):
    """``value`` as a custom function whose forward and backward passes are each compiled into
    one pass (shapeless: one compilation for every shape)."""
    forward, backward = mx.compile(value, shapeless=True), mx.compile(gradient, shapeless=True)

    @mx.custom_function
    def function(x: mx.array) -> mx.array:
        return forward(x)

    @function.vjp
    def function_vjp(x, cotangent, output):  # a one-input function's primal is the array
        return backward(x, cotangent)

    return function


_LOG2_E = math.log2(math.e)


def _exp_by_power(v: mx.array, scale: float = 1.0) -> mx.array:
    """``e^{scale·v}`` as ``2^{v·scale·log₂e}``: MLX's CPU ``power`` costs about 6 ns a value,
    its ``exp`` 15 (each operation here runs on its own, uncompiled)."""
    return mx.power(2.0, v * (scale * _LOG2_E))


def _sigmoid_by_power(x: mx.array) -> mx.array:
    """``1 / (1 + e^{-x})`` (MLX's ``sigmoid``: about 20 ns a value on the CPU)."""
    return 1.0 / (1.0 + _exp_by_power(x, -1.0))


@mx.custom_function
def _silu_by_power(x: mx.array) -> mx.array:
    return x * _sigmoid_by_power(x)


@_silu_by_power.vjp
def _silu_by_power_vjp(x, cotangent, output):
    s = _sigmoid_by_power(x)  # recomputed: cheaper than keeping it
    return cotangent * (s * (1 + x * (1 - s)))


# erfc(z) = t·e^{-z² + P(t)}, t = 1/(1 + z/2), P of degree 9 (the Chebyshev fit of Numerical
# Recipes' erfcc: relative error below 1.2·10⁻⁷ for every z ≥ 0), constant term first
_ERFC_EXPONENT = (
    -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
    0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277,
)  # fmt: skip


def _normal_cdf_by_power(x: mx.array) -> mx.array:
    """``Φ(x)`` with small relative error in both tails, in some thirty separate passes."""
    z = mx.abs(x) * (1 / math.sqrt(2))
    t = 1.0 / (1.0 + 0.5 * z)
    half_erfc = (0.5 * t) * _exp_by_power(_polynomial(_ERFC_EXPONENT, t) - z * z)
    return mx.where(x > 0, 1.0 - half_erfc, half_erfc)


@mx.custom_function
def _gelu_by_power(x: mx.array) -> tuple[mx.array, mx.array]:
    cdf = _normal_cdf_by_power(x)
    return x * cdf, cdf


@_gelu_by_power.vjp
def _gelu_by_power_vjp(x, cotangents, outputs):
    density = _exp_by_power(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
    return cotangents[0] * (outputs[1] + x * density)  # Φ kept from the forward pass


def _fast(x: mx.array) -> bool:
    return x.dtype == mx.float32 and on_cpu() and fast_conv_enabled()


def silu(x: mx.array) -> mx.array:
    """``x · sigmoid(x)``; on the CPU, for float32, the sigmoid is ``1 / (1 + 2^(-x·log₂e))``
    and its backward pass recomputes it (module docstring). Forward and backward at
    4×112×112×96 on a 2-core CPU: 92–149 ms against 163–180 ms for :func:`mlx.nn.silu`
    (which keeps the sigmoid for the backward pass); forward alone 62 ms against 125.

    Example:
        >>> x = mx.array([-3.0, 0.0, 2.0])
        >>> mx.allclose(silu(x), nn.silu(x), rtol=1e-5).item()
        True
    """
    return _silu_by_power(x) if _fast(x) else nn.silu(x)


def gelu(x: mx.array) -> mx.array:
    """``x · Φ(x)`` (exact GELU, not the tanh approximation); on the CPU, for float32, without
    MLX's ``erf`` (module docstring). Its gradient is computed the same way, fast under
    :func:`mlx.core.compile`; an uncompiled gradient is slower than :func:`mlx.nn.gelu`'s (see
    :class:`GELU`).

    Example:
        >>> x = mx.array([-3.0, 0.0, 2.0])
        >>> mx.allclose(gelu(x), nn.gelu(x), rtol=1e-4).item()
        True
    """
    return _fused(_gelu_value, _gelu_gradient)(x) if _fast(x) else nn.gelu(x)


def gelu_for_training(x: mx.array) -> mx.array:
    """``x · Φ(x)`` for an uncompiled training step; on the CPU, for float32, ``Φ`` is
    ``erfc`` written as ``t·e^{-z² + P(t)}`` (``t = 1/(1 + z/2)``, ``P`` of degree 9) with the
    exponential a power of two, and the backward pass keeps ``Φ``. MLX's ``erf`` costs about
    46 ns a value there, each of these separate passes about 1. Forward and backward at
    4×56×56×384 on a 2-core CPU: 222–280 ms against 279–361 ms for :func:`mlx.nn.gelu`, with a
    relative error against float64 of 1.7·10⁻⁵ (MLX's loses all relative accuracy in the
    negative tail).

    Example:
        >>> x = mx.array([-3.0, 0.0, 2.0])
        >>> mx.allclose(gelu_for_training(x), nn.gelu(x), rtol=1e-4).item()
        True
    """
    return _gelu_by_power(x)[0] if _fast(x) else nn.gelu(x)


@mx.custom_function
def _silu_recomputing(x: mx.array) -> mx.array:
    return nn.silu(x)


@_silu_recomputing.vjp
def _silu_recomputing_vjp(x, cotangent, output):
    # float32, and 1/(1 + e^-x) rather than MLX's sigmoid: mx.compile merges equal
    # expressions, and would otherwise keep the forward pass's sigmoid for this one
    x32 = x.astype(mx.float32)
    s = 1.0 / (1.0 + mx.exp(-x32))
    return (cotangent.astype(mx.float32) * (s * (1 + x32 * (1 - s)))).astype(cotangent.dtype)


def silu_recomputing(x: mx.array) -> mx.array:
    """MLX's ``x · sigmoid(x)``, whose backward pass computes the sigmoid again from ``x`` (in
    float32) instead of keeping it: under :func:`mlx.core.compile`, :func:`mlx.nn.silu` keeps
    both ``x`` and ``sigmoid(x)`` for the backward pass, this keeps ``x`` only. A compiled
    chain of 8 matrix products and SiLUs (bf16) peaked at 24 activations' size against 31.
    Its forward pass is a separate kernel: not fused with the operation before it.

    Example:
        >>> x = mx.array([-3.0, 0.0, 2.0])
        >>> grad = mx.grad(lambda x: silu_recomputing(x).sum())(x)
        >>> mx.allclose(grad, mx.grad(lambda x: nn.silu(x).sum())(x), rtol=1e-5).item()
        True
    """
    return _silu_recomputing(x)


def silu_recomputes() -> bool:
    """Whether :class:`SiLU` layers in training mode use :func:`silu_recomputing` where
    :func:`silu` would be MLX's own (GPUs, inputs not float32): yes unless
    ``MLXVISION_SILU_RECOMPUTE=0``. On an H200, EfficientNet-B0's bf16 training step at 224
    pixels, batch 128, peaked at 5,544 MB against 7,037 (PyTorch: 5,607), at a speed within
    the runs' spread (``benchmarks/results/gpu_throughput.md``).

    Example:
        >>> isinstance(silu_recomputes(), bool)
        True
    """
    return switch_setting("MLXVISION_SILU_RECOMPUTE") is not False


class SiLU(nn.SiLU):
    """:class:`mlx.nn.SiLU` computed by :func:`silu`; in training mode by
    :func:`silu_recomputing` where :func:`silu` is MLX's (``MLXVISION_SILU_RECOMPUTE=0``: not).

    Example:
        >>> x = mx.array([1.0, -1.0])
        >>> mx.allclose(SiLU()(x), nn.SiLU()(x), rtol=1e-5).item()
        True
    """

    def __call__(self, x: mx.array) -> mx.array:
        if self.training and not _fast(x) and fast_conv_enabled() and silu_recomputes():
            return silu_recomputing(x)
        return silu(x)


class GELU(nn.GELU):
    """:class:`mlx.nn.GELU` (same ``approx`` argument); with ``approx="none"`` computed by
    :func:`gelu` in eval mode and by :func:`gelu_for_training` in training mode (inside an
    uncompiled ``mx.grad``, MLX runs compiled functions uncompiled, so :func:`gelu`'s
    polynomial would run as separate passes, and so does the training form by design).

    Example:
        >>> x = mx.array([1.0, -1.0])
        >>> mx.allclose(GELU().eval()(x), nn.GELU()(x), rtol=1e-4).item()
        True
    """

    def __call__(self, x: mx.array) -> mx.array:
        if self._approx != "none":
            return super().__call__(x)
        return gelu_for_training(x) if self.training else gelu(x)
