import json
import random
import struct
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlxvision as mv
from mlxvision.checkpoint import (
    CheckpointError,
    CheckpointManager,
    inspect,
    read_state,
    resolve_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)


def _checkpoint(tmp_path, name="ckpt"):
    model = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    return save_checkpoint(
        tmp_path / name,
        model,
        optimizer_state={"step": mx.array(3), "m": {"w": mx.ones((4, 4))}},
        ema_weights=model.parameters(),
        arrays={"random": [mx.random.key(1)]},
        state={"epoch": 2, "batch": 5, "global_step": 27, "metrics": {"val_accuracy": 0.5}},
        metadata={"classes": list("0123456789")},
    )


def test_a_checkpoint_holds_everything_and_verifies(tmp_path):
    folder = _checkpoint(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [
        "arrays.safetensors",
        "ema.safetensors",
        "manifest.json",
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
    ]
    manifest = verify_checkpoint(folder)
    assert set(manifest["files"]) == {p.name for p in folder.iterdir()} - {"manifest.json"}
    summary = inspect(folder)
    assert summary["position"] == {"epoch": 2, "batch": 5, "global_step": 27}
    assert summary["model"]["name"] == "simple_cnn" and summary["mlxvision_version"]
    assert mv.load(folder, ema=True).num_classes == 10
    with pytest.raises(FileExistsError):
        _checkpoint(tmp_path)


@pytest.mark.parametrize(
    "damage", ["flip", "truncate", "missing", "manifest_edit", "absurd_header", "extra"]
)
def test_damage_is_named_and_nothing_crashes(tmp_path, damage):
    folder = _checkpoint(tmp_path)
    target = folder / "optimizer.safetensors"
    raw = bytearray(target.read_bytes())
    if damage == "flip":
        raw[-3] ^= 0xFF
        target.write_bytes(bytes(raw))
    elif damage == "truncate":
        target.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "missing":
        target.unlink()
    elif damage == "manifest_edit":
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"]["optimizer.safetensors"]["sha256"] = "0" * 64
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "absurd_header":
        header = b'{"x":{"dtype":"F32","shape":[100000,100000,100000],"data_offsets":[0,4]}}'
        target.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
        manifest = json.loads((folder / "manifest.json").read_text())
        entry = manifest["files"]["optimizer.safetensors"]
        entry["bytes"] = target.stat().st_size
        entry["sha256"] = mv.checkpoint.folder.sha256_of(target)
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "extra":
        (folder / "surprise.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError) as err:
        verify_checkpoint(folder)
        mv.checkpoint.read_arrays(folder, "optimizer")
    message = str(err.value)
    assert str(folder) in message
    assert ("optimizer.safetensors" in message) or ("surprise.bin" in message)


def test_manager_keeps_last_and_best_and_ignores_temporary_folders(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2, keep_best=1, monitor="acc", mode="max")
    model = nn.Linear(2, 2)
    for step, acc in [(1, 0.5), (2, 0.9), (3, 0.6), (4, 0.7)]:
        manager.save(step, model, state={"global_step": step, "metrics": {"acc": acc}})
    kept = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert kept == ["step-00000002", "step-00000003", "step-00000004"]
    assert manager.best().name == "step-00000002"
    (tmp_path / ".step-00000005.tmp-abc").mkdir()  # what a killed save leaves behind
    (tmp_path / "index.json").write_text("{ not json")
    assert resolve_checkpoint(tmp_path).name == "step-00000004"


def test_sigkill_during_saves_never_leaves_a_broken_latest_checkpoint(tmp_path):
    rng = random.Random(0)
    child = Path(__file__).with_name("crash_child.py")
    folder = tmp_path / "run"
    last_step = 0
    kills = 0
    while kills < 50:
        proc = subprocess.Popen(
            [sys.executable, str(child), str(folder), str(last_step)],
            stdout=subprocess.PIPE,
            text=True,
        )
        proc.stdout.readline()  # it has saved at least once: now kill it at a random moment
        time.sleep(rng.uniform(0.0, 0.05))
        proc.kill()
        proc.wait()
        proc.stdout.close()
        kills += 1
        latest = resolve_checkpoint(folder)
        verify_checkpoint(latest)
        step = read_state(latest)["global_step"]
        model = mv.load(latest, model=nn.Sequential(nn.Linear(256, 512), nn.Linear(512, 256)))
        assert np.all(np.array(model.layers[1].bias) == step)
        assert step >= last_step
        last_step = step
        assert all(
            p.name.startswith("step-") or p.name == "index.json" or p.name.startswith(".")
            for p in folder.iterdir()
        )
