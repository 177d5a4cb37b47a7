import json
import struct

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest

import mlxvision as mv
from mlxvision.checkpoint import CheckpointError, read_header, read_metadata
from mlxvision.engine import make_train_step


def _trained_model():
    mx.random.seed(0)
    model = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    step = make_train_step(model, optim.Adam(learning_rate=1e-2))
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = mx.array(rng.normal(size=(8, 8, 8, 1)).astype(np.float32))
        y = mx.array(rng.integers(0, 10, size=8).astype(np.int32))
        step(x, y)
        mx.eval(model.state)
    return model


def test_round_trip_gives_bit_identical_logits(tmp_path):
    model = _trained_model()
    model.eval()
    x = mx.array(np.random.default_rng(1).normal(size=(5, 8, 8, 1)).astype(np.float32))
    before = np.array(model(x))
    path = mv.save(model, tmp_path / "digits", metadata={"classes": list("0123456789")})
    assert path.name == "digits.safetensors"
    loaded = mv.load(path)
    assert type(loaded) is type(model) and not loaded.training
    assert np.array_equal(np.array(loaded(x)), before)
    assert read_metadata(path)["metadata"]["classes"][3] == "3"
    assert read_metadata(path)["model"] == {
        "name": "simple_cnn",
        "kwargs": {"num_classes": 10, "in_channels": 1, "input_size": 8},
    }


def test_save_leaves_no_temporary_files_and_replaces_atomically(tmp_path):
    model = _trained_model()
    mv.save(model, tmp_path / "m.safetensors")
    mv.save(model, tmp_path / "m.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_failed_save_keeps_the_previous_file(tmp_path):
    model = _trained_model()
    path = mv.save(model, tmp_path / "m")
    before = path.read_bytes()
    with pytest.raises(TypeError, match="JSON"):
        mv.save(model, path, metadata={"bad": object()})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothere\.safetensors: no such checkpoint"):
        mv.load(tmp_path / "nothere.safetensors")


@pytest.mark.parametrize(
    "damage",
    ["truncate", "garbage", "empty", "huge_header", "bad_json", "bad_offsets"],
)
def test_corrupt_files_raise_a_clear_error_naming_the_path(tmp_path, damage):
    path = mv.save(_trained_model(), tmp_path / "m")
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) - 100])
    elif damage == "garbage":
        path.write_bytes(b"this is not a checkpoint at all")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "huge_header":
        path.write_bytes(struct.pack("<Q", 2**60) + raw[8:])
    elif damage == "bad_json":
        path.write_bytes(raw[:8] + b"{" * header_len + raw[8 + header_len :])
    elif damage == "bad_offsets":
        name = next(k for k in header if k != "__metadata__")
        header[name]["data_offsets"][1] += 4
        text = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + header_len :])
    with pytest.raises(CheckpointError) as err:
        mv.load(path)
    assert str(path) in str(err.value)


def test_weights_that_do_not_fit_name_every_problem(tmp_path):
    path = mv.save(_trained_model(), tmp_path / "m")
    other = mv.create_model("simple_cnn", num_classes=5, in_channels=1, input_size=8)
    with pytest.raises(CheckpointError) as err:
        mv.load(path, model=other)
    message = str(err.value)
    assert "fc2.weight: file has shape (10, 1024), model expects (5, 1024)" in message
    assert "fc2.bias" in message


def test_weights_only_file_needs_a_model(tmp_path):
    model = nn.Linear(3, 2)
    path = mv.save(model, tmp_path / "plain")
    with pytest.raises(CheckpointError, match="weights only"):
        mv.load(path)
    loaded = mv.load(path, model=nn.Linear(3, 2))
    assert np.array_equal(np.array(loaded.weight), np.array(model.weight))


def test_read_header_reports_shapes(tmp_path):
    path = mv.save(_trained_model(), tmp_path / "m")
    assert read_header(path)["conv1.weight"]["shape"] == [64, 3, 3, 1]
