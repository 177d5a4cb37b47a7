import json
import os
import re
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

import mlxvision as mv
from mlxvision.cli import main
from mlxvision.export import load_mlxfn


def _accuracy(text):
    return float(re.search(r"Test Accuracy: ([0-9.]+)%", text).group(1))


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    code = main(["train", "--epochs", "2", "--out", str(out), "--name", "r", "--quiet"])
    assert code == 0
    return out / "r"


def test_train_writes_a_run_folder(short_run, capsys):
    assert sorted(p.name for p in short_run.iterdir()) == [
        "checkpoints",
        "confusion.png",
        "curves.png",
        "metrics.jsonl",
        "model.safetensors",
        "recipe.json",
        "result.json",
    ]
    records = [json.loads(line) for line in (short_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert json.loads((short_run / "recipe.json").read_text())["model"] == "simple_cnn"
    result = json.loads((short_run / "result.json").read_text())
    assert result["test_accuracy"] == records[-1]["val_accuracy"]


def test_resume_continues_a_run_to_more_epochs(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--epochs", "1", "--out", str(tmp_path), "--name", "r", "--quiet"]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert main(["inspect", str(run)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["position"]["epoch"] == 3 and summary["kind"] == "checkpoint folder"


def test_train_with_a_memory_cap_reports_it_and_gives_the_limit_back(tmp_path, capsys):
    limit = mx.get_memory_limit()
    args = ["train", "--epochs", "1", "--out", str(tmp_path), "--name", "c", "--memory-cap", "0.1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    found = re.search(r"MemoryCap: working set ([0-9,]+) MB, memory limit ([0-9,]+) MB", printed)
    assert found, printed[-2000:]
    working, cap = (int(v.replace(",", "")) for v in found.groups())
    assert 0 < working <= cap <= working * 1.1 + 1
    assert mx.get_memory_limit() == limit


def test_evaluate_reloads_to_the_accuracy_training_reported(short_run, capsys):
    assert main(["evaluate", str(short_run)]) == 0
    reported = json.loads((short_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert _accuracy(capsys.readouterr().out) == pytest.approx(
        100 * reported["val_accuracy"], abs=0.005
    )


def test_export_mlxfn_gives_the_checkpoints_outputs(short_run, tmp_path, capsys):
    target = tmp_path / "digits.mlxfn"
    assert main(["export", str(short_run), "--output", str(target)]) == 0
    model = mv.load(short_run / "model.safetensors")
    x = mx.random.normal((1, 8, 8, 1))
    np.testing.assert_allclose(np.array(load_mlxfn(target)(x)), np.array(model(x)), atol=1e-6)


@pytest.mark.parametrize("fmt", ["onnx", "coreml"])
def test_export_onnx_and_coreml_from_a_run_folder(short_run, tmp_path, capsys, fmt):
    target = tmp_path / ("m.onnx" if fmt == "onnx" else "m.mlpackage")
    assert main(["export", str(short_run), "--format", fmt, "--output", str(target)]) == 0
    out = capsys.readouterr().out
    assert target.exists()
    if fmt == "onnx":
        error = float(re.search(r"max relative error ([0-9.e+-]+)", out).group(1))
        assert error < 1e-4
    else:
        assert "Exported" in out


def test_missing_and_corrupt_checkpoints_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no checkpoint at"):
        main(["evaluate", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="not a run folder"):
        main(["train", "--resume", str(tmp_path)])
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00" * 20)
    assert main(["evaluate", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err


def test_unknown_model_on_the_command_line(tmp_path, capsys):
    code = main(["train", "--model", "resnet_nope", "--epochs", "1", "--out", str(tmp_path)])
    assert code == 2
    assert "Known models:" in capsys.readouterr().err


def test_info_prints_the_blas(capsys):
    assert main(["info"]) == 0
    assert "blas:" in capsys.readouterr().out


def test_default_train_command_reaches_95_percent_and_evaluate_agrees(tmp_path):
    """The README's main job, as a user runs it: a fresh process, default settings."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    train = subprocess.run(
        [sys.executable, "-m", "mlxvision.cli", "train", "--out", str(tmp_path), "--name", "d"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert train.returncode == 0, train.stderr
    assert "Epoch [20/20], Loss: " in train.stdout + train.stderr
    trained = _accuracy(train.stdout)
    assert trained >= 95.0
    evaluate = subprocess.run(
        [sys.executable, "-m", "mlxvision.cli", "evaluate", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert evaluate.returncode == 0, evaluate.stderr
    assert _accuracy(evaluate.stdout) == trained
