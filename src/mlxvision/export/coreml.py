"""Export a model to Core ML (an ML Program ``.mlpackage``) from its traced graph.

The graph is written with coremltools' MIL builder and converted with ``ct.convert``; it
builds on Linux too (running it needs macOS). The model takes **NCHW** images: a float tensor
``images`` of shape ``(N, C, H, W)`` with a flexible batch size, or, with
``image_input=True``, an RGB (or grayscale) image whose 0–255 pixels are normalized inside
the model exactly as ``(pixel / 255 - mean) / std`` per channel. The output is ``logits``, or
with ``class_labels`` a classifier whose outputs are ``classLabel`` and
``classLabel_probs`` (the softmax of the logits).

Example:
    >>> import tempfile
    >>> from mlxvision import create_model
    >>> model = create_model("simple_cnn", num_classes=10, in_channels=3, input_size=8).eval()
    >>> path = export_coreml(model, tempfile.mkdtemp() + "/cnn.mlpackage", (1, 8, 8, 3))
    >>> path.suffix
    '.mlpackage'
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
from .ir import UNARY, Graph, Node
from .layout import to_channels_first
from .trace import trace

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
PROBABILITIES_NAME = "probabilities"
_UNARY = tuple(op for op in UNARY if op != "neg")  # MIL has no neg: emitted as mul by -1
_BINARY = {
    "add": "add",
    "sub": "sub",
    "mul": "mul",
    "div": "real_div",
    "max": "maximum",
    "min": "minimum",
    "pow": "pow",
}
_REDUCE = {
    "sum": "reduce_sum",
    "mean": "reduce_mean",
    "max": "reduce_max",
    "min": "reduce_min",
    "prod": "reduce_prod",
    "logsumexp": "reduce_log_sum_exp",
}
_DTYPES = {"float32": "fp32", "float16": "fp16", "int32": "int32", "bool": "bool"}


def _coremltools() -> Any:
    try:
        import coremltools as ct
    except ImportError:
        raise ImportError(
            "export_coreml needs coremltools: pip install 'mlxvision[coreml]'"
        ) from None
    return ct


def export_coreml(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: Sequence[int],
    *,
    precision: str = "float32",
    image_input: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_labels: Sequence[str] | None = None,
    metadata: dict[str, str] | None = None,
    minimum_deployment_target: Any = None,
    max_batch: int = 64,
) -> Path:
    """Write ``model`` (in eval mode) as a Core ML ``.mlpackage``; returns the path.

    ``input_shape`` is the MLX (NHWC) example shape, e.g. ``(1, 32, 32, 3)``. ``precision`` is
    ``"float32"`` or ``"float16"`` (compute precision; inputs stay float32). ``mean``/``std``
    (per channel, for images scaled to [0, 1]) need ``image_input=True``. ``metadata`` may hold
    ``author``, ``license``, ``description``, ``version`` and any other keys (stored as
    user-defined metadata). ``minimum_deployment_target`` defaults to ``ct.target.iOS16``.
    The batch size is flexible (1 to ``max_batch``) for tensor inputs when the model allows.
    The package is written atomically: a failed export leaves nothing behind.

    Example:
        >>> export_coreml(model, "cnn.mlpackage", (1, 32, 32, 3),
        ...               image_input=True, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26),
        ...               class_labels=["cat", "dog"])  # doctest: +SKIP
        PosixPath('cnn.mlpackage')
    """
    ct = _coremltools()
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ValueError(f"path: expected a name ending in .mlpackage, got {path}")
    if precision not in ("float32", "float16"):
        raise ValueError(f"precision: expected 'float32' or 'float16', got {precision!r}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or any(s < 1 for s in shape):
        raise ValueError(f"input_shape: expected (N, H, W, C) like (1, 32, 32, 3), got {shape}")
    channels = shape[-1]
    scale, shift = _normalization(image_input, mean, std, channels)
    if image_input:
        shape = (1, *shape[1:])
    target = minimum_deployment_target or ct.target.iOS16
    graph = to_channels_first(trace(model, mx.zeros(shape), dynamic_batch=not image_input))
    if class_labels is not None:
        class_labels = [str(c) for c in class_labels]
        out_shape = graph.values[graph.outputs[0]].shape
        if len(out_shape) != 2 or out_shape[1] != len(class_labels):
            raise ValueError(
                f"class_labels: the model gives {out_shape[-1]} outputs per image, got "
                f"{len(class_labels)} labels"
            )
    program = build_program(
        graph, target, scale=scale, shift=shift, softmax=class_labels is not None
    )
    inputs = [_input_type(ct, graph, image_input, channels, shape, max_batch)]
    convert_args: dict[str, Any] = {}
    if class_labels is not None:
        convert_args["classifier_config"] = ct.ClassifierConfig(
            class_labels, predicted_probabilities_output=PROBABILITIES_NAME
        )
    pipeline = ct.PassPipeline.DEFAULT
    # transposes are already where the layout needs them (see .layout): this pass, the slowest
    # of the pipeline on transformers, finds nothing to remove in these graphs
    pipeline.remove_passes(["common::reduce_transposes"])
    mlmodel = ct.convert(
        program,
        convert_to="mlprogram",
        pass_pipeline=pipeline,
        inputs=inputs,
        minimum_deployment_target=target,
        compute_precision=ct.precision.FLOAT16 if precision == "float16" else ct.precision.FLOAT32,
        skip_model_load=True,
        **convert_args,
    )
    _describe(mlmodel, model, image_input, class_labels, metadata, precision)
    with atomic_path(path, suffix=".mlpackage") as tmp:
        mlmodel.save(str(tmp))
    return path


def _normalization(
    image_input: bool, mean: Sequence[float] | None, std: Sequence[float] | None, channels: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not image_input:
        if mean is not None or std is not None:
            raise ValueError("mean/std: normalization is folded in only with image_input=True")
        return None, None
    if channels not in (1, 3):
        raise ValueError(f"image_input: needs 1 or 3 channels, the input shape has {channels}")
    mean_a = np.zeros(channels) if mean is None else np.asarray(mean, np.float64).reshape(-1)
    std_a = np.ones(channels) if std is None else np.asarray(std, np.float64).reshape(-1)
    for name, values in (("mean", mean_a), ("std", std_a)):
        if values.shape != (channels,):
            raise ValueError(f"{name}: expected {channels} values, got {values.size}")
    if np.any(std_a <= 0):
        raise ValueError(f"std: expected positive values, got {std_a.tolist()}")
    # pixel in [0, 255]: (pixel / 255 - mean) / std = pixel * scale + shift
    scale = (1.0 / (255.0 * std_a)).astype(np.float32).reshape(1, channels, 1, 1)
    shift = (-mean_a / std_a).astype(np.float32).reshape(1, channels, 1, 1)
    return scale, shift


def _input_type(
    ct: Any,
    graph: Graph,
    image_input: bool,
    channels: int,
    shape: tuple[int, ...],
    max_batch: int,
) -> Any:
    n, h, w, c = shape
    if image_input:
        layout = ct.colorlayout.RGB if channels == 3 else ct.colorlayout.GRAYSCALE
        return ct.ImageType(
            name=INPUT_NAME, shape=(1, c, h, w), color_layout=layout, channel_first=True
        )
    if graph.dynamic_batch:
        batch = ct.RangeDim(lower_bound=1, upper_bound=max(max_batch, n), default=n)
        return ct.TensorType(name=INPUT_NAME, shape=ct.Shape((batch, c, h, w)))
    return ct.TensorType(name=INPUT_NAME, shape=(n, c, h, w))


def _describe(
    mlmodel: Any,
    model: nn.Module,
    image_input: bool,
    class_labels: list[str] | None,
    metadata: dict[str, str] | None,
    precision: str,
) -> None:
    meta = dict(metadata or {})
    mlmodel.author = str(meta.pop("author", "mlxvision"))
    mlmodel.license = str(meta.pop("license", ""))
    mlmodel.short_description = str(
        meta.pop("description", f"{type(model).__name__} image classifier exported by mlxvision")
    )
    mlmodel.version = str(meta.pop("version", ""))
    mlmodel.input_description[INPUT_NAME] = (
        "RGB image; pixels are normalized inside the model"
        if image_input
        else "float32 images, NCHW (batch, channels, height, width), normalized as in training"
    )
    if class_labels is None:
        mlmodel.output_description[OUTPUT_NAME] = "class logits (before softmax)"
    else:
        description = mlmodel.get_spec().description
        mlmodel.output_description[description.predictedProbabilitiesName] = (
            "class probabilities (softmax of the logits)"
        )
        mlmodel.output_description[description.predictedFeatureName] = "most likely class"
    user = mlmodel.user_defined_metadata
    user["mlxvision.version"] = __version__
    user["mlxvision.precision"] = precision
    user["mlxvision.input_layout"] = "NCHW"
    spec = getattr(model, "spec", None)
    if spec is not None:
        user["mlxvision.model"] = spec.name
    for key, value in meta.items():
        user[str(key)] = str(value)


def build_program(
    graph: Graph,
    target: Any,
    *,
    scale: np.ndarray | None = None,
    shift: np.ndarray | None = None,
    softmax: bool = False,
) -> Any:
    """A MIL program computing a channels-first graph (see :mod:`.layout`)."""
    ct = _coremltools()
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import get_new_symbol

    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError("export_coreml: expected a model with one input and one output")
    value = graph.values[graph.inputs[0]]
    shape = [get_new_symbol() if d else s for s, d in zip(value.shape, value.dyn, strict=True)]
    del ct

    @mb.program(input_specs=[mb.TensorSpec(shape=tuple(shape))], opset_version=target)
    def program(images: Any) -> Any:
        x = images
        if scale is not None and shift is not None:
            x = mb.mul(x=x, y=scale, name="normalize_scale")
            x = mb.add(x=x, y=shift, name="normalize_shift")
        env: dict[str, Any] = {graph.inputs[0]: x}
        for node in graph.nodes:
            final = node.outputs[0] == graph.outputs[0]
            name = OUTPUT_NAME if final else _safe(node.outputs[0])
            env[node.outputs[0]] = _emit(mb, graph, node, env, name, images)
        out = env[graph.outputs[0]]
        if softmax:
            out = mb.softmax(x=out, axis=-1, name=PROBABILITIES_NAME)
        return out

    return program


def _safe(name: str) -> str:
    return "v_" + "".join(ch if ch.isalnum() else "_" for ch in name)


def _arg(graph: Graph, env: dict[str, Any], name: str) -> Any:
    return env[name] if name in env else graph.constants[name]


def _emit(mb: Any, graph: Graph, node: Node, env: dict[str, Any], name: str, images: Any) -> Any:
    op, a = node.op, node.attrs
    ins = [_arg(graph, env, i) for i in node.inputs]
    out = graph.values[node.outputs[0]]
    x = ins[0]
    if op in _UNARY:
        return getattr(mb, op)(x=x, name=name)
    if op == "neg":
        return mb.mul(x=x, y=np.float32(-1), name=name)
    if op in _BINARY:
        return getattr(mb, _BINARY[op])(x=x, y=ins[1], name=name)
    if op == "reduce":
        return getattr(mb, _REDUCE[a["kind"]])(
            x=x, axes=list(a["axes"]), keep_dims=a["keepdims"], name=name
        )
    if op == "softmax":
        return mb.softmax(x=x, axis=a["axis"], name=name)
    if op == "matmul":
        return mb.matmul(x=x, y=ins[1], name=name)
    if op == "linear":
        if len(out.shape) <= 3:
            bias = ins[2] if len(ins) > 2 else np.zeros(ins[1].shape[1], ins[1].dtype)
            return mb.linear(x=x, weight=np.ascontiguousarray(ins[1].T), bias=bias, name=name)
        product = mb.matmul(x=x, y=ins[1], name=name + "_mm" if len(ins) > 2 else name)
        return mb.add(x=product, y=ins[2], name=name) if len(ins) > 2 else product
    if op == "conv":
        pads = [p for pair in zip(a["pads_begin"], a["pads_end"], strict=True) for p in pair]
        kwargs = {"bias": ins[2]} if len(ins) > 2 else {}
        return mb.conv(
            x=x,
            weight=ins[1],
            strides=list(a["strides"]),
            pad_type="custom",
            pad=pads,
            dilations=list(a["dilations"]),
            groups=a["groups"],
            name=name,
            **kwargs,
        )
    if op == "pool":
        pads = [p for pair in zip(a["pads_begin"], a["pads_end"], strict=True) for p in pair]
        args = {
            "x": x,
            "kernel_sizes": list(a["kernel"]),
            "strides": list(a["strides"]),
            "pad_type": "custom",
            "pad": pads,
            "name": name,
        }
        if a["kind"] == "max":
            return mb.max_pool(**args)
        return mb.avg_pool(exclude_padding_from_average=False, **args)
    if op == "upsample":
        sh, sw = a["scales"]
        return mb.upsample_nearest_neighbor(
            x=x, scale_factor_height=sh, scale_factor_width=sw, name=name
        )
    if op == "reshape":
        shape = [-1 if d else s for s, d in zip(out.shape, out.dyn, strict=True)]
        return mb.reshape(x=x, shape=shape, name=name)
    if op == "transpose":
        return mb.transpose(x=x, perm=list(a["perm"]), name=name)
    if op == "concat":
        return mb.concat(values=ins, axis=a["axis"], name=name)
    if op == "slice":
        src = graph.values[node.inputs[0]]
        return mb.slice_by_index(
            x=x,
            begin=list(a["begin"]),
            end=list(a["end"]),
            stride=list(a["strides"]),
            end_mask=list(src.dyn),
            name=name,
        )
    if op == "pad":
        pads = [p for pair in zip(a["pads_begin"], a["pads_end"], strict=True) for p in pair]
        return mb.pad(
            x=x,
            pad=np.array(pads, np.int32),
            mode="constant",
            constant_val=np.float32(a["value"]),
            name=name,
        )
    if op == "broadcast":
        src_shape = graph.values[node.inputs[0]].shape
        expanded = (1,) * (len(out.shape) - len(src_shape)) + tuple(src_shape)
        if expanded != tuple(src_shape):
            x = mb.reshape(x=x, shape=list(expanded), name=name + "_expand")
        if not any(out.dyn):
            reps = [o // s for o, s in zip(out.shape, expanded, strict=True)]
            return mb.tile(x=x, reps=reps, name=name)
        batch = mb.slice_by_index(
            x=mb.shape(x=images, name=name + "_shape"), begin=[0], end=[1], name=name + "_batch"
        )
        dims = [
            batch if d else np.array([s], np.int32) for s, d in zip(out.shape, out.dyn, strict=True)
        ]
        target = mb.concat(values=dims, axis=0, name=name + "_target")
        zeros = mb.fill(shape=target, value=0.0, name=name + "_zeros")
        return mb.add(x=x, y=zeros, name=name)
    if op == "cast":
        return mb.cast(x=x, dtype=_DTYPES[a["dtype"]], name=name)
    raise ValueError(
        f"export_coreml: the graph op {op!r} (from an MLX pattern that was not recognised) has "
        "no Core ML equivalent"
    )
