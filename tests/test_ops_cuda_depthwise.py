"""The depthwise convolution's weight-gradient kernel: its chunking, its source under nvcc, its
values against NumPy (float64) where MLX runs on a CUDA GPU, and the training path that uses
it (MLX's forward and input gradient around it), whose wiring is checked on any device."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlxvision.ops import conv as conv_module
from mlxvision.ops.conv import _depthwise_weight_grad, conv2d
from mlxvision.ops.cuda_depthwise import (
    _CHANNELS_PER_BLOCK,
    _ROW_LANES,
    _SOURCE,
    chunks_for,
    depthwise_weight_grad,
)
from test_ops_cuda_norm import assert_compiles_with_nvcc, kernel_definition, needs_nvcc, on_cuda

# (batch, height, width, channels), filter, stride, padding: channels not a multiple of the
# block's 32, strides 2 and (1, 2), a 7×7 filter on a 2×2 input (taps that read padding only)
CASES = [
    ((2, 9, 9, 8), 3, (1, 1), (1, 1)),
    ((2, 9, 10, 20), 5, (2, 2), (2, 2)),
    ((2, 2, 2, 40), 7, (1, 1), (3, 3)),
    ((3, 8, 8, 36), 3, (2, 2), (1, 1)),
    ((2, 4, 4, 8), 3, (1, 2), (0, 1)),
    ((64, 16, 16, 70), 5, (1, 1), (2, 2)),
]


def numpy_depthwise_weight_grad(x, dy, kernel, stride, padding) -> np.ndarray:
    """Float64: per tap, the sum over batch and positions of dy times the shifted input."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    (ph, pw), (sh, sw), (ho, wo) = padding, stride, dy.shape[1:3]
    padded = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    grad = np.zeros((x.shape[-1], kernel, kernel, 1))
    for i in range(kernel):
        for j in range(kernel):
            window = padded[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
            grad[:, i, j, 0] = (window * dy).sum(axis=(0, 1, 2))
    return grad


def test_chunks_fill_about_1024_blocks_with_a_row_lane_each():
    for rows, channels in [(128 * 112, 32), (256 * 8, 240), (10, 1024), (3, 5), (7 * 2, 1152)]:
        chunks = chunks_for(rows, channels)
        column_blocks = -(-channels // _CHANNELS_PER_BLOCK)
        assert chunks >= 1
        assert chunks == 1 or rows // chunks >= _ROW_LANES
        assert chunks * column_blocks <= max(1024, column_blocks)


@needs_nvcc
def test_kernel_source_compiles_with_nvcc(tmp_path):
    def ctype(name: str) -> str:
        return "float" if name == "out" else "__nv_bfloat16"

    kernels = []
    for kernel, stride, padding in [(3, (1, 1), (1, 1)), (5, (2, 1), (2, 0)), (7, (1, 1), (3, 3))]:
        constants = {"TC": _CHANNELS_PER_BLOCK, "TR": _ROW_LANES, "KH": kernel, "KW": kernel}
        constants |= {"SH": stride[0], "SW": stride[1], "PH": padding[0], "PW": padding[1]}
        name = f"depthwise_{kernel}_{stride[0]}{stride[1]}"
        kernels.append(kernel_definition(name, ["x", "dy"], ["out"], _SOURCE, ctype, constants))
    assert_compiles_with_nvcc(tmp_path, "", kernels)


def _case(shape, kernel, stride, padding, dtype=mx.float32):
    mx.random.seed(11)
    x = mx.random.normal(shape).astype(dtype)
    weight = mx.random.normal((shape[-1], kernel, kernel, 1)).astype(dtype)
    y = mx.conv2d(x, weight, stride, padding, groups=shape[-1])
    return x, weight, mx.random.normal(y.shape).astype(dtype)


@on_cuda
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
@pytest.mark.parametrize("shape,kernel,stride,padding", CASES)
def test_kernel_matches_numpy_float64(shape, kernel, stride, padding, dtype):
    x, _, dy = _case(shape, kernel, stride, padding, dtype)
    got = depthwise_weight_grad(x, dy, (kernel, kernel), stride, padding)
    expected = numpy_depthwise_weight_grad(
        x.astype(mx.float32), dy.astype(mx.float32), kernel, stride, padding
    )
    assert got.dtype == mx.float32
    # float32 sums over up to 16,384 products, against float64: relative to the largest value
    np.testing.assert_allclose(np.array(got), expected, atol=2e-5 * np.abs(expected).max())


def _mlx_gradients(x, weight, dy, stride, padding):
    def plain(a, b):
        return mx.conv2d(a, b, stride, padding, groups=x.shape[-1])

    return mx.vjp(plain, [x, weight], [dy])


def _assert_training_path_matches_mlx(shape, kernel, stride, padding):
    x, weight, dy = _case(shape, kernel, stride, padding)

    def fast(a, b):
        return conv2d(a, b, stride, padding, groups=shape[-1])

    (y,), (dx, dw) = mx.vjp(fast, [x, weight], [dy])
    (y_mlx,), (dx_mlx, dw_mlx) = _mlx_gradients(x, weight, dy, stride, padding)
    assert mx.array_equal(y, y_mlx)  # MLX's own forward and input gradient
    assert mx.array_equal(dx, dx_mlx)
    expected = numpy_depthwise_weight_grad(x, dy, kernel, stride, padding)
    np.testing.assert_allclose(np.array(dw), expected, atol=2e-5 * np.abs(expected).max())
    # in inference, MLX's convolution itself
    assert mx.array_equal(conv2d(x, weight, stride, padding, groups=shape[-1], inference=True), y)


@on_cuda
@pytest.mark.parametrize("shape,kernel,stride,padding", CASES)
def test_training_path_on_cuda(shape, kernel, stride, padding):
    _assert_training_path_matches_mlx(shape, kernel, stride, padding)


@pytest.mark.parametrize("shape,kernel,stride,padding", CASES[:5])
def test_training_path_wiring_with_the_kernel_stood_in(monkeypatch, shape, kernel, stride, padding):
    """On any device: the CUDA path's custom gradient, with the written taps' weight gradient
    standing in for the kernel (the same sum), gives MLX's forward and input gradient and
    NumPy's weight gradient; the dispatch sends training through it and inference around it."""
    taken = []

    def stand_in(x, dy, kernel_size, stride, padding):
        taken.append(kernel_size)
        return _depthwise_weight_grad(x, dy, kernel_size, stride, padding).astype(mx.float32)

    monkeypatch.setattr(conv_module, "on_cpu", lambda: False)
    monkeypatch.setattr(conv_module, "on_cuda", lambda: True)
    monkeypatch.setattr(conv_module, "depthwise_weight_grad", stand_in)
    _assert_training_path_matches_mlx(shape, kernel, stride, padding)
    assert taken == [(kernel, kernel)]
