"""Disk full, file too large, permission denied: a clear OSError, the previous checkpoint whole.

The file-size limit and the read-only folders are real OS limits imposed on a child process
(``checkpoint_errors_child.py``); "no space left" and "input/output error" are raised by a
patched ``os.write`` / ``os.fsync``, the lowest calls the library writes through.
"""

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlxvision as mv
from mlxvision.checkpoint import (
    CheckpointManager,
    read_arrays,
    read_state,
    resolve_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)

CHILD = Path(__file__).with_name("checkpoint_errors_child.py")
TARGETS = {
    "model file": "m.safetensors",
    "checkpoint folder": "ckpt",
    "new checkpoint folder": "ckpt-new",
    "manager": "run",
    "manager, same step again": "run/step-00000001",
}


def _child(mode: str, folder: Path) -> dict:
    done = subprocess.run(
        [sys.executable, str(CHILD), mode, str(folder)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _all_equal(model, value: float) -> bool:
    return all(np.all(np.array(v) == value) for _, v in tree_flatten(model.parameters()))


def _assert_previous_checkpoints_intact(folder: Path, *, new_folder_absent: bool = True) -> None:
    """The first checkpoints (weights 1) load and verify; no temporary is left anywhere."""
    assert _all_equal(mv.load(folder / "m.safetensors"), 1.0)
    verify_checkpoint(folder / "ckpt")
    assert _all_equal(mv.load(folder / "ckpt"), 1.0)
    assert read_state(folder / "ckpt")["global_step"] == 1
    momentum = read_arrays(folder / "ckpt", "optimizer")["momentum"]
    assert all(np.all(np.array(v) == 1.0) for _, v in tree_flatten(momentum))
    run = folder / "run"
    index = json.loads((run / "index.json").read_text())["checkpoints"]
    assert [e["name"] for e in index] == ["step-00000001"]
    for entry in index:
        verify_checkpoint(run / entry["name"])
    assert resolve_checkpoint(run).name == "step-00000001"
    assert _all_equal(mv.load(run), 1.0)
    if new_folder_absent:
        assert not (folder / "ckpt-new").exists()
    for place in (folder, run):
        hidden = [p.name for p in place.iterdir() if p.name.startswith(".")]
        assert hidden == [], f"temporaries left in {place}: {hidden}"


def _assert_clear(results: dict, folder: Path, code: int, words: str) -> None:
    for what, result in results.items():
        assert result["raised"] is not None, f"{what}: the save did not fail"
        assert result["is_oserror"] and result["errno"] == code, (what, result)
        assert str(folder / TARGETS[what]) in result["message"], (what, result["message"])
        assert words in result["message"], (what, result["message"])
        assert result["cause_errno"] == code, (what, result)


def test_file_size_limit_fails_clearly_and_keeps_the_previous_checkpoints(tmp_path):
    _child("first", tmp_path)
    results = _child("fsize", tmp_path)
    _assert_clear(results, tmp_path, errno.EFBIG, "file too large")
    assert results["model file"]["raised"] == "OSError"
    _assert_previous_checkpoints_intact(tmp_path)
    # the limit was what failed: the same saves succeed without it
    model = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    CheckpointManager(tmp_path / "run", keep_last=2).save(2, model)
    assert resolve_checkpoint(tmp_path / "run").name == "step-00000002"


def test_read_only_folders_fail_clearly_and_keep_the_previous_checkpoints(tmp_path):
    if sys.platform == "win32":
        pytest.skip("folder modes do not stop writes on Windows")
    _child("first", tmp_path)
    read_only = stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP
    places = [tmp_path, tmp_path / "run"]
    try:
        for place in places:
            place.chmod(read_only)
        results = _child("readonly", tmp_path)
    finally:
        for place in places:
            place.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP)
    if "skip" in results:
        pytest.skip(results["skip"])
    _assert_clear(results, tmp_path, errno.EACCES, "permission denied")
    assert {r["raised"] for r in results.values()} == {"PermissionError"}
    _assert_previous_checkpoints_intact(tmp_path)


def test_a_file_where_a_folder_should_be_fails_clearly_even_as_root(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    model = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    saves = {
        blocker / "m.safetensors": lambda: mv.save(model, blocker / "m"),
        blocker / "ckpt": lambda: save_checkpoint(blocker / "ckpt", model),
        blocker / "run": lambda: CheckpointManager(blocker / "run").save(1, model),
        blocker / "deeper": lambda: mv.save(model, blocker / "deeper" / "m"),
    }
    for target, save in saves.items():
        with pytest.raises(NotADirectoryError) as err:
            save()
        assert str(target) in str(err.value)
        assert "not a folder" in str(err.value) or "is a file, not a folder" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]
    assert blocker.read_text() == "a file, not a folder"


class _FailingWrites:
    """``os.write`` that passes ``allowed`` calls through, then fails every later one."""

    def __init__(self, allowed: int | None, code: int = errno.ENOSPC) -> None:
        self.real = os.write
        self.allowed = allowed
        self.code = code
        self.calls = 0

    def __call__(self, fd, data):
        self.calls += 1
        if self.allowed is not None and self.calls > self.allowed:
            raise OSError(self.code, os.strerror(self.code))
        return self.real(fd, data)


def _first_checkpoints(folder: Path) -> None:
    model = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    model.load_weights([(k, mx.ones(v.shape)) for k, v in tree_flatten(model.parameters())])
    contents = dict(
        optimizer_state={"step": mx.array(3), "momentum": model.parameters()},
        state={"global_step": 1, "metrics": {"val_accuracy": 0.1}},
    )
    mv.save(model, folder / "m")
    save_checkpoint(folder / "ckpt", model, **contents)
    CheckpointManager(folder / "run", keep_last=2).save(1, model, **contents)


def _second_saves(folder: Path) -> dict:
    model = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    model.load_weights([(k, mx.full(v.shape, 2.0)) for k, v in tree_flatten(model.parameters())])
    contents = dict(
        optimizer_state={"step": mx.array(4), "momentum": model.parameters()},
        state={"global_step": 2, "metrics": {"val_accuracy": 0.2}},
    )
    return {
        "model file": lambda: mv.save(model, folder / "m"),
        "checkpoint folder": lambda: save_checkpoint(
            folder / "ckpt", model, overwrite=True, **contents
        ),
        "new checkpoint folder": lambda: save_checkpoint(folder / "ckpt-new", model, **contents),
        "manager": lambda: CheckpointManager(folder / "run", keep_last=2).save(
            2, model, **contents
        ),
        "manager, same step again": lambda: CheckpointManager(folder / "run", keep_last=2).save(
            1, model, **contents
        ),
    }


@pytest.mark.parametrize("what", list(TARGETS))
def test_disk_full_at_every_write_fails_clearly_and_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch, what
):
    _first_checkpoints(tmp_path)
    counting = _FailingWrites(allowed=None)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    _first_checkpoints(scratch)
    monkeypatch.setattr(os, "write", counting)
    _second_saves(scratch)[what]()
    monkeypatch.undo()
    writes = counting.calls
    assert writes >= 3  # header length, header, tensors (more for folders: every file)
    for allowed in range(writes):
        failing = _FailingWrites(allowed)
        monkeypatch.setattr(os, "write", failing)
        try:
            with pytest.raises(OSError) as err:
                _second_saves(tmp_path)[what]()
        finally:
            monkeypatch.undo()
        assert err.value.errno == errno.ENOSPC, (allowed, err.value)
        assert str(tmp_path / TARGETS[what]) in str(err.value)
        assert "no space left on the device (the disk is full)" in str(err.value)
        assert isinstance(err.value.__cause__, OSError)
        assert err.value.__cause__.errno == errno.ENOSPC
        _assert_previous_checkpoints_intact(tmp_path)


