"""Export a model to ONNX from its traced graph (needs the ``onnx`` package).

The exported model takes **NCHW** float32 images (``images``, shape ``(N, C, H, W)``; MLX
models take NHWC) and returns ``logits``. The batch dimension is dynamic when the model allows
it. Weights are stored as OIHW initializers; BatchNorm is folded into the convolutions.

Example:
    >>> import tempfile, onnxruntime as ort, numpy as np
    >>> from mlxvision import create_model
    >>> model = create_model("simple_cnn", num_classes=10, in_channels=3, input_size=8).eval()
    >>> path = export_onnx(model, tempfile.mkdtemp() + "/cnn.onnx", (1, 8, 8, 3))
    >>> session = ort.InferenceSession(str(path))
    >>> session.run(None, {"images": np.zeros((4, 3, 8, 8), np.float32)})[0].shape
    (4, 10)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .._files import atomic_path
from .._version import __version__
from .ir import Graph, Node
from .layout import to_channels_first
from .trace import trace

DEFAULT_OPSET = 21
MIN_OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "logits"

_UNARY = {
    "abs": "Abs",
    "neg": "Neg",
    "exp": "Exp",
    "log": "Log",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "erf": "Erf",
    "sqrt": "Sqrt",
    "relu": "Relu",
    "identity": "Identity",
}
_BINARY = {
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "max": "Max",
    "min": "Min",
    "pow": "Pow",
}
_REDUCE = {
    "sum": "ReduceSum",
    "mean": "ReduceMean",
    "max": "ReduceMax",
    "min": "ReduceMin",
    "prod": "ReduceProd",
    "logsumexp": "ReduceLogSumExp",
}


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "export_onnx needs the onnx package: pip install 'mlxvision[onnx]'"
        ) from None
    return onnx


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: Sequence[int],
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    check: bool = True,
) -> Path:
    """Write ``model`` (in eval mode) as an ONNX file taking NCHW images; returns the path.

    ``input_shape`` is the MLX (NHWC) example shape, e.g. ``(1, 32, 32, 3)``; the ONNX input is
    ``images`` of shape ``(N, C, H, W)`` and the output ``logits``. With ``check=True`` and
    onnxruntime installed, the file is run on random inputs and compared with MLX before it is
    written (see :func:`~mlxvision.export.verify.verify`).

    Example:
        >>> export_onnx(model, "model.onnx", (1, 32, 32, 3))  # doctest: +SKIP
        PosixPath('model.onnx')
    """
    onnx = _onnx()
    max_opset = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= max_opset:
        raise ValueError(f"opset: expected {MIN_OPSET}..{max_opset}, got {opset}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"path: expected a file name ending in .onnx, got {path}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape: expected positive sizes like (1, 32, 32, 3), got {shape}")
    graph = to_channels_first(trace(model, mx.zeros(shape), dynamic_batch=dynamic_batch))
    proto = graph_to_onnx(graph, opset=opset, name=type(model).__name__)
    data = proto.SerializeToString()  # once: large models take seconds to serialize
    onnx.checker.check_model(data, full_check=True)
    if check:
        from .verify import compare_onnx_bytes

        compare_onnx_bytes(model, data, shape)
    with atomic_path(path, suffix=".onnx") as tmp:
        tmp.write_bytes(data)
    return path


def graph_to_onnx(graph: Graph, *, opset: int = DEFAULT_OPSET, name: str = "mlxvision") -> Any:
    """An ``onnx.ModelProto`` computing a channels-first graph (see :mod:`.layout`)."""
    onnx = _onnx()
    return _Builder(onnx, graph, opset).build(name)


class _Builder:
    def __init__(self, onnx: Any, graph: Graph, opset: int) -> None:
        self.onnx, self.h, self.graph, self.opset = onnx, onnx.helper, graph, opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.names = {graph.inputs[0]: INPUT_NAME} if len(graph.inputs) == 1 else {}
        if len(graph.outputs) == 1:
            self.names[graph.outputs[0]] = OUTPUT_NAME
        self.count = 0

    def name(self, value: str) -> str:
        return self.names.get(value, value)

    def const(self, array: np.ndarray, stem: str = "c") -> str:
        self.count += 1
        name = f"{stem}_{self.count}"
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None:
        self.count += 1
        self.nodes.append(self.h.make_node(op, inputs, outputs, name=f"{op}_{self.count}", **attrs))

    def value_info(self, value: str) -> Any:
        v = self.graph.values[value]
        dims = ["batch" if d else s for s, d in zip(v.shape, v.dyn, strict=True)]
        elem = self.h.np_dtype_to_tensor_dtype(np.dtype(v.dtype))
        return self.h.make_tensor_value_info(self.name(value), elem, dims)

    def build(self, model_name: str) -> Any:
        for name, array in self.graph.constants.items():
            self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        for node in self.graph.nodes:
            self.emit(node)
        onnx_graph = self.h.make_graph(
            self.nodes,
            model_name,
            [self.value_info(i) for i in self.graph.inputs],
            [self.value_info(o) for o in self.graph.outputs],
            self.initializers,
        )
        opsets = [self.h.make_opsetid("", self.opset)]
        return self.h.make_model(
            onnx_graph,
            opset_imports=opsets,
            producer_name="mlxvision",
            producer_version=__version__,
            ir_version=self.h.find_min_ir_version_for(opsets),
        )

    def batch_dim(self) -> str:
        if "__batch" not in self.names:
            self.names["__batch"] = "batch_size"
            self.node("Shape", [self.name(self.graph.inputs[0])], ["batch_size"], start=0, end=1)
        return self.names["__batch"]

    def emit(self, node: Node) -> None:
        op, a = node.op, node.attrs
        ins = [self.name(i) for i in node.inputs]
        out = self.name(node.outputs[0])
        value = self.graph.values[node.outputs[0]]
        if op in _UNARY:
            self.node(_UNARY[op], ins, [out])
        elif op in _BINARY:
            self.node(_BINARY[op], ins, [out])
        elif op == "rsqrt":
            root = out + "_sqrt"
            self.node("Sqrt", ins, [root])
            self.node("Reciprocal", [root], [out])
        elif op == "square":
            self.node("Mul", [ins[0], ins[0]], [out])
        elif op == "reduce":
            axes = self.const(np.array(a["axes"], np.int64), "axes")
            self.node(_REDUCE[a["kind"]], [ins[0], axes], [out], keepdims=int(a["keepdims"]))
        elif op == "softmax":
            self.node("Softmax", ins, [out], axis=a["axis"])
        elif op == "matmul":
            self.node("MatMul", ins, [out])
        elif op == "linear":
            if len(ins) == 3 and len(self.graph.values[node.inputs[0]].shape) == 2:
                self.node("Gemm", ins, [out])
            elif len(ins) == 3:
                self.node("MatMul", ins[:2], [out + "_mm"])
                self.node("Add", [out + "_mm", ins[2]], [out])
            else:
                self.node("MatMul", ins, [out])
        elif op == "conv":
            kernel = list(self.graph.constants[node.inputs[1]].shape[2:])
            self.node(
                "Conv",
                ins,
                [out],
                kernel_shape=kernel,
                strides=list(a["strides"]),
                pads=[*a["pads_begin"], *a["pads_end"]],
                dilations=list(a["dilations"]),
                group=a["groups"],
            )
        elif op == "pool":
            attrs = {
                "kernel_shape": list(a["kernel"]),
                "strides": list(a["strides"]),
                "pads": [*a["pads_begin"], *a["pads_end"]],
            }
            if a["kind"] == "max":
                self.node("MaxPool", ins, [out], **attrs)
            else:
                self.node("AveragePool", ins, [out], count_include_pad=1, **attrs)
        elif op == "upsample":
            scales = self.const(np.array([1, 1, *a["scales"]], np.float32), "scales")
            self.node(
                "Resize",
                [ins[0], "", scales],
                [out],
                mode="nearest",
                coordinate_transformation_mode="asymmetric",
                nearest_mode="floor",
            )
        elif op == "reshape":
            shape = [-1 if d else s for s, d in zip(value.shape, value.dyn, strict=True)]
            self.node("Reshape", [ins[0], self.const(np.array(shape, np.int64), "shape")], [out])
        elif op == "transpose":
            self.node("Transpose", ins, [out], perm=list(a["perm"]))
        elif op == "concat":
            self.node("Concat", ins, [out], axis=a["axis"])
        elif op == "slice":
            src = self.graph.values[node.inputs[0]]
            end = [
                np.iinfo(np.int64).max if d else e for e, d in zip(a["end"], src.dyn, strict=True)
            ]
            parts = [
                np.array(p, np.int64) for p in (a["begin"], end, range(len(end)), a["strides"])
            ]
            self.node("Slice", [ins[0], *[self.const(p, "slice") for p in parts]], [out])
        elif op == "pad":
            pads = self.const(np.array([*a["pads_begin"], *a["pads_end"]], np.int64), "pads")
            fill = self.const(np.array(a["value"], dtype=value.dtype), "pad_value")
            self.node("Pad", [ins[0], pads, fill], [out], mode="constant")
        elif op == "broadcast":
            static = np.array(
                [1 if d else s for s, d in zip(value.shape, value.dyn, strict=True)], np.int64
            )
            if not any(value.dyn):
                shape = self.const(static, "shape")
            else:
                batch = self.batch_dim()
                parts = []
                for s, d in zip(value.shape, value.dyn, strict=True):
                    parts.append(batch if d else self.const(np.array([s], np.int64), "dim"))
                shape = out + "_shape"
                self.node("Concat", parts, [shape], axis=0)
            self.node("Expand", [ins[0], shape], [out])
        elif op == "cast":
            to = self.h.np_dtype_to_tensor_dtype(np.dtype(a["dtype"]))
            self.node("Cast", ins, [out], to=to)
        else:
            raise ValueError(
                f"export_onnx: the graph op {op!r} (from an MLX pattern that was not recognised) "
                "has no ONNX equivalent"
            )
