"""Resume in a new process gives bit-identical weights, optimizer state and EMA."""

import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np

import mlxvision as mv

CHILD = Path(__file__).with_name("resume_child.py")


def _run(*args):
    done = subprocess.run(
        [sys.executable, str(CHILD), *map(str, args)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_mid_epoch_resume_in_a_new_process_is_bit_identical(tmp_path):
    _run("straight", tmp_path / "straight", tmp_path / "straight.safetensors")
    _run("part", tmp_path / "run", tmp_path / "unused.safetensors")
    latest = mv.checkpoint.resolve_checkpoint(tmp_path / "run")
    assert latest.name == "step-00000015"
    assert mv.checkpoint.read_state(latest)["batch"] == 15  # mid-epoch: 22 batches an epoch
    _run("resume", tmp_path / "run", tmp_path / "resumed.safetensors")
    straight = mx.load(str(tmp_path / "straight.safetensors"))
    resumed = mx.load(str(tmp_path / "resumed.safetensors"))
    assert sorted(straight) == sorted(resumed)
    assert any(k.startswith("optimizer.") and k.endswith(".v") for k in straight)
    different = [
        k for k in straight if not np.array_equal(np.array(straight[k]), np.array(resumed[k]))
    ]
    assert different == []
