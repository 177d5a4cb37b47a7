"""Every registered model exports to ONNX, Core ML and .mlxfn, and the files compute what MLX does.

The list of models is read from the registry when the tests are collected, so a new model is
covered as soon as it is registered. Each model is built small (``SMALL``: the same architecture
with fewer pixels or narrower optional widths), with random weights and random BatchNorm
statistics and affine parameters (so folding BatchNorm into convolutions is really checked),
exported from a batch of 1 and compared with MLX on a batch of 3:

- ONNX in onnxruntime, within 1e-4 relative error (float32);
- Core ML by reading the saved ``.mlpackage`` back and evaluating its MIL program with the
  NumPy interpreter in ``mil_interpreter.py`` (Core ML itself runs only on macOS), within 1e-4;
- ``.mlxfn`` with ``mx.import_function``, within 1e-6. A shapeless export (any batch size) is
  tried first; where MLX cannot run the model shapeless (``SHAPELESS_REFUSED``: every zoo model
  with MLX 0.32) the export must refuse with a clear error and write nothing, and a fixed-shape
  export, compared at its own batch size, must work.

The relative error is the largest absolute error over the largest absolute MLX output.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlxvision
from mlxvision.export import export_coreml, export_mlxfn, export_onnx

EXPORT_BATCH, CHECK_BATCH = 1, 3
FORMATS = ("onnx", "coreml", "mlxfn")
# constructor options and image size: the registered architecture, made small where it allows
SMALL: dict[str, tuple[dict[str, Any], int]] = {
    "simple_cnn": ({"input_size": 8}, 8),
    "airbench_net": ({"widths": (16, 32, 32)}, 16),
    "resnet20": ({}, 16),
    "resnet32": ({}, 16),
    "resnet44": ({}, 16),
    "resnet56": ({}, 16),
    "resnet110": ({}, 16),
    "preact_resnet18": ({}, 16),
    "wide_resnet28_10": ({}, 8),
    "vgg11_bn": ({"hidden": 16}, 32),
    "vgg13_bn": ({"hidden": 16}, 32),
    "vgg16_bn": ({"hidden": 16}, 32),
    "vgg19_bn": ({"hidden": 16}, 32),
    "vit_tiny": ({"img_size": 32, "patch_size": 8}, 32),
    "vit_small": ({"img_size": 32, "patch_size": 8}, 32),
}
DEFAULT_SMALL: tuple[dict[str, Any], int] = ({}, 32)
# models MLX 0.32 cannot run as shapeless (any batch size) functions at these sizes: nn.Linear
# with a bias broadcasts it to a shape that holds the batch size, and a global pool of a 1×1
# feature map reduces over axes of size 1, which MLX cannot evaluate shapeless
SHAPELESS_REFUSED = frozenset(
    {
        "airbench_net",
        "convnext_tiny",
        "efficientnet_b0",
        "mobilenet_v2",
        "mobilenet_v3_large",
        "mobilenet_v3_small",
        "preact_resnet18",
        "resnet101",
        "resnet110",
        "resnet152",
        "resnet18",
        "resnet20",
        "resnet32",
        "resnet34",
        "resnet44",
        "resnet50",
        "resnet56",
        "simple_cnn",
        "vgg11_bn",
        "vgg13_bn",
        "vgg16_bn",
        "vgg19_bn",
        "vit_small",
        "vit_tiny",
        "wide_resnet28_10",
    }
)
CASES = [(name, fmt) for name in mlxvision.list_models() for fmt in FORMATS]


def relative_error(result: np.ndarray, reference: np.ndarray) -> float:
    result, reference = np.asarray(result, np.float64), np.asarray(reference, np.float64)
    assert result.shape == reference.shape
    assert np.all(np.isfinite(reference)), "the MLX reference output is not finite"
    return float(np.abs(result - reference).max() / np.abs(reference).max())


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affine parameters, LayerNorm affine parameters and
    ConvNeXt layer scales, so that none of them is the identity an export could ignore."""
    rng = np.random.default_rng(seed)

    def draw(like: mx.array, low: float, high: float) -> mx.array:
        return mx.array(rng.uniform(low, high, like.shape).astype(np.float32))

    for _, module in model.named_modules():
        if isinstance(module, nn.BatchNorm):
            module.running_mean = draw(module.running_mean, -0.5, 0.5)
            module.running_var = draw(module.running_var, 0.5, 2.0)
        if isinstance(module, nn.BatchNorm | nn.LayerNorm) and "weight" in module:
            module.weight = draw(module.weight, 0.5, 1.5)
            module.bias = draw(module.bias, -0.5, 0.5)
        if "layer_scale" in module:
            module.layer_scale = draw(module.layer_scale, 0.2, 0.5)
    mx.eval(model.parameters())
    return model.eval()


