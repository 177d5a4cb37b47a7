"""Run-time scalars: the same values as MLX's constants, and no kernel compiled per shape or
per layer setting."""

import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlxvision.ops.scalars import mean, runtime_scalar


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16, mx.float16, mx.int32])
@pytest.mark.parametrize("axis, keepdims", [((1, 2), False), ((1, 2), True), (0, False)])
def test_mean_is_mx_mean_value_for_value(dtype, axis, keepdims):
    x = (mx.random.normal((3, 7, 5, 4), key=mx.random.key(1)) * 10).astype(dtype)
    ours, theirs = mean(x, axis, keepdims), mx.mean(x, axis=axis, keepdims=keepdims)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert np.array_equal(np.array(ours.astype(mx.float32)), np.array(theirs.astype(mx.float32)))


def test_runtime_scalar_keeps_its_value_and_dtype():
    value = runtime_scalar(1 / 3, mx.bfloat16)
    assert value.shape == () and value.dtype == mx.bfloat16
    assert value.item() == mx.array(1 / 3, mx.bfloat16).item()


@pytest.mark.parametrize("case", ["batch_norm", "squeeze_excitation", "stochastic_depth"])
def test_a_new_shape_or_rate_compiles_no_new_kernels(case, tmp_path):
    """The batch norm's counts, the squeeze-excitation's mean and the stochastic depth's rate
    reach mx.compile's fused kernels at run time. Written into a kernel's source, they made
    each shape or block compile kernels of its own (seconds each on CUDA)."""
    child = Path(__file__).with_name("kernel_count_child.py")
    done = subprocess.run(
        [sys.executable, str(child), case],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = map(int, done.stdout.split())
    assert first > 0 and second == 0, f"{first} kernels for the first, {second} more for the next"
