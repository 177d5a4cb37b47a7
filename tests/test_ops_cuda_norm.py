"""The CUDA batch-norm kernels: their chunking everywhere, the kernels themselves against
NumPy (float64), and a compiled bfloat16 pass's memory, where MLX runs on a CUDA GPU."""

from __future__ import annotations

import shutil
import subprocess

import mlx.core as mx
import numpy as np
import pytest

from mlxvision.ops.cuda_norm import (
    _CHANNELS_PER_BLOCK,
    _ROW_LANES,
    _VALUES_PER_THREAD,
    HEADER,
    KERNELS,
    channel_affine,
    channel_affine_pair,
    channel_grad_sums,
    channel_stats,
    chunk_rows,
)
from mlxvision.ops.norm import BatchNorm, batch_norm
from test_ops_norm import assert_close, layer_pass, numpy_batch_norm

on_cuda = pytest.mark.skipif(
    not (mx.cuda.is_available() and mx.default_device().type == mx.DeviceType.gpu),
    reason="needs MLX's CUDA backend",
)

# shapes: rows not a multiple of the chunk, channels not a multiple of the block's 32
SHAPES = [(512, 32, 32, 64), (7, 5, 5, 3), (64, 4, 4, 512), (3, 9, 33), (1000, 40)]


def test_chunk_rows_are_lane_multiples_for_about_2048_blocks():
    for rows, channels in [(524288, 64), (8192, 512), (10, 3), (100_000, 7)]:
        per_chunk = chunk_rows(rows, channels)
        chunks = -(-rows // per_chunk)
        column_blocks = -(-channels // 32)
        assert per_chunk % 8 == 0 and per_chunk >= 64
        assert chunks * column_blocks <= 2048 or per_chunk == 64


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


@on_cuda
def test_column_sums_finish_in_chunk_order_so_repeats_agree_bitwise():
    x, _ = _input((512, 16, 16, 64), mx.bfloat16, seed=5)
    first = channel_stats(x)
    for _ in range(3):
        again = channel_stats(x)
        assert all(mx.array_equal(a, b).item() for a, b in zip(first, again, strict=True))


@on_cuda
def test_affine_passes_match_numpy_in_each_dtype():
    rng = np.random.default_rng(6)
    for shape in [(64, 8, 8, 48), (7, 5, 5, 3), (3, 9, 33)]:
        channels = shape[-1]
        a, b, c = (rng.normal(size=channels).astype(np.float32) for _ in range(3))
        for dtype in (mx.float32, mx.bfloat16, mx.float16):
            x, x64 = _input(shape, dtype, seed=7)
            dy, dy64 = _input(shape, dtype, seed=8, mean=0.0, std=1.0)
            y = channel_affine(x, mx.array(a), mx.array(b), dtype)
            dx = channel_affine_pair(dy, x, mx.array(a), mx.array(b), mx.array(c), dtype)
            assert y.dtype == dx.dtype == dtype and y.shape == dx.shape == shape
            rtol = 1e-6 if dtype == mx.float32 else 1e-2  # one rounding to the output dtype
            assert_close(y.astype(mx.float32), x64 * a + b, rtol)
            assert_close(dx.astype(mx.float32), dy64 * a + x64 * b + c, rtol)
        x, x64 = _input(shape, mx.bfloat16, seed=9)
        y = channel_affine(x, mx.array(a), mx.array(b), mx.float32)  # bf16 in, float32 out
        assert y.dtype == mx.float32
        assert_close(y, x64 * a + b, 1e-6)


@on_cuda
def test_relu_forms_of_the_kernels_match_numpy():
    rng = np.random.default_rng(12)
    for shape in [(64, 8, 8, 48), (7, 5, 5, 3)]:
        channels = shape[-1]
        a, b, c = (rng.normal(size=channels).astype(np.float32) for _ in range(3))
        for dtype, rtol in [(mx.float32, 1e-5), (mx.bfloat16, 1e-2)]:
            x, x64 = _input(shape, dtype, seed=13, mean=0.0, std=1.0)
            r, r64 = _input(shape, dtype, seed=14, mean=0.0, std=1.0)
            dy, dy64 = _input(shape, dtype, seed=15, mean=0.0, std=1.0)
            y = channel_affine(x, mx.array(a), mx.array(b), dtype, relu=True)
            assert_close(y.astype(mx.float32), np.maximum(x64 * a + b, 0), rtol)
            y_sum = channel_affine(x, mx.array(a), mx.array(b), dtype, relu=True, residual=r)
            assert_close(y_sum.astype(mx.float32), np.maximum(x64 * a + b + r64, 0), rtol)
            # the masked backward kernels against dy zeroed where the ReLU output is 0
            passed = np.array(y.astype(mx.float32)) > 0
            assert 0.2 < passed.mean() < 0.8
            masked64 = dy64 * passed
            mean64 = x64.mean(axis=tuple(range(len(shape) - 1)))
            mean = mx.array(mean64, mx.float32)
            sums = channel_grad_sums(dy, x, mean, relu_output=y)
            axes = tuple(range(len(shape) - 1))
            assert_close(sums[0], masked64.sum(axes), 1e-4)
            assert_close(sums[1], (masked64 * (x64 - mean64)).sum(axes), 1e-4)
            dx = channel_affine_pair(dy, x, *map(mx.array, (a, b, c)), dtype, relu_output=y)
            assert_close(dx.astype(mx.float32), masked64 * a + x64 * b + c, rtol)
    with pytest.raises(ValueError, match="only before a ReLU"):
        channel_affine(x, mx.array(a), mx.array(b), dtype, residual=r)


@on_cuda
def test_compiled_bfloat16_pass_keeps_no_float32_copy_of_the_input():
    weight, bias = mx.ones(64, mx.bfloat16), mx.zeros(64, mx.bfloat16)

    def loss(x, weight, bias):
        y, _, _ = batch_norm(x, weight, bias)
        return (y * y).sum()

    gradients = mx.compile(mx.grad(loss, argnums=(0, 1, 2)))
    x = mx.random.normal((64, 32, 32, 64)).astype(mx.bfloat16)
    mx.eval(x, gradients(x, weight, bias))
    mx.synchronize()
    mx.clear_cache()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    mx.eval(gradients(x, weight, bias))
    peak = (mx.get_peak_memory() - base) / x.nbytes
    # the output (kept for y·y's gradient), its gradient and dx: about 3 inputs' worth; a
    # float32 copy of x kept between the passes would add 2
    assert peak < 4.5, peak


NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="needs CUDA's compiler, nvcc")


def kernel_definition(name, inputs, outputs, source, ctype, constants) -> str:
    """A kernel in the signature MLX generates for it: each input a pointer, then its shape
    where the source reads it; the outputs; the template constants as ``constexpr``."""
    params = []
    for arg in inputs:
        params.append(f"const {ctype(arg)}* {arg}")
        if f"{arg}_shape" in source:
            params.append(f"const __grid_constant__ Shape {arg}_shape")
    params += [f"{ctype(arg)}* {arg}" for arg in outputs]
    body = "".join(f"    constexpr int {k} = {v};\n" for k, v in constants.items())
    return f"__global__ void {name}({', '.join(params)}) {{\n{body}{source}\n}}"


def assert_compiles_with_nvcc(tmp_path, header: str, kernels: list[str]) -> None:
    prelude = [
        "#include <cuda_bf16.h>",
        "#include <cuda_fp16.h>",
        "#include <cooperative_groups.h>",
        "#include <cuda/std/array>",
        "#include <cstdint>",
        "using Shape = cuda::std::array<int32_t, 10>;  // MLX's type for an input's shape",
        header,
        "namespace cg = cooperative_groups;",
    ]
    path = tmp_path / "kernels.cu"
    path.write_text("\n".join(prelude + kernels) + "\n")
    done = subprocess.run(
        [NVCC, "-arch=sm_90", "-c", str(path), "-o", str(tmp_path / "kernels.o")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@needs_nvcc
def test_every_kernel_source_compiles_with_nvcc(tmp_path):
    """The kernels compile on a machine without a GPU, in the signature MLX generates for
    them: a mistake in a source fails here rather than on first use."""

    def ctype(name: str) -> str:  # the activations in bfloat16, the rest float32
        return "__nv_bfloat16" if name in {"x", "dy", "y", "residual", "dx"} else "float"

    constants = {"TC": _CHANNELS_PER_BLOCK, "TR": _ROW_LANES, "V": _VALUES_PER_THREAD}
    kernels = [
        kernel_definition(name, inputs, outputs, source, ctype, constants)
        for name, (inputs, outputs, source) in KERNELS.items()
    ]
    assert_compiles_with_nvcc(tmp_path, HEADER, kernels)
