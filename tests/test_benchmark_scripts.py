"""The benchmark scripts still run (one tiny step each, without PyTorch): they import each
other's helpers, and a changed signature once broke one without any test noticing."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize(
    "script, args",
    [
        ("processes.py", ["--configs", "1x1", "--no-torch", "--warmup", "0", "--batch-size", "8"]),
        ("throughput.py", ["--variants", "fast", "--warmup", "0", "--batch-size", "4"]),
    ],
)
def test_benchmark_script_prints_a_row_with_a_positive_rate(script, args):
    command = [sys.executable, script, "--models", "simple_cnn", "--steps", "1", "--repeats", "1"]
    done = subprocess.run(
        command + args, cwd=BENCHMARKS, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| simple_cnn")]
    assert rows, done.stdout
    rates = [float(v) for v in re.findall(r"\| (\d+\.\d+) \(", rows[0])]
    assert rates and all(rate > 0 for rate in rates)


def test_gpu_profile_sorts_kernels_of_both_frameworks_into_categories():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from profile_gpu import category
    finally:
        sys.path.remove(str(BENCHMARKS))
    expected = {
        "sm90_xmma_wgrad_indexed_implicit_gemm_bf16bf16": "convolution / matmul",
        "custom_kernel_mlxvision_bn_chunk_grad_sums_bfloat16_t": "batch-norm sums, reductions",
        "at::native::batch_norm_collect_statistics_kernel": "batch-norm sums, reductions",
        "void mlx::core::cu::copy_v<__nv_bfloat16, float, unsigned int, 8>": "dtype casts, copies",
        "void mlx::core::cu::HV2IBroadcastBIV2IMultiplyAHJf4IAsType": "elementwise and the rest",
    }
    assert {name: category(name) for name in expected} == expected


def test_backend_settings_runs_each_setting_in_its_own_process():
    command = [sys.executable, "backend_settings.py", "--device", "cpu", "--model", "simple_cnn"]
    command += ["--batch-size", "4", "--steps", "1", "--warmup", "0", "--repeats", "1"]
    command += ["--precision", "float32", "--settings", "default;MLX_BFS_MAX_WIDTH=1"]
    done = subprocess.run(command, cwd=BENCHMARKS, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == ["default", "MLX_BFS_MAX_WIDTH=1"]
    assert all(float(row.split("|")[3].replace(",", "")) > 0 for row in rows)
    bad = subprocess.run(
        command[:-1] + ["MLX_BFS_MAX_WIDTH"], cwd=BENCHMARKS, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "expected default or NAME=VALUE" in bad.stderr


def test_run_ahead_memory_prints_a_row_per_memory_limit():
    command = [sys.executable, "run_ahead_memory.py", "--device", "cpu", "--model", "simple_cnn"]
    command += ["--batch-size", "4", "--steps", "1", "--warmup", "0", "--precision", "float32"]
    done = subprocess.run(
        command + ["--limits", "none,1"], cwd=BENCHMARKS, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1:4] for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [row[0].strip() for row in rows[1:]] == ["MLX's default", "1"]
    assert all(float(row[1].replace(",", "")) > 0 for row in rows[1:])
    bad = subprocess.run(
        command + ["--limits", "none,-5"], cwd=BENCHMARKS, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--limits" in bad.stderr and "'-5'" in bad.stderr


def test_first_step_counts_the_kernels_a_fresh_cache_compiles():
    command = [sys.executable, "first_step.py", "--device", "cpu", "--models", "simple_cnn"]
    command += ["--batch-size", "4", "--steps", "1", "--precision", "float32", "--fresh-cache"]
    done = subprocess.run(command, cwd=BENCHMARKS, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [line.split("|") for line in done.stdout.splitlines() if line.startswith("| simple")]
    first_step, kernels, rate = float(row[2]), int(row[6]), float(row[7].replace(",", ""))
    assert first_step > 0 and kernels > 0 and rate > 0


def test_depthwise_layers_times_every_depthwise_layer_and_checks_the_gradients():
    command = [sys.executable, "depthwise_layers.py", "--device", "cpu"]
    command += ["--model", "mobilenet_v3_small", "--batch-size", "2", "--repeats", "1"]
    command += ["--dtype", "float32"]
    done = subprocess.run(command, cwd=BENCHMARKS, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if re.match(r"\| \d+×", line)]
    # MobileNetV3-Small's depthwise layers at 32 pixels: 3×3 and 5×5, strides 1 and 2
    assert len(rows) >= 5 and {"3×3, 2", "5×5, 1", "5×5, 2"} <= {r.split(" | ")[1] for r in rows}
    for row in rows:
        cells = row.split(" | ")
        times = [float(t) for cell in cells[2:4] for t in cell.split(" / ")]
        assert len(times) == 6 and all(t > 0 for t in times), row
        assert float(cells[5].split()[1].rstrip(" |")) < 1e-4, row  # taps against MLX's
