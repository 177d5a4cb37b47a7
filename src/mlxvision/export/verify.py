"""Check an exported file against MLX on random inputs.

:func:`verify` runs ``.onnx`` files in onnxruntime, ``.mlxfn`` files with
``mx.import_function`` and ``.mlpackage`` files with Core ML (macOS only), and compares their
outputs with the MLX model's. The relative error is the largest absolute error divided by the
largest absolute reference value.

Example:
    >>> import tempfile
    >>> from mlxvision import create_model
    >>> from mlxvision.export import export_mlxfn
    >>> model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8).eval()
    >>> path = export_mlxfn(model, tempfile.mkdtemp() + "/cnn", (1, 8, 8, 1))
    >>> result = verify(model, path, (1, 8, 8, 1))
    >>> result.ran, result.max_rel_error < 1e-5
    (True, True)
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

DEFAULT_RTOL = 1e-4


@dataclass(frozen=True)
class VerifyResult:
    """How closely an exported file reproduces MLX (``ran`` is False where no runtime exists).

    Example:
        >>> import tempfile
        >>> from mlxvision import create_model
        >>> from mlxvision.export import export_mlxfn
        >>> model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8).eval()
        >>> path = export_mlxfn(model, tempfile.mkdtemp() + "/cnn", (1, 8, 8, 1))
        >>> result = verify(model, path, (1, 8, 8, 1))
        >>> result.runtime, result.ran, result.passed(rtol=1e-4)
        ('mlx.import_function', True, True)
        >>> skipped = VerifyResult("m.mlpackage", "coreml", ran=False, reason="needs macOS")
        >>> skipped.passed()
        False
    """

    path: str
    runtime: str
    ran: bool
    max_abs_error: float = float("nan")
    max_rel_error: float = float("nan")
    reason: str = ""

    def passed(self, rtol: float = DEFAULT_RTOL) -> bool:
        """True when the file ran and its relative error is at most ``rtol``."""
        return self.ran and self.max_rel_error <= rtol


class ExportMismatchError(RuntimeError):
    """The exported model's outputs differ from MLX's beyond the tolerance.

    Exporters raise it before writing anything; :func:`verify` raises it when the file's
    output does not even have the model's shape.

    Example:
        >>> import tempfile
        >>> from mlxvision import create_model
        >>> from mlxvision.export import export_mlxfn
        >>> ten = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8).eval()
        >>> path = export_mlxfn(ten, tempfile.mkdtemp() + "/cnn", (1, 8, 8, 1))
        >>> five = create_model("simple_cnn", num_classes=5, in_channels=1, input_size=8)
        >>> verify(five, path, (1, 8, 8, 1))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mlxvision.export.verify.ExportMismatchError: exported output has shape (1, 10), MLX ...
    """


def errors(result: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(max absolute error, max absolute error / max |reference|).

    Example:
        >>> errors(np.array([1.0, 2.1]), np.array([1.0, 2.0]))
        (0.10000000000000009, 0.050000000000000044)
    """
    result = np.asarray(result, np.float64)
    reference = np.asarray(reference, np.float64)
    if result.shape != reference.shape:
        raise ExportMismatchError(
            f"exported output has shape {result.shape}, MLX gives {reference.shape}"
        )
    abs_err = float(np.max(np.abs(result - reference))) if result.size else 0.0
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return abs_err, abs_err / scale if scale > 0 else abs_err


def random_inputs(shape: Sequence[int], trials: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(shape)).astype(np.float32) for _ in range(trials)]


def mlx_reference(model: nn.Module | Callable[[mx.array], mx.array], x: np.ndarray) -> np.ndarray:
    out = model(mx.array(x))
    return np.array(out.astype(mx.float32))


def to_channels_first(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x


def _compare(
    model: Any,
    run: Callable[[np.ndarray], np.ndarray],
    shape: Sequence[int],
    trials: int,
    seed: int,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[float, float]:
    worst_abs, worst_rel = 0.0, 0.0
    for x in random_inputs(shape, trials, seed):
        reference = mlx_reference(model, x)
        if transform is not None:
            reference = transform(reference)
        abs_err, rel_err = errors(run(x), reference)
        worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
    return worst_abs, worst_rel


def _onnx_runner(source: str | bytes) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: to_channels_first(x)})[0]


