"""export_coreml: .mlpackage files, checked with a NumPy interpreter of their MIL program
(Core ML itself runs only on macOS, where the same models are checked with predict)."""

from __future__ import annotations

import platform

import mlx.core as mx
import numpy as np
import pytest

import mlxvision
from export_models import Sorter, mixed_net
from mlxvision.export import TrainingModeError, UnsupportedPrimitiveError, export_coreml, verify

ct = pytest.importorskip("coremltools")
from mil_interpreter import MILInterpreter  # noqa: E402


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def mixed_package(tmp_path_factory):
    model = mixed_net()
    path = tmp_path_factory.mktemp("coreml") / "mixed.mlpackage"
    export_coreml(model, path, (1, 16, 16, 3), metadata={"author": "Ada", "license": "MIT"})
    return model, path


def test_float32_program_matches_mlx(mixed_package):
    model, path = mixed_package
    program = MILInterpreter(path)
    x = np.random.default_rng(0).standard_normal((3, 16, 16, 3)).astype(np.float32)
    out = program(images=x.transpose(0, 3, 1, 2))["logits"]
    assert _rel(out, np.array(model(mx.array(x)))) < 1e-4
    assert {"conv", "max_pool"} <= set(program.op_types())


def test_metadata_and_flexible_batch(mixed_package):
    _, path = mixed_package
    loaded = ct.models.MLModel(str(path), skip_model_load=True)
    assert loaded.author == "Ada" and loaded.license == "MIT"
    assert loaded.user_defined_metadata["mlxvision.version"] == mlxvision.__version__
    array = loaded.get_spec().description.input[0].type.multiArrayType
    assert list(array.shape) == [1, 3, 16, 16]
    assert array.shapeRange.sizeRanges[0].upperBound > 1


def test_image_input_folds_normalization_into_classifier(tmp_path):
    model = mixed_net()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    path = export_coreml(
        model,
        tmp_path / "image.mlpackage",
        (1, 16, 16, 3),
        image_input=True,
        mean=mean,
        std=std,
        class_labels=list("abcde"),
    )
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    assert spec.description.input[0].type.WhichOneof("Type") == "imageType"
    pixels = np.random.default_rng(1).integers(0, 256, (1, 16, 16, 3)).astype(np.float32)
    normalized = (pixels / 255 - np.array(mean)) / np.array(std)
    logits = model(mx.array(normalized.astype(np.float32)))
    expected = np.array(mx.softmax(logits, axis=-1))
    outputs = MILInterpreter(path)(images=pixels.transpose(0, 3, 1, 2))
    probs = outputs[spec.description.predictedProbabilitiesName]
    assert _rel(probs, expected) < 1e-4
    assert outputs["classLabel"] == ["abcde"[int(expected.argmax())]]


def test_float16_is_close(tmp_path):
    mx.random.seed(4)
    model = mlxvision.create_model("simple_cnn", num_classes=10, in_channels=3, input_size=8)
    path = export_coreml(
        model.eval(), tmp_path / "half.mlpackage", (1, 8, 8, 3), precision="float16"
    )
    x = np.random.default_rng(2).standard_normal((2, 8, 8, 3)).astype(np.float32)
    out = MILInterpreter(path)(images=x.transpose(0, 3, 1, 2))["logits"]
    assert _rel(out.astype(np.float32), np.array(model(mx.array(x)))) < 2e-2


@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML predictions need macOS")
def test_predict_on_macos(mixed_package):
    model, path = mixed_package
    result = verify(model, path, (2, 16, 16, 3))
    assert result.ran and result.max_rel_error < 1e-4


def test_failures_leave_no_package(tmp_path):
    with pytest.raises(UnsupportedPrimitiveError, match="Sort"):
        export_coreml(Sorter().eval(), tmp_path / "sort.mlpackage", (1, 8, 8, 3))
    with pytest.raises(TrainingModeError):
        export_coreml(mixed_net().train(), tmp_path / "train.mlpackage", (1, 16, 16, 3))
    with pytest.raises(ValueError, match="class_labels"):
        export_coreml(mixed_net(), tmp_path / "l.mlpackage", (1, 16, 16, 3), class_labels=["a"])
    with pytest.raises(ValueError, match="image_input"):
        export_coreml(mixed_net(), tmp_path / "n.mlpackage", (1, 16, 16, 3), mean=(0, 0, 0))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "kwargs", "size"),
    [
        pytest.param("vit_tiny", {"img_size": 32, "patch_size": 8}, 32, marks=pytest.mark.slow),
        ("mobilenet_v3_small", {}, 32),
    ],
)
def test_zoo_models_in_mil(name, kwargs, size, tmp_path):
    if name not in mlxvision.list_models():
        pytest.skip(f"{name} is not registered")
    mx.random.seed(6)
    model = mlxvision.create_model(name, num_classes=10, **kwargs).eval()
    path = export_coreml(model, tmp_path / f"{name}.mlpackage", (1, size, size, 3))
    x = np.random.default_rng(3).standard_normal((2, size, size, 3)).astype(np.float32)
    out = MILInterpreter(path)(images=x.transpose(0, 3, 1, 2))["logits"]
    assert _rel(out, np.array(model(mx.array(x)))) < 1e-4