@functools.lru_cache(maxsize=1)
def small_model(name: str) -> tuple[nn.Module, int]:
    """The model ``name`` (built once for its three formats), and its image size."""
    kwargs, size = SMALL.get(name, DEFAULT_SMALL)
    mx.random.seed(0)
    model = mlxvision.create_model(name, num_classes=10, **kwargs)
    return randomize(model, seed=len(name)), size


def images(size: int, batch: int = CHECK_BATCH) -> np.ndarray:
    return np.random.default_rng(size).standard_normal((batch, size, size, 3)).astype(np.float32)


def check_onnx(model: nn.Module, size: int, tmp_path: Path) -> float:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = export_onnx(model, tmp_path / "model.onnx", (EXPORT_BATCH, size, size, 3), check=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = images(size)
    (out,) = session.run(None, {"images": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})
    return relative_error(out, np.array(model(mx.array(x))))


def check_coreml(model: nn.Module, size: int, tmp_path: Path) -> float:
    ct = pytest.importorskip("coremltools")
    from mil_interpreter import MILInterpreter

    path = export_coreml(model, tmp_path / "model.mlpackage", (EXPORT_BATCH, size, size, 3))
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    batch = spec.description.input[0].type.multiArrayType.shapeRange.sizeRanges[0]
    accepted = batch.lowerBound <= CHECK_BATCH and batch.upperBound in (-1, *range(CHECK_BATCH, 65))
    assert accepted, f"the Core ML input takes batches of {batch.lowerBound}..{batch.upperBound}"
    x = images(size)
    out = MILInterpreter(path)(images=np.ascontiguousarray(x.transpose(0, 3, 1, 2)))["logits"]
    return relative_error(out, np.array(model(mx.array(x))))


def check_mlxfn(name: str, model: nn.Module, size: int, tmp_path: Path) -> float:
    example = (EXPORT_BATCH, size, size, 3)
    x = images(size)
    if name not in SHAPELESS_REFUSED:
        path = export_mlxfn(model, tmp_path / "any_batch", example, shapeless=True)
    else:
        with pytest.raises(ValueError, match=r"shapeless export of \w+ does not work: \w"):
            export_mlxfn(model, tmp_path / "any_batch", example, shapeless=True)
        assert list(tmp_path.iterdir()) == [], "a refused export left a file behind"
        # a fixed-shape function runs at the batch size it was exported for, and only there
        path = export_mlxfn(model, tmp_path / "fixed", x.shape)
        with pytest.raises(ValueError, match="No imported function found"):
            mx.import_function(str(path))(mx.zeros(example))
    (out,) = mx.import_function(str(path))(mx.array(x))
    return relative_error(np.array(out), np.array(model(mx.array(x))))


@pytest.mark.parametrize(("name", "fmt"), CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_zoo_model_exports_and_matches_mlx(name: str, fmt: str, tmp_path: Path) -> None:
    model, size = small_model(name)
    if fmt == "onnx":
        error, tolerance = check_onnx(model, size, tmp_path), 1e-4
    elif fmt == "coreml":
        error, tolerance = check_coreml(model, size, tmp_path), 1e-4
    else:
        # the exported function computes MLX's own layers; the live model's CPU SiLU
        # (mlxvision.ops.silu) differs from MLX's by up to 2e-5 per activation
        error, tolerance = check_mlxfn(name, model, size, tmp_path), 1e-5
    print(f"{name} {fmt} relative error {error:.2e}")
    assert error <= tolerance, f"{name} as {fmt}: relative error {error:.3g}"


def test_every_table_entry_names_a_registered_model() -> None:
    registered = set(mlxvision.list_models())
    assert set(SMALL) <= registered
    assert set(SHAPELESS_REFUSED) <= registered