def test_a_failing_fsync_fails_clearly_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    _first_checkpoints(tmp_path)

    def broken_fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    for what, save in _second_saves(tmp_path).items():
        monkeypatch.setattr(os, "fsync", broken_fsync)
        try:
            with pytest.raises(OSError, match="input/output error") as err:
                save()
        finally:
            monkeypatch.undo()
        assert err.value.errno == errno.EIO
        assert str(tmp_path / TARGETS[what]) in str(err.value)
        _assert_previous_checkpoints_intact(tmp_path)


def test_a_failed_index_write_removes_the_new_checkpoint(tmp_path, monkeypatch):
    """The checkpoint folder is complete but the index cannot be written: roll back."""
    _first_checkpoints(tmp_path)
    model = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    manager = CheckpointManager(tmp_path / "run", keep_last=2)
    real = manager._write_index

    def index_on_full_disk(entries):
        monkeypatch.setattr(os, "write", _FailingWrites(0))
        try:
            real(entries)
        finally:
            monkeypatch.undo()

    monkeypatch.setattr(manager, "_write_index", index_on_full_disk)
    with pytest.raises(OSError, match="could not record the checkpoint") as err:
        manager.save(2, model, state={"global_step": 2})
    assert err.value.errno == errno.ENOSPC
    assert str(tmp_path / "run" / "step-00000002") in str(err.value)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["index.json", "step-00000001"]
    _assert_previous_checkpoints_intact(tmp_path)
