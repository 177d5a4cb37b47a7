"""Data-parallel training with real `mx.distributed` processes (ring backend on 127.0.0.1)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import mlxvision as mv

CHILD = Path(__file__).with_name("distributed_child.py")
LAUNCH = [
    sys.executable,
    "-c",
    "import sys; from mlx._distributed_utils.launch import main; "
    "sys.argv[0] = 'mlx.launch'; sys.exit(main())",
]


def _launch(ranks, *args, timeout=240):
    command = [*LAUNCH, "-n", str(ranks), "--backend", "ring", sys.executable, str(CHILD)]
    began = time.monotonic()
    done = subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    return done, time.monotonic() - began


def _single(*args):
    done = subprocess.run(
        [sys.executable, str(CHILD), *map(str, args)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_ranks_train_like_one_rank_with_the_same_global_batch(tmp_path):
    _single(tmp_path / "one", 64, 2)
    done, _ = _launch(2, tmp_path / "two", 64, 2)
    assert done.returncode == 0 and "rank 1 of 2 done" in done.stdout, done.stderr[-3000:]
    one = mx.load(str(tmp_path / "one" / "final.safetensors"))
    two = mx.load(str(tmp_path / "two" / "final.safetensors"))
    for name in one:
        np.testing.assert_allclose(np.array(two[name]), np.array(one[name]), atol=1e-5, rtol=0)
    # metrics are summed over the ranks: the same training accuracy as one process reports
    np.testing.assert_allclose(
        np.load(tmp_path / "two" / "accuracy.npy"), np.load(tmp_path / "one" / "accuracy.npy")
    )


def test_a_killed_rank_stops_the_job_quickly_and_the_checkpoint_survives(tmp_path):
    done, seconds = _launch(2, tmp_path, 64, 3, 30)  # rank 1 dies at step 30, mid-epoch 2
    output = done.stdout + done.stderr
    assert seconds < 120
    assert "rank 0: stopped by the launcher" in output or "rank 0: lost contact" in output
    assert not (tmp_path / "final.safetensors").exists()
    latest = mv.checkpoint.resolve_checkpoint(tmp_path)
    mv.checkpoint.verify_checkpoint(latest)
    assert mv.checkpoint.read_state(latest)["global_step"] == 22  # end of epoch 1


def test_the_watchdog_ends_a_stalled_process_with_a_message():
    code = (
        "import time; from mlxvision.engine.distributed import Watchdog; "
        "Watchdog(rank=3, timeout=1.0); time.sleep(30)"
    )
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and time.monotonic() - began < 20
    assert "rank 3: no training progress for 1 s" in done.stderr


def test_a_single_process_is_a_group_of_one():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_")}
    code = (
        "import mlxvision, mlx.nn as nn, mlx.optimizers as optim; "
        "t = mlxvision.Trainer(nn.Linear(2, 2), optim.SGD(0.1), distributed=True); "
        "print(t.rank, t.world_size, t.is_main)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.stdout.split() == ["0", "1", "True"], done.stderr


def test_the_command_line_trains_distributed_and_rank_0_writes_the_run(tmp_path):
    command = [*LAUNCH, "-n", "2", "--backend", "ring", sys.executable, "-m", "mlxvision.cli"]
    args = ["train", "--distributed", "--epochs", "1", "--out", str(tmp_path), "--name", "d"]
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Test Accuracy:") == 1  # rank 0 alone prints
    assert "global batch 64 = 2 × 32" in done.stdout
    result = json.loads((tmp_path / "d" / "result.json").read_text())
    assert result["processes"] == 2 and result["test_accuracy"] > 0.3
    assert mv.load(tmp_path / "d" / "model.safetensors").num_classes == 10


def test_processes_option_starts_the_ranks_itself(tmp_path):
    command = [sys.executable, "-m", "mlxvision.cli", "train", "--processes", "2"]
    args = ["--epochs", "1", "--out", str(tmp_path), "--name", "p", "--quiet"]
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "p" / "result.json").read_text())
    assert result["processes"] == 2 and result["test_accuracy"] > 0.3


def test_a_failing_rank_fails_the_local_job_and_stops_the_others():
    from mlxvision.engine.local_launch import launch_local

    code = (
        "import os, sys, time, mlx.core as mx; g = mx.distributed.init(); "
        "sys.exit(3) if g.rank() == 1 else time.sleep(120)"
    )
    began = time.monotonic()
    assert launch_local([sys.executable, "-c", code], processes=2) == 3
    assert time.monotonic() - began < 60  # rank 0 was stopped, not waited for
    with pytest.raises(ValueError, match="processes"):
        launch_local([sys.executable, "-c", "pass"], processes=0)
