"""Batch-norm channel sums as CUDA kernels (``mx.fast.cuda_kernel``), for MLX's CUDA backend.

Written with MLX ops, the statistics of a bfloat16 batch norm cast the input to float32 (a
copy twice its size) and reduce it column by column; on an H200 those reductions and casts
took 9.4 ms of the 21.8 ms of kernels in a ResNet-18 training step (bf16, batch 512), where
PyTorch's reductions and casts took 2.0 ms of 8.7. These kernels read the input in its own
dtype, accumulate in float32, and write one row of partial sums per chunk of rows;
:func:`combine_partial_stats` and a sum over the chunks (small arrays) finish the job in MLX.

Both kernels take a row-contiguous ``(rows, channels)`` input (channels last).
"""

from __future__ import annotations

import functools
import math

import mlx.core as mx

_CHANNELS_PER_BLOCK = 32  # threadIdx.x: consecutive channels of one row, coalesced reads
_ROW_LANES = 8  # threadIdx.y: rows of a chunk taken in turn
_TARGET_BLOCKS = 2048  # enough blocks to fill an H200's 132 SMs several times
_MIN_CHUNK_ROWS = 64

_BLOCK_SUM = """
    __shared__ float partial_a[TR][TC];
    __shared__ float partial_b[TR][TC];
    partial_a[threadIdx.y][threadIdx.x] = a;
    partial_b[threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y != 0 || c >= C) {
        return;
    }
    for (int lane = 1; lane < TR; ++lane) {
        a += partial_a[lane][threadIdx.x];
        b += partial_b[lane][threadIdx.x];
    }
"""

# Per chunk and channel: the mean and the sum of squared deviations from it, accumulated
# around the chunk's first value (shifted sums keep float32 accurate when |mean| >> std).
_STATS_SOURCE = (
    """
    const int c = blockIdx.x * TC + threadIdx.x;
    const int chunk = blockIdx.y;
    const int start = chunk * ROWS;
    const int stop = min(start + ROWS, M);
    float a = 0.0f;  // sum of (x - shift)
    float b = 0.0f;  // sum of (x - shift)^2
    float shift = 0.0f;
    if (c < C) {
        shift = static_cast<float>(x[(size_t)start * C + c]);
        #pragma unroll 4
        for (int r = start + threadIdx.y; r < stop; r += TR) {
            float v = static_cast<float>(x[(size_t)r * C + c]) - shift;
            a += v;
            b += v * v;
        }
    }
"""
    + _BLOCK_SUM
    + """
    const float count = static_cast<float>(stop - start);
    const float mean = a / count;
    chunk_mean[chunk * C + c] = shift + mean;
    chunk_m2[chunk * C + c] = b - a * mean;
"""
)

# Per chunk and channel: sum(dy) and sum(dy * (x - mean)).
_GRAD_SUMS_SOURCE = (
    """
    const int c = blockIdx.x * TC + threadIdx.x;
    const int chunk = blockIdx.y;
    const int start = chunk * ROWS;
    const int stop = min(start + ROWS, M);
    float a = 0.0f;
    float b = 0.0f;
    if (c < C) {
        const float centre = mean[c];
        #pragma unroll 4
        for (int r = start + threadIdx.y; r < stop; r += TR) {
            const size_t i = (size_t)r * C + c;
            const float g = static_cast<float>(dy[i]);
            a += g;
            b += g * (static_cast<float>(x[i]) - centre);
        }
    }
"""
    + _BLOCK_SUM
    + """
    chunk_dy[chunk * C + c] = a;
    chunk_dy_centred[chunk * C + c] = b;
"""
)


@functools.cache
def _stats_kernel():
    return mx.fast.cuda_kernel(
        name="mlxvision_bn_chunk_stats",
        input_names=["x"],
        output_names=["chunk_mean", "chunk_m2"],
        source=_STATS_SOURCE,
    )


@functools.cache
def _grad_sums_kernel():
    return mx.fast.cuda_kernel(
        name="mlxvision_bn_chunk_grad_sums",
        input_names=["dy", "x", "mean"],
        output_names=["chunk_dy", "chunk_dy_centred"],
        source=_GRAD_SUMS_SOURCE,
    )


def chunk_rows(rows: int, channels: int) -> int:
    """Rows per chunk: enough chunks for about 2,048 blocks, a multiple of the row lanes.

    Example:
        >>> chunk_rows(512 * 32 * 32, 64), chunk_rows(100, 512)
        (512, 64)
    """
    column_blocks = math.ceil(channels / _CHANNELS_PER_BLOCK)
    per_chunk = math.ceil(rows * column_blocks / _TARGET_BLOCKS)
    per_chunk = math.ceil(per_chunk / _ROW_LANES) * _ROW_LANES
    return max(_MIN_CHUNK_ROWS, per_chunk)


