"""The CUDA batch-norm kernels: their chunking and combination everywhere, the kernels
themselves against NumPy (float64) where MLX runs on a CUDA GPU."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlxvision.ops.cuda_norm import (
    channel_grad_sums,
    channel_stats,
    chunk_counts,
    chunk_rows,
    combine_partial_stats,
)
from mlxvision.ops.norm import BatchNorm
from test_ops_norm import assert_close, layer_pass, numpy_batch_norm

on_cuda = pytest.mark.skipif(
    not (mx.cuda.is_available() and mx.default_device().type == mx.DeviceType.gpu),
    reason="needs MLX's CUDA backend",
)

# shapes: rows not a multiple of the chunk, channels not a multiple of the block's 32
SHAPES = [(512, 32, 32, 64), (7, 5, 5, 3), (64, 4, 4, 512), (3, 9, 33), (1000, 40)]


def test_chunk_rows_are_lane_multiples_and_cover_the_rows():
    for rows, channels in [(524288, 64), (8192, 512), (10, 3), (100_000, 7)]:
        per_chunk = chunk_rows(rows, channels)
        counts = np.array(chunk_counts(rows, per_chunk))
        assert per_chunk % 8 == 0 and per_chunk >= 64
        assert counts.sum() == rows and (counts[:-1] == per_chunk).all() and counts[-1] > 0


def test_combine_partial_stats_matches_numpy_on_uneven_chunks():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, (1000, 6))
    per_chunk = 96
    chunks = [x[i : i + per_chunk] for i in range(0, len(x), per_chunk)]
    means = np.stack([c.mean(0) for c in chunks])
    m2 = np.stack([((c - c.mean(0)) ** 2).sum(0) for c in chunks])
    mean, variance = combine_partial_stats(
        mx.array(means, dtype=mx.float32),
        mx.array(m2, dtype=mx.float32),
        chunk_counts(len(x), per_chunk),
    )
    np.testing.assert_allclose(np.array(mean), x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(np.array(variance), x.var(0), rtol=1e-5)


def _input(shape, dtype, seed=0, mean=5.0, std=3.0):
    rng = np.random.default_rng(seed)
    values = rng.normal(mean, std, shape).astype(np.float32)
    x = mx.array(values).astype(dtype)
    return x, np.array(x.astype(mx.float32)).astype(np.float64)


@on_cuda
def test_channel_stats_match_numpy_float64():
    for shape in SHAPES:
        for dtype in (mx.float32, mx.bfloat16, mx.float16):
            x, reference = _input(shape, dtype)
            axes = tuple(range(len(shape) - 1))
            mean, variance = channel_stats(x)
            assert mean.dtype == variance.dtype == mx.float32
            np.testing.assert_allclose(np.array(mean), reference.mean(axes), rtol=1e-5)
            np.testing.assert_allclose(np.array(variance), reference.var(axes), rtol=1e-4)


@on_cuda
def test_channel_grad_sums_match_numpy_float64():
    for shape in SHAPES:
        for dtype in (mx.float32, mx.bfloat16):
            x, x64 = _input(shape, dtype, seed=1)
            dy, dy64 = _input(shape, dtype, seed=2)
            axes = tuple(range(len(shape) - 1))
            mean64 = x64.mean(axes)
            sum_dy, sum_dy_centred = channel_grad_sums(dy, x, mx.array(mean64, mx.float32))
            np.testing.assert_allclose(np.array(sum_dy), dy64.sum(axes), rtol=1e-4)
            expected = (dy64 * (x64 - mean64)).sum(axes)
            scale = np.abs(dy64 * (x64 - mean64)).sum(axes)  # sums that nearly cancel
            assert (np.abs(np.array(sum_dy_centred) - expected) <= 1e-5 * scale).all()


@on_cuda
def test_batch_norm_on_cuda_matches_numpy_forward_and_backward():
    # the other BatchNorm tests (test_ops_norm.py) run the CUDA path too on a CUDA GPU; these
    # shapes take several chunks and a partial block of channels
    for shape, dtype, rtol in [
        ((64, 8, 8, 48), mx.float32, 1e-4),
        ((7, 5, 5, 3), mx.float32, 1e-4),
        ((64, 8, 8, 48), mx.bfloat16, 2e-2),
    ]:
        x, x64 = _input(shape, dtype, seed=3)
        dy, dy64 = _input(shape, dtype, seed=4, mean=0.0, std=1.0)
        norm = BatchNorm(shape[-1])
        norm.weight = mx.linspace(0.5, 1.5, shape[-1])
        norm.bias = mx.linspace(-1.0, 1.0, shape[-1])
        expected = numpy_batch_norm(x64, np.array(norm.weight), np.array(norm.bias), dy64, norm.eps)
        for got, want in zip(layer_pass(norm, x, dy), expected, strict=True):
            assert_close(got.astype(mx.float32), want, rtol)
