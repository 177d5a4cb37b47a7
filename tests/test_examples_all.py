"""Each example script runs as a user runs it, with a tiny setting; its claims are re-checked here.

The scripts print accuracies and write files; the tests read those files back independently
(loading models, running exported files) instead of trusting the printed words alone.
"""

import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlxvision as mv
from mlxvision.data import Digits

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LAUNCH = [
    sys.executable,
    "-c",
    "import sys; from mlx._distributed_utils.launch import main; "
    "sys.argv[0] = 'mlx.launch'; sys.exit(main())",
]


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _run(script, *args, cwd, env=None, launch=None, timeout=600):
    command = [sys.executable, str(EXAMPLES / script), *map(str, args)]
    if launch:
        command = [*LAUNCH, *launch, *command]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    return done.stdout


def _percent(pattern, text):
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in output:\n{text}"
    return float(match.group(1))


def _digits_accuracy(model, mean, std) -> float:
    """Test accuracy on the digits, computed here with NumPy from the model's logits."""
    test = Digits(train=False)
    images = (test.images.astype(np.float32) / 255 - np.array(mean)) / np.array(std)
    logits = np.array(model(mx.array(images.astype(np.float32))))
    return float(np.mean(logits.argmax(axis=-1) == test.labels))


def test_cifar10_workflow_on_the_digits(tmp_path):
    out = _run("cifar10_workflow.py", "--epochs", "2", "--steps", "6", "--out", "wf", cwd=tmp_path)
    assert "Data: 384 training and 360 test images of 8×8×1 (digits, 10 classes)" in out
    assert len(re.findall(r"Epoch \[\d/2\], Loss: [0-9.]+, Accuracy: [0-9.]+%", out)) == 2
    accuracy = _percent(r"Test Accuracy: ([0-9.]+)%", out)
    assert accuracy > 25.0  # 12 steps from chance (10%)
    assert f"reloaded accuracy {accuracy:.2f}%" in out
    path = tmp_path / "wf" / "digits_cnn.safetensors"
    model = mv.load(path)
    meta = mv.checkpoint.read_metadata(path)["metadata"]
    assert meta["classes"] == [str(d) for d in range(10)] and meta["input_shape"] == [8, 8, 1]
    assert round(100 * _digits_accuracy(model, meta["mean"], meta["std"]), 2) == accuracy
    true = re.search(r"True: +(.*)", out).group(1).split()
    assert true == [str(label) for label in Digits(train=False).labels[:8]]
    if _has("coremltools"):
        assert (tmp_path / "wf" / "DigitsClassifier.mlpackage" / "Manifest.json").is_file()


@pytest.mark.realdata
def test_cifar10_workflow_on_cifar10(tmp_path, data_root):
    out = _run(
        "cifar10_workflow.py",
        *("--data", data_root / "cifar10-jpeg", "--epochs", "1", "--steps", "2"),
        *("--test-images", "64", "--out", "wf"),
        cwd=tmp_path,
        env={"MLXVISION_CACHE": str(tmp_path / "cache")},
    )
    assert "Data: 128 training and 64 test images of 32×32×3 (cifar10, 10 classes)" in out
    assert re.search(r"^ +airplane: [0-9.]+%$", out, flags=re.M)
    accuracy = _percent(r"Test Accuracy: ([0-9.]+)%", out)
    assert f"reloaded accuracy {accuracy:.2f}%" in out
    assert mv.load(tmp_path / "wf" / "cifar10_cnn.safetensors").num_classes == 10


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_imagefolder_training_makes_and_reads_a_png_folder(tmp_path):
    out = _run(
        "imagefolder_training.py",
        *("--epochs", "1", "--per-class", "8", "--image-size", "8", "--out", "if"),
        cwd=tmp_path,
    )
    root = tmp_path / "if" / "pngs"
    classes = sorted(p.name for p in (root / "train").iterdir())
    assert len(classes) == 10 and all(
        len(list((root / "train" / c).glob("*.png"))) == 8 for c in classes
    )
    sizes = {_png_size(p) for p in (root / "train").glob("*/*.png")}
    assert len(sizes) > 1  # images of several sizes, resized by ImageFolder
    assert "Data: 80 training and 20 test images of 8×8" in out
    _percent(r"Test Accuracy: ([0-9.]+)%", out)
    path = tmp_path / "if" / "imagefolder_cnn.safetensors"
    assert mv.checkpoint.read_metadata(path)["metadata"]["classes"] == classes
    assert mv.load(path)(mx.zeros((1, 8, 8, 3))).shape == (1, 10)