@functools.cache  # one small array per layer shape, not one per call
def chunk_counts(rows: int, per_chunk: int) -> mx.array:
    """The number of rows of each chunk, as float32 (the last may be short).

    Example:
        >>> chunk_counts(10, 4).tolist()
        [4.0, 4.0, 2.0]
    """
    chunks = math.ceil(rows / per_chunk)
    counts = [float(per_chunk)] * (chunks - 1) + [float(rows - per_chunk * (chunks - 1))]
    return mx.array(counts, dtype=mx.float32)


def combine_partial_stats(
    chunk_mean: mx.array, chunk_m2: mx.array, counts: mx.array
) -> tuple[mx.array, mx.array]:
    """Mean and biased variance per channel from per-chunk means and squared deviations
    (Chan et al.'s pairwise formula, all chunks at once).

    Example:
        >>> x = mx.array([[1.0], [2.0], [3.0], [10.0]])
        >>> means = mx.array([[1.5], [6.5]])
        >>> m2 = mx.array([[0.5], [24.5]])
        >>> mean, variance = combine_partial_stats(means, m2, mx.array([2.0, 2.0]))
        >>> mean.item(), variance.item(), x.var().item()
        (4.0, 12.5, 12.5)
    """
    total = counts.sum()
    weights = counts[:, None]
    mean = (chunk_mean * weights).sum(axis=0) / total
    m2 = chunk_m2.sum(axis=0) + (weights * mx.square(chunk_mean - mean)).sum(axis=0)
    return mean, m2 / total


def _launch(kernel, inputs: list[mx.array], rows: int, channels: int):
    per_chunk = chunk_rows(rows, channels)
    chunks = math.ceil(rows / per_chunk)
    column_threads = math.ceil(channels / _CHANNELS_PER_BLOCK) * _CHANNELS_PER_BLOCK
    outputs = kernel(
        inputs=inputs,
        template=[(f"T{i}", array.dtype) for i, array in enumerate(inputs)]  # one kernel per dtype
        + [
            ("M", rows),
            ("C", channels),
            ("ROWS", per_chunk),
            ("TC", _CHANNELS_PER_BLOCK),
            ("TR", _ROW_LANES),
        ],
        grid=(column_threads, chunks * _ROW_LANES, 1),
        threadgroup=(_CHANNELS_PER_BLOCK, _ROW_LANES, 1),
        output_shapes=[(chunks, channels)] * 2,
        output_dtypes=[mx.float32] * 2,
    )
    return outputs, chunk_counts(rows, per_chunk)


def channel_stats(x: mx.array) -> tuple[mx.array, mx.array]:
    """Float32 mean and biased variance of each channel (last axis) of ``x``, on CUDA.

    Example (on a CUDA GPU):
        >>> x = mx.random.normal((4, 8, 8, 16)).astype(mx.bfloat16)  # doctest: +SKIP
        >>> mean, variance = channel_stats(x)  # doctest: +SKIP
    """
    channels = x.shape[-1]
    rows = x.size // channels
    (chunk_mean, chunk_m2), counts = _launch(
        _stats_kernel(), [x.reshape(rows, channels)], rows, channels
    )
    return combine_partial_stats(chunk_mean, chunk_m2, counts)


def channel_grad_sums(dy: mx.array, x: mx.array, mean: mx.array) -> tuple[mx.array, mx.array]:
    """Float32 ``sum(dy)`` and ``sum(dy * (x - mean))`` over every axis but the last, on CUDA.

    Example (on a CUDA GPU):
        >>> x = mx.random.normal((4, 8, 8, 16))  # doctest: +SKIP
        >>> mean = x.mean(axis=(0, 1, 2))  # doctest: +SKIP
        >>> sum_dy, sum_dy_centred = channel_grad_sums(mx.ones_like(x), x, mean)  # doctest: +SKIP
    """
    channels = x.shape[-1]
    rows = x.size // channels
    (chunk_dy, chunk_dy_centred), _ = _launch(
        _grad_sums_kernel(),
        [dy.reshape(rows, channels), x.reshape(rows, channels), mean.astype(mx.float32)],
        rows,
        channels,
    )
    return chunk_dy.sum(axis=0), chunk_dy_centred.sum(axis=0)
