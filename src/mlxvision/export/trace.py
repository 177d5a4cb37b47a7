"""Record a model's eval-mode MLX primitives into the export IR (:class:`~.ir.Graph`).

``mx.export_function`` with a callback hands over the inputs, the constants (the evaluated
parameters) and one event per primitive. Each primitive is lowered to the IR's few ops; then
:mod:`.passes` simplify the graph (constant folding, pooling patterns, BatchNorm folding).
The trace runs on the CPU stream, where ``mx.fast`` ops (layer norm, RMS norm, attention)
decompose into plain primitives, so a trace looks the same on every machine.

With ``dynamic_batch=True`` the function is traced at batch sizes ``b`` and ``b + 1``, where
``b`` is the example's batch size but at least 2: dims that change are marked as
batch-dependent (``Value.dyn``) so exporters can declare a flexible batch; the graph's concrete
shapes are then those of batch ``b``. If the two traces differ in any other way, the function
is traced at the example's batch size, which the graph then keeps fixed.

Example:
    >>> import mlx.core as mx, mlx.nn as nn
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    >>> graph = trace(model.eval(), mx.zeros((2, 4)))
    >>> sorted(graph.op_counts())
    ['linear', 'relu']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from . import passes
from .ir import Graph

_REDUCE_TYPES = {2: "sum", 3: "prod", 4: "min", 5: "max"}
_UNARY = {
    "Abs": "abs",
    "Negative": "neg",
    "Exp": "exp",
    "Tanh": "tanh",
    "Sigmoid": "sigmoid",
    "Erf": "erf",
    "Square": "square",
    "Copy": "identity",
    "StopGradient": "identity",
    "Full": "identity",
}
_BINARY = {
    "Add": "add",
    "Subtract": "sub",
    "Multiply": "mul",
    "Divide": "div",
    "Maximum": "max",
    "Minimum": "min",
    "Power": "pow",
}
_RESHAPES = ("Reshape", "Flatten", "Unflatten", "Squeeze", "ExpandDims")
_OTHER = (
    "AddMM",
    "AsStrided",
    "AsType",
    "Broadcast",
    "Concatenate",
    "Convolution",
    "Log",
    "LogSumExp",
    "Matmul",
    "Pad",
    "Reduce",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Transpose",
)
SUPPORTED_PRIMITIVES: tuple[str, ...] = tuple(sorted({*_UNARY, *_BINARY, *_RESHAPES, *_OTHER}))


class UnsupportedPrimitiveError(ValueError):
    """The traced function uses an MLX primitive that the exporters cannot express.

    The message names the primitive, the layer that used it (for a model) and the primitives
    that are supported (:data:`SUPPORTED_PRIMITIVES`).

    Example:
        >>> import mlx.core as mx
        >>> trace(lambda x: mx.sin(x), mx.zeros((1, 4)))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mlxvision.export.trace.UnsupportedPrimitiveError: cannot export the MLX primitive Sin; ...
    """


class TrainingModeError(ValueError):
    """The model is in training mode (BatchNorm would use batch statistics, Dropout would drop).

    Example:
        >>> import mlx.core as mx, mlx.nn as nn
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))  # new modules train
        >>> trace(model, mx.zeros((1, 4)))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mlxvision.export.trace.TrainingModeError: model: Sequential is in training mode ...
        >>> trace(model.eval(), mx.zeros((1, 4))).op_counts()
        {'linear': 1}
    """


Outs = list[tuple[str, tuple[int, ...], str]]
_TRAINING_DEPENDENT = (
    nn.BatchNorm,
    nn.Dropout,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.InstanceNorm,
    nn.GroupNorm,
)


def trace(
    model_or_fn: nn.Module | Callable[[mx.array], mx.array],
    example_input: mx.array | np.ndarray,
    *,
    dynamic_batch: bool = True,
    optimize: bool = True,
) -> Graph:
    """Trace ``model_or_fn(example_input)`` into a :class:`~.ir.Graph` (channels-last, as MLX).

    A model must be in eval mode (``model.eval()``); a model in training mode raises
    :class:`TrainingModeError`. Unsupported primitives raise :class:`UnsupportedPrimitiveError`
    naming the primitive and, for a model, the layer that used it.

    Example:
        >>> import mlx.core as mx
        >>> from mlxvision import create_model
        >>> model = create_model("simple_cnn", num_classes=10, in_channels=3, input_size=8)
        >>> graph = trace(model.eval(), mx.zeros((1, 8, 8, 3)))
        >>> graph.op_counts()["pool"], graph.dynamic_batch
        (2, True)
    """
    from ..ops import fast_conv_disabled

    with fast_conv_disabled():  # exporters read MLX's own Convolution primitive
        return _trace(model_or_fn, example_input, dynamic_batch, optimize)


def _trace(model_or_fn, example_input, dynamic_batch: bool, optimize: bool) -> Graph:
    fn = _as_function(model_or_fn)
    example = mx.array(example_input) if not isinstance(example_input, mx.array) else example_input
    if example.ndim == 0:
        raise ValueError("example_input: expected an array with a batch axis, got a scalar")
    fn(example)  # fail here, with the model's own message, before tracing
    try:
        merged = _trace_dynamic(fn, example, optimize) if dynamic_batch else None
        return merged if merged is not None else _record(fn, example, optimize)
    except UnsupportedPrimitiveError as err:
        where = _locate(model_or_fn, example, err.args[1]) if len(err.args) > 1 else None
        raise UnsupportedPrimitiveError(err.args[0].replace("{where}", where or "")) from None


def _trace_dynamic(
    fn: Callable[[mx.array], mx.array], example: mx.array, optimize: bool
) -> Graph | None:
    """The graph with batch-dependent dims marked, or None where the batch size is baked in."""
    # batch 1 hides broadcasts along the batch axis: compare two batch sizes of at least 2
    batch = max(example.shape[0], 2)
    try:
        first, second = (
            _record(fn, mx.zeros((n, *example.shape[1:]), dtype=example.dtype), optimize)
            for n in (batch, batch + 1)
        )
    except UnsupportedPrimitiveError:
        raise
    except (ValueError, RuntimeError):
        return None
    merged = _merge_batch(first, second)
    return merged if merged.dynamic_batch else None


def check_eval_mode(model: nn.Module) -> None:
    """Raise :class:`TrainingModeError` if a BatchNorm or Dropout of ``model`` is in training mode.

    Example:
        >>> import mlx.nn as nn
        >>> check_eval_mode(nn.BatchNorm(4).eval())
        >>> check_eval_mode(nn.BatchNorm(4))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mlxvision.export.trace.TrainingModeError: model: BatchNorm is in training mode ...
    """
    training = [
        name or type(model).__name__
        for name, m in model.named_modules()
        if m.training and isinstance(m, _TRAINING_DEPENDENT)
    ]
    if training:
        names = ", ".join(training[:5]) + (", ..." if len(training) > 5 else "")
        raise TrainingModeError(
            f"model: {type(model).__name__} is in training mode ({names}); export needs eval "
            "mode, where BatchNorm uses its running statistics and Dropout is off: call "
            "model.eval() before exporting"
        )


def _as_function(model_or_fn: Any) -> Callable[[mx.array], mx.array]:
    if isinstance(model_or_fn, nn.Module):
        check_eval_mode(model_or_fn)
        mx.eval(model_or_fn.parameters())
    elif not callable(model_or_fn):
        raise TypeError(
            f"model_or_fn: expected an mlx.nn.Module or a function of one array, "
            f"got {type(model_or_fn).__name__}"
        )

    def forward(x: mx.array) -> mx.array:
        with mx.stream(mx.cpu):
            out = model_or_fn(x)
        if not isinstance(out, mx.array):
            raise TypeError(f"model_or_fn: expected one array as output, got {type(out).__name__}")
        return out

    return forward


def _dtype_name(dtype: mx.Dtype) -> str:
    name = str(dtype).rsplit(".", 1)[-1]
    return "float32" if name == "bfloat16" else name


def _to_numpy(array: mx.array) -> np.ndarray:
    if array.dtype == mx.bfloat16:
        array = array.astype(mx.float32)
    # a read-only view of the evaluated weights: no copy, and no pass can change the model
    view = np.asarray(array)
    view.flags.writeable = False
    return view


def _record(fn: Callable[[mx.array], mx.array], example: mx.array, optimize: bool) -> Graph:
    events: list[dict[str, Any]] = []
    mx.export_function(events.append, fn, example)
    graph = Graph()
    for event in events:
        kind = event["type"]
        if kind == "inputs":
            for name, shape, dtype in event["inputs"]:
                graph.add_value(name, shape, _dtype_name(dtype))
                graph.inputs.append(name)
        elif kind == "outputs":
            graph.outputs = [name for name, _, _ in event["outputs"]]
        elif kind == "constants":
            for name, array in event["constants"]:
                graph.add_const(name, _to_numpy(array))
        elif kind == "primitive":
            outs = [(n, tuple(s), _dtype_name(d)) for n, s, d in event["outputs"]]
            ins = [name for name, _, _ in event["inputs"]]
            _lower(graph, event["name"], list(event["arguments"]), ins, outs)
    for name in graph.outputs:
        if name in graph.inputs or graph.is_const(name):
            raise ValueError("model_or_fn: the output must be computed from the input")
    if optimize:
        passes.optimize(graph)
    return graph


def _lower(graph: Graph, prim: str, args: list[Any], ins: list[str], outs: Outs) -> None:
    add = graph.add_node
    if prim in _UNARY:
        add(_UNARY[prim], ins[:1], outs)
    elif prim in _BINARY:
        add(_BINARY[prim], ins, outs)
    elif prim in _RESHAPES:
        add("reshape", ins, outs, {"shape": outs[0][1]})
    elif prim == "Sqrt":
        add("rsqrt" if args and args[0] else "sqrt", ins, outs)
    elif prim == "Log" and args and args[0] == 2:
        add("log", ins, outs)
    elif prim == "Reduce" and args[0] in _REDUCE_TYPES:
        add(
            "reduce",
            ins,
            outs,
            {"kind": _REDUCE_TYPES[args[0]], "axes": tuple(args[1]), "keepdims": True},
        )
    elif prim == "LogSumExp":
        rank = len(graph.values[ins[0]].shape)
        add("reduce", ins, outs, {"kind": "logsumexp", "axes": (rank - 1,), "keepdims": True})
    elif prim == "Softmax":
        add("softmax", ins, outs, {"axis": len(outs[0][1]) - 1})
    elif prim == "Matmul":
        add("matmul", ins, outs)
    elif prim == "AddMM":
        _lower_addmm(graph, args, ins, outs)
    elif prim == "Convolution":
        _lower_conv(graph, args, ins, outs)
    elif prim == "Transpose":
        add("transpose", ins, outs, {"perm": tuple(args[0])})
    elif prim == "Broadcast":
        add("broadcast", ins, outs, {"shape": outs[0][1]})
    elif prim == "Concatenate":
        add("concat", ins, outs, {"axis": int(args[0])})
    elif prim == "Slice":
        add(
            "slice",
            ins,
            outs,
            {"begin": tuple(args[0]), "end": tuple(args[1]), "strides": tuple(args[2])},
        )
    elif prim == "Split":
        _lower_split(graph, args, ins, outs)
    elif prim == "Pad" and graph.is_const(ins[1]):
        _lower_pad(graph, args, ins, outs)
    elif prim == "AsType":
        add("cast", ins, outs, {"dtype": outs[0][2]})
    elif prim == "AsStrided":
        add(
            "as_strided",
            ins,
            outs,
            {"shape": tuple(args[0]), "strides": tuple(args[1]), "offset": int(args[2])},
        )
    else:
        detail = "" if prim not in SUPPORTED_PRIMITIVES else f" with arguments {args}"
        raise UnsupportedPrimitiveError(
            f"cannot export the MLX primitive {prim}{detail}{{where}}; supported primitives: "
            f"{', '.join(SUPPORTED_PRIMITIVES)}",
            prim,
        )


def _lower_addmm(graph: Graph, args: list[Any], ins: list[str], outs: Outs) -> None:
    alpha, beta = float(args[0]), float(args[1])
    name, shape, dtype = outs[0]
    product, addend = graph.fresh(name + "_mm"), ins[2]
    graph.add_node("matmul", ins[:2], [(product, shape, dtype)])
    if alpha != 1.0:
        scaled = graph.fresh(name + "_alpha")
        graph.add_node(
            "mul",
            [product, graph.add_const(graph.fresh("alpha"), np.float32(alpha))],
            [(scaled, shape, dtype)],
        )
        product = scaled
    if beta != 1.0:
        c_shape = graph.values[addend].shape
        scaled = graph.fresh(name + "_beta")
        graph.add_node(
            "mul",
            [addend, graph.add_const(graph.fresh("beta"), np.float32(beta))],
            [(scaled, c_shape, dtype)],
        )
        addend = scaled
    graph.add_node("add", [product, addend], outs)


def _lower_conv(graph: Graph, args: list[Any], ins: list[str], outs: Outs) -> None:
    strides, pad_lo, pad_hi, dilation, input_dilation, groups, flip = args
    if any(d != 1 for d in input_dilation) or flip:
        raise UnsupportedPrimitiveError(
            "cannot export the MLX primitive Convolution with input dilation or flipped kernel "
            "(a transposed convolution){where}; only ordinary convolutions are supported",
            "Convolution",
        )
    graph.add_node(
        "conv",
        ins,
        outs,
        {
            "channels_last": True,
            "strides": tuple(strides),
            "pads_begin": tuple(pad_lo),
            "pads_end": tuple(pad_hi),
            "dilations": tuple(dilation),
            "groups": int(groups),
        },
    )


def _lower_split(graph: Graph, args: list[Any], ins: list[str], outs: Outs) -> None:
    indices, axis = list(args[0]), int(args[1])
    shape = graph.values[ins[0]].shape
    bounds = [0, *indices, shape[axis]]
    for (name, out_shape, dtype), lo, hi in zip(outs, bounds, bounds[1:], strict=False):
        begin = [0] * len(shape)
        end = list(shape)
        begin[axis], end[axis] = lo, hi
        graph.add_node(
            "slice",
            ins,
            [(name, out_shape, dtype)],
            {"begin": tuple(begin), "end": tuple(end), "strides": (1,) * len(shape)},
        )


def _lower_pad(graph: Graph, args: list[Any], ins: list[str], outs: Outs) -> None:
    axes, lo, hi = args
    rank = len(outs[0][1])
    begin, end = [0] * rank, [0] * rank
    for axis, low, high in zip(axes, lo, hi, strict=True):
        begin[axis], end[axis] = int(low), int(high)
    value = float(graph.constants[ins[1]])
    graph.add_node(
        "pad", ins[:1], outs, {"pads_begin": tuple(begin), "pads_end": tuple(end), "value": value}
    )


_SHAPE_ATTRS = {"reshape": ("shape",), "broadcast": ("shape",), "slice": ("end",)}


def _merge_batch(graph: Graph, other: Graph) -> Graph:
    """Mark the dims of ``graph`` that change in ``other`` (traced at batch + 1) as dynamic."""
    same = (
        len(graph.nodes) == len(other.nodes)
        and graph.inputs == other.inputs
        and graph.outputs == other.outputs
        and graph.constants.keys() == other.constants.keys()
        and all(np.array_equal(v, other.constants[k]) for k, v in graph.constants.items())
        and graph.values.keys() == other.values.keys()
    )
    if not same:
        return graph
    for name, value in graph.values.items():
        shape_b = other.values[name].shape
        if len(shape_b) != len(value.shape):
            return graph
        value.dyn = tuple(a != b for a, b in zip(value.shape, shape_b, strict=True))
    batch = graph.values[graph.inputs[0]].shape[0]
    for node, node_b in zip(graph.nodes, other.nodes, strict=True):
        if (node.op, node.inputs, node.outputs) != (node_b.op, node_b.inputs, node_b.outputs):
            return graph
        loose = _SHAPE_ATTRS.get(node.op, ())
        if any(node.attrs[k] != node_b.attrs[k] for k in node.attrs if k not in loose):
            return graph
        if not _dynamic_ok(graph, node, batch):
            return graph
    graph.dynamic_batch = True
    return graph


def _dynamic_ok(graph: Graph, node: Any, batch: int) -> bool:
    out = graph.values[node.outputs[0]]
    if node.op == "reshape":
        return sum(out.dyn) <= 1
    if node.op == "broadcast":
        return all(s == batch for s, d in zip(out.shape, out.dyn, strict=True) if d)
    if node.op == "slice":
        src = graph.values[node.inputs[0]]
        return all(
            b == 0 and e == n and s == 1
            for b, e, s, n, d in zip(
                node.attrs["begin"],
                node.attrs["end"],
                node.attrs["strides"],
                src.shape,
                src.dyn,
                strict=True,
            )
            if d
        )
    return node.op != "as_strided" or not any(out.dyn)


def _locate(model_or_fn: Any, example: mx.array, prim: str) -> str | None:
    """Name the deepest submodule whose own trace contains ``prim`` (for error messages)."""
    if not isinstance(model_or_fn, nn.Module):
        return None
    calls: dict[int, tuple[Any, ...]] = {}
    classes = {type(m) for _, m in model_or_fn.named_modules()}
    originals = {cls: cls.__call__ for cls in classes}

    def recorder(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
            if not kwargs and all(isinstance(a, mx.array) for a in args):
                calls.setdefault(id(self), args)
            return original(self, *args, **kwargs)

        return call

    try:
        for cls, original in originals.items():
            cls.__call__ = recorder(original)
        with mx.stream(mx.cpu):
            model_or_fn(example)
    finally:
        for cls, original in originals.items():
            cls.__call__ = original
    found = []
    for name, module in model_or_fn.named_modules():
        if not name or id(module) not in calls:
            continue
        seen: list[str] = []

        def collect(event: dict[str, Any], seen: list[str] = seen) -> None:
            if event["type"] == "primitive":
                seen.append(event["name"])

        try:
            with mx.stream(mx.cpu):
                mx.export_function(collect, module, *calls[id(module)])
        except (ValueError, RuntimeError, TypeError):
            continue
        if prim in seen:
            found.append(f"{name} ({type(module).__name__})")
    if found:
        return f" in layer {max(found, key=lambda n: n.count('.'))}"
    return f" in {type(model_or_fn).__name__}.__call__ (outside its submodules)"