def test_finetune_keeps_the_frozen_backbone_bit_identical(tmp_path):
    out = _run(
        "finetune.py",
        *("--epochs", "1", "--head-epochs", "1", "--unfreeze-epochs", "0", "--steps", "3"),
        *("--out", "ft"),
        cwd=tmp_path,
    )
    _percent(r"Task A \(digits classes 0, 1, 2, 3, 4\): test accuracy ([0-9.]+)%", out)
    _percent(
        r"Task B \(digits classes 5, 6, 7, 8, 9\), frozen backbone: test accuracy ([0-9.]+)%", out
    )
    assert "Frozen backbone weights bit-identical after training: True" in out
    backbone = mv.load(tmp_path / "ft" / "backbone.safetensors")
    tuned = mv.load(tmp_path / "ft" / "finetuned.safetensors")
    assert (backbone.num_classes, tuned.num_classes) == (5, 5)
    old, new = dict(tree_flatten(backbone.parameters())), dict(tree_flatten(tuned.parameters()))
    for name in old:
        same = np.array_equal(np.array(old[name]), np.array(new[name]))
        assert same == (not name.startswith("fc2.")), name  # only the new head differs


def test_export_ios_writes_files_that_agree(tmp_path):
    out = _run(
        "export_ios.py",
        *("--epochs", "1", "--steps", "2", "--check-images", "20", "--out", "ex"),
        cwd=tmp_path,
    )
    folder = tmp_path / "ex"
    assert "the imported function agrees with MLX on 20 of 20 test images" in out
    x = np.random.default_rng(0).standard_normal((1, 8, 8, 1)).astype(np.float32)
    (from_mlxfn,) = mx.import_function(str(folder / "model.mlxfn"))(mx.array(x))
    assert from_mlxfn.shape == (1, 10)
    if _has("onnxruntime"):
        import onnxruntime as ort

        assert "onnxruntime agrees with MLX on 20 of 20 test images" in out
        session = ort.InferenceSession(str(folder / "model.onnx"))
        (from_onnx,) = session.run(None, {"images": x.transpose(0, 3, 1, 2)})
        np.testing.assert_allclose(from_onnx, np.array(from_mlxfn), rtol=1e-4, atol=1e-4)
    if _has("coremltools"):
        for name in ("DigitsClassifier.mlpackage", "DigitsTensor.mlpackage"):
            assert (folder / name / "Manifest.json").is_file()


def test_distributed_training_alone_and_on_two_processes(tmp_path):
    args = ("--epochs", "1", "--steps", "2")
    alone = _run("distributed_training.py", *args, "--out", "one", cwd=tmp_path)
    assert "1 process(es): global batch 128 = 1 × 128, 2 steps per epoch" in alone
    two = _run(
        "distributed_training.py",
        *args,
        *("--out", "two"),
        cwd=tmp_path,
        launch=["-n", "2", "--backend", "ring"],
        timeout=300,
    )
    assert "2 process(es): global batch 128 = 2 × 64, 2 steps per epoch" in two
    assert "rank 0 of 2 done" in two and "rank 1 of 2 done" in two
    assert two.count("Test Accuracy:") == 1  # only rank 0 prints
    for run in ("one", "two"):
        model = mv.load(tmp_path / run / "model.safetensors")
        assert model(mx.zeros((1, 8, 8, 1))).shape == (1, 10)


@pytest.mark.skipif(not _has("optuna"), reason="needs optuna (mlxvision[tune])")
def test_hyperparameter_search(tmp_path):
    out = _run(
        "hyperparameter_search.py", "--trials", "2", "--epochs", "1", "--out", "hp", cwd=tmp_path
    )
    summary = json.loads((tmp_path / "hp" / "tune.json").read_text())
    assert len(summary["trials"]) == 2
    best = summary["best"]
    assert f"validation accuracy {100 * best['value']:.2f}%" in out
    assert "Best settings: get_recipe('digits').replace(" in out
    result = json.loads(
        (tmp_path / "hp" / f"trial-{best['trial']:03d}" / "result.json").read_text()
    )
    assert result["val_accuracy"] == best["value"]