def compare_onnx_bytes(
    model: Any, data: bytes, shape: Sequence[int], rtol: float = DEFAULT_RTOL
) -> float | None:
    """Run serialized ONNX in onnxruntime (when installed); raise if it differs from MLX."""
    try:
        run = _onnx_runner(data)
    except ImportError:
        return None
    _, rel = _compare(model, run, shape, trials=1, seed=0)
    if not rel <= rtol:
        raise ExportMismatchError(
            f"export_onnx: onnxruntime differs from MLX by {rel:.3g} (relative), more than "
            f"{rtol:g}; nothing was written"
        )
    return rel


def verify(
    model: nn.Module | Callable[[mx.array], mx.array],
    path: str | os.PathLike,
    input_shape: Sequence[int],
    *,
    trials: int = 2,
    seed: int = 0,
    softmax_output: bool | None = None,
) -> VerifyResult:
    """Run the exported file at ``path`` and compare it with ``model`` on random inputs.

    ``input_shape`` is the MLX (NHWC) shape; ONNX and Core ML files receive the same images
    as NCHW. ``softmax_output`` compares with the softmax of the model's logits (Core ML
    classifiers output probabilities); by default it is read from the Core ML file.
    Returns a :class:`VerifyResult` (``ran=False`` with a reason where no runtime exists).

    Example:
        >>> verify(model, "model.onnx", (1, 32, 32, 3)).max_rel_error  # doctest: +SKIP
        3.1e-07
    """
    path = Path(path)
    shape = tuple(int(s) for s in input_shape)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such exported model")
    if isinstance(model, nn.Module):
        model.eval()
    suffix = path.suffix
    if suffix == ".onnx":
        try:
            run = _onnx_runner(str(path))
        except ImportError:
            return VerifyResult(str(path), "onnxruntime", False, reason="onnxruntime missing")
        abs_err, rel_err = _compare(model, run, shape, trials, seed)
        return VerifyResult(str(path), "onnxruntime", True, abs_err, rel_err)
    if suffix == ".mlxfn":
        imported = mx.import_function(str(path))

        def run_mlxfn(x: np.ndarray) -> np.ndarray:
            return np.array(imported(mx.array(x))[0])

        abs_err, rel_err = _compare(model, run_mlxfn, shape, trials, seed)
        return VerifyResult(str(path), "mlx.import_function", True, abs_err, rel_err)
    if suffix == ".mlpackage":
        return _verify_coreml(model, path, shape, trials, seed, softmax_output)
    raise ValueError(f"{path}: expected a .onnx, .mlxfn or .mlpackage file")


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _verify_coreml(
    model: Any,
    path: Path,
    shape: tuple[int, ...],
    trials: int,
    seed: int,
    softmax_output: bool | None,
) -> VerifyResult:
    if platform.system() != "Darwin":
        return VerifyResult(str(path), "coreml", False, reason="Core ML runs only on macOS")
    import coremltools as ct

    mlmodel = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
    spec = mlmodel.get_spec()
    if spec.description.input[0].type.WhichOneof("Type") != "multiArrayType":
        return VerifyResult(str(path), "coreml", False, reason="image inputs are not verified")
    input_name = spec.description.input[0].name
    classifier = spec.description.predictedProbabilitiesName
    if softmax_output is None:
        softmax_output = bool(classifier)
    output_name = classifier or spec.description.output[0].name

    def run(x: np.ndarray) -> np.ndarray:
        outputs = mlmodel.predict({input_name: to_channels_first(x)})
        out = outputs[output_name]
        if isinstance(out, dict):
            labels = list(out)
            return np.array([[out[k] for k in labels]])
        return np.asarray(out)

    abs_err, rel_err = _compare(
        model, run, shape, trials, seed, _softmax if softmax_output else None
    )
    return VerifyResult(str(path), "coreml", True, abs_err, rel_err)
