"""Export: trained models to files that run without mlxvision.

``.mlxfn`` files come straight from MLX. ONNX and Core ML files are built from a trace of the
model's MLX primitives (:func:`trace`), so a user's own ``mlx.nn`` model exports too; they take
NCHW images (MLX models take NHWC). :func:`verify` compares an exported file with MLX.

Example:
    >>> from mlxvision.export import export_coreml, export_mlxfn, export_onnx, trace, verify
"""

from .coreml import export_coreml
from .ir import Graph
from .mlxfn import export_mlxfn, load_mlxfn, read_mlxfn_metadata
from .onnx import export_onnx
from .trace import (
    SUPPORTED_PRIMITIVES,
    TrainingModeError,
    UnsupportedPrimitiveError,
    check_eval_mode,
    trace,
)
from .verify import ExportMismatchError, VerifyResult, verify

__all__ = [
    "SUPPORTED_PRIMITIVES",
    "ExportMismatchError",
    "Graph",
    "TrainingModeError",
    "UnsupportedPrimitiveError",
    "VerifyResult",
    "check_eval_mode",
    "export_coreml",
    "export_mlxfn",
    "export_onnx",
    "load_mlxfn",
    "read_mlxfn_metadata",
    "trace",
    "verify",
]
