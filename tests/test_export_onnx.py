"""export_onnx: ONNX files that onnxruntime runs like MLX."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import mlxvision
from export_models import Sorter, mixed_net
from mlxvision.export import (
    TrainingModeError,
    UnsupportedPrimitiveError,
    export_onnx,
    verify,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _run(path, x_nhwc):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x_nhwc.transpose(0, 3, 1, 2).copy()})[0]


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_simple_cnn_matches_mlx_with_dynamic_batch(tmp_path):
    mx.random.seed(3)
    model = mlxvision.create_model("simple_cnn", num_classes=10, in_channels=3, input_size=32)
    path = export_onnx(model.eval(), tmp_path / "cnn.onnx", (1, 32, 32, 3))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    x = np.random.default_rng(0).standard_normal((3, 32, 32, 3)).astype(np.float32)
    assert _rel(_run(path, x), np.array(model(mx.array(x)))) < 1e-4


def test_mixed_model_matches_mlx(tmp_path):
    model = mixed_net()
    path = export_onnx(model, tmp_path / "mixed.onnx", (2, 16, 16, 3), opset=18)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Conv", "MaxPool", "Concat", "Erf", "Gemm"} <= ops
    assert "BatchNormalization" not in ops and "Transpose" not in ops
    x = np.random.default_rng(1).standard_normal((5, 16, 16, 3)).astype(np.float32)
    assert _rel(_run(path, x), np.array(model(mx.array(x)))) < 1e-4
    result = verify(model, path, (2, 16, 16, 3))
    assert result.ran and result.passed() and result.max_rel_error < 1e-4


def test_unsupported_primitive_writes_nothing(tmp_path):
    with pytest.raises(UnsupportedPrimitiveError, match="Sort"):
        export_onnx(Sorter().eval(), tmp_path / "sort.onnx", (1, 8, 8, 3))
    assert list(tmp_path.iterdir()) == []


def test_training_mode_writes_nothing(tmp_path):
    with pytest.raises(TrainingModeError, match="training mode"):
        export_onnx(mixed_net().train(), tmp_path / "m.onnx", (1, 16, 16, 3))
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    model = mixed_net()
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_onnx(model, tmp_path / "m.bin", (1, 16, 16, 3))
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", (1, 16, 16, 3), opset=9)
    assert list(tmp_path.iterdir()) == []


ZOO = [
    ("resnet20", {}, 32),
    ("preact_resnet18", {}, 32),
    ("mobilenet_v3_small", {}, 64),
    ("efficientnet_b0", {}, 64),
    ("convnext_tiny", {}, 32),
    ("vit_tiny", {"img_size": 32, "patch_size": 8}, 32),
]


@pytest.mark.parametrize(("name", "kwargs", "size"), ZOO, ids=[z[0] for z in ZOO])
def test_zoo_models_export(name, kwargs, size, tmp_path):
    if name not in mlxvision.list_models():
        pytest.skip(f"{name} is not registered")
    mx.random.seed(5)
    model = mlxvision.create_model(name, num_classes=10, **kwargs).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx", (1, size, size, 3), check=False)
    result = verify(model, path, (2, size, size, 3), trials=1)
    assert result.max_rel_error < 1e-4, result
