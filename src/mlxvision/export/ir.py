"""The small graph IR that every exporter backend reads, with a NumPy reference evaluator.

A :class:`Graph` is a list of :class:`Node` in execution order over named values. Constants are
NumPy arrays. The ops (``Node.op``) are few and backend-neutral:

- unary: ``abs neg exp log tanh sigmoid erf sqrt rsqrt square relu identity``
- binary (NumPy broadcasting): ``add sub mul div max min pow``
- ``reduce`` (``kind`` in sum, mean, max, min, prod, logsumexp; ``axes``; ``keepdims``),
  ``softmax`` (``axis``), ``matmul``, ``linear`` (``y = x @ w + b``, ``w`` of shape (in, out))
- ``conv`` (``channels_last``; weights OHWI when channels-last, OIHW otherwise; ``strides``,
  ``pads_begin``, ``pads_end``, ``dilations``, ``groups``), ``pool`` (``kind`` max or avg,
  ``kernel``, ``strides``, ``pads_begin``, ``pads_end``; average pooling divides by the full
  window, padding included, as MLX does), ``upsample`` (nearest neighbour: every pixel repeated
  ``scales`` = (sh, sw) times; ``channels_last``)
- ``reshape transpose concat slice pad broadcast cast as_strided``

Example:
    >>> import numpy as np
    >>> g = Graph(inputs=["x"], outputs=["y"])
    >>> _ = g.add_value("x", (2, 3), "float32")
    >>> _ = g.add_const("two", np.float32(2))
    >>> _ = g.add_node("mul", ["x", "two"], [("y", (2, 3), "float32")])
    >>> g.run(np.ones((2, 3), np.float32))[0].sum()
    np.float32(12.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

UNARY = (
    "abs",
    "neg",
    "exp",
    "log",
    "tanh",
    "sigmoid",
    "erf",
    "sqrt",
    "rsqrt",
    "square",
    "relu",
    "identity",
)
BINARY = ("add", "sub", "mul", "div", "max", "min", "pow")
REDUCE_KINDS = ("sum", "mean", "max", "min", "prod", "logsumexp")


@dataclass
class Value:
    """A named tensor: its shape, NumPy dtype name and which dims vary with the batch size."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    dyn: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        if len(self.dyn) != len(self.shape):
            self.dyn = (False,) * len(self.shape)


@dataclass(eq=False)
class Node:
    """One op: ``outputs = op(inputs, **attrs)``; ``layer`` names the module it came from.

    Nodes compare by identity, so finding one in a long node list stays cheap.
    """

    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    layer: str | None = None


@dataclass
class Graph:
    """Nodes in execution order over named values; constants are NumPy arrays.

    :func:`mlxvision.export.trace` records one from a model; :meth:`run` evaluates it with
    NumPy, the reference every exporter is checked against.

    Example:
        >>> import mlx.core as mx, mlx.nn as nn
        >>> from mlxvision.export import trace
        >>> graph = trace(nn.Linear(4, 3), mx.zeros((2, 4)))
        >>> print(graph)
        graph(A:float32[N,4]) [NHWC]
          B:float32[N,3] = linear(A, linear_weight_2, linear_bias_3; )
          return B
        >>> graph.run(np.ones((5, 4), np.float32))[0].shape  # any batch size
        (5, 3)
    """

    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    values: dict[str, Value] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    layout: str = "NHWC"
    dynamic_batch: bool = False
    _counter: int = 0

    def add_value(
        self, name: str, shape: Sequence[int], dtype: str, dyn: Sequence[bool] = ()
    ) -> Value:
        value = Value(name, tuple(shape), str(dtype), tuple(dyn))
        self.values[name] = value
        return value

    def add_const(self, name: str, array: Any) -> str:
        array = np.asarray(array)
        self.constants[name] = array
        self.add_value(name, array.shape, str(array.dtype))
        return name

    def add_node(
        self,
        op: str,
        inputs: Sequence[str],
        outputs: Sequence[tuple[str, Sequence[int], str]],
        attrs: dict[str, Any] | None = None,
        layer: str | None = None,
        index: int | None = None,
    ) -> Node:
        for name, shape, dtype in outputs:
            self.add_value(name, shape, dtype)
        node = Node(op, list(inputs), [o[0] for o in outputs], dict(attrs or {}), layer)
        self.nodes.insert(len(self.nodes) if index is None else index, node)
        return node

    def fresh(self, stem: str) -> str:
        """A value name not used yet, starting with ``stem``."""
        while True:
            self._counter += 1
            name = f"{stem}_{self._counter}"
            if name not in self.values:
                return name

    def is_const(self, name: str) -> bool:
        return name in self.constants

    def producers(self) -> dict[str, Node]:
        return {out: node for node in self.nodes for out in node.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                users.setdefault(name, []).append(node)
        return users

    def op_counts(self) -> dict[str, int]:
        """How many nodes of each op the graph holds.

        Example:
            >>> Graph().op_counts()
            {}
        """
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.op] = counts.get(node.op, 0) + 1
        return counts

    def prune(self) -> None:
        """Drop nodes and constants that no graph output depends on."""
        needed = set(self.outputs)
        kept: list[Node] = []
        for node in reversed(self.nodes):
            if any(o in needed for o in node.outputs):
                kept.append(node)
                needed.update(node.inputs)
        self.nodes = kept[::-1]
        self.constants = {k: v for k, v in self.constants.items() if k in needed}
        live = needed | {o for n in self.nodes for o in n.outputs} | set(self.inputs)
        self.values = {k: v for k, v in self.values.items() if k in live}

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """Evaluate the graph with NumPy (the reference the backends are checked against)."""
        if len(arrays) != len(self.inputs):
            raise ValueError(f"Graph.run: expected {len(self.inputs)} inputs, got {len(arrays)}")
        env: dict[str, np.ndarray] = dict(self.constants)
        for name, array in zip(self.inputs, arrays, strict=True):
            env[name] = np.asarray(array)
        batch = arrays[0].shape[0] if arrays and np.ndim(arrays[0]) else None
        for node in self.nodes:
            args = [env[name] for name in node.inputs]
            results = evaluate(self._at_batch(node, batch), args)
            for name, result in zip(node.outputs, results, strict=True):
                env[name] = result
        return [env[name] for name in self.outputs]

    def _at_batch(self, node: Node, batch: int | None) -> Node:
        """``node`` with its shape attributes adjusted to the batch size being run."""
        if not self.dynamic_batch or node.op not in ("reshape", "broadcast", "slice"):
            return node
        out = self.values[node.outputs[0]]
        attrs = dict(node.attrs)
        if node.op == "reshape":
            attrs["shape"] = tuple(-1 if d else s for s, d in zip(out.shape, out.dyn, strict=True))
        elif node.op == "broadcast":
            attrs["shape"] = tuple(
                batch if d else s for s, d in zip(out.shape, out.dyn, strict=True)
            )
        else:
            src = self.values[node.inputs[0]]
            attrs["end"] = tuple(
                np.iinfo(np.int64).max if d else e
                for e, d in zip(node.attrs["end"], src.dyn, strict=True)
            )
        return Node(node.op, node.inputs, node.outputs, attrs, node.layer)

    def __str__(self) -> str:
        lines = [f"graph({', '.join(self._describe(n) for n in self.inputs)}) [{self.layout}]"]
        for node in self.nodes:
            attrs = ", ".join(f"{k}={v}" for k, v in node.attrs.items())
            outs = ", ".join(self._describe(o) for o in node.outputs)
            lines.append(f"  {outs} = {node.op}({', '.join(node.inputs)}; {attrs})")
        lines.append(f"  return {', '.join(self.outputs)}")
        return "\n".join(lines)

    def _describe(self, name: str) -> str:
        value = self.values[name]
        dims = ",".join("N" if d else str(s) for s, d in zip(value.shape, value.dyn, strict=True))
        return f"{name}:{value.dtype}[{dims}]"


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


_UNARY_FNS = {
    "abs": np.abs,
    "neg": np.negative,
    "exp": np.exp,
    "log": np.log,
    "tanh": np.tanh,
    "sigmoid": lambda x: (1 / (1 + np.exp(-x))).astype(x.dtype),
    "erf": _erf,
    "sqrt": np.sqrt,
    "rsqrt": lambda x: (1 / np.sqrt(x)).astype(x.dtype),
    "square": np.square,
    "relu": lambda x: np.maximum(x, 0).astype(x.dtype),
    "identity": lambda x: x,
}
_BINARY_FNS = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": np.maximum,
    "min": np.minimum,
    "pow": np.power,
}


def _reduce(x: np.ndarray, kind: str, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    if kind == "logsumexp":
        top = np.max(x, axis=axes, keepdims=True)
        out = np.log(np.sum(np.exp(x - top), axis=axes, keepdims=True)) + top
        return out if keepdims else np.squeeze(out, axis=axes)
    fn = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod}[kind]
    return fn(x, axis=axes, keepdims=keepdims).astype(x.dtype)


def conv_reference(x: np.ndarray, w: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    """Grouped, strided, dilated, padded N-d convolution (cross-correlation) in NumPy."""
    channels_last = attrs["channels_last"]
    if not channels_last:
        x = np.moveaxis(x, 1, -1)
        w = np.moveaxis(w, 1, -1)
    spatial = x.ndim - 2
    pads = [(0, 0)] + list(zip(attrs["pads_begin"], attrs["pads_end"], strict=True)) + [(0, 0)]
    x = np.pad(x, pads)
    groups, strides, dil = attrs["groups"], attrs["strides"], attrs["dilations"]
    c_out, kernel = w.shape[0], w.shape[1:-1]
    out_sizes = [
        (x.shape[1 + i] - dil[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(spatial)
    ]
    cin_g, cout_g = w.shape[-1], c_out // groups
    out = np.zeros((x.shape[0], *out_sizes, c_out), dtype=np.float64)
    for offset in np.ndindex(*kernel):
        index = tuple(
            slice(
                offset[i] * dil[i],
                offset[i] * dil[i] + strides[i] * (out_sizes[i] - 1) + 1,
                strides[i],
            )
            for i in range(spatial)
        )
        patch = x[(slice(None), *index)]
        for g in range(groups):
            wg = w[(slice(g * cout_g, (g + 1) * cout_g), *offset)]
            out[..., g * cout_g : (g + 1) * cout_g] += (
                patch[..., g * cin_g : (g + 1) * cin_g] @ wg.T
            )
    out = out.astype(x.dtype)
    return out if channels_last else np.moveaxis(out, -1, 1)


def pool_reference(x: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    """Max or average (padding counted) pooling over the spatial axes, in NumPy."""
    channels_last = attrs.get("channels_last", False)
    if not channels_last:
        x = np.moveaxis(x, 1, -1)
    kind = attrs["kind"]
    fill = -np.inf if kind == "max" else 0.0
    pads = [(0, 0)] + list(zip(attrs["pads_begin"], attrs["pads_end"], strict=True)) + [(0, 0)]
    x = np.pad(x, pads, constant_values=fill)
    kernel, strides = attrs["kernel"], attrs["strides"]
    spatial = len(kernel)
    out_sizes = [(x.shape[1 + i] - kernel[i]) // strides[i] + 1 for i in range(spatial)]
    windows = []
    for offset in np.ndindex(*kernel):
        index = tuple(
            slice(offset[i], offset[i] + strides[i] * (out_sizes[i] - 1) + 1, strides[i])
            for i in range(spatial)
        )
        windows.append(x[(slice(None), *index)])
    stack = np.stack(windows)
    out = stack.max(axis=0) if kind == "max" else stack.mean(axis=0)
    out = out.astype(x.dtype)
    return out if channels_last else np.moveaxis(out, -1, 1)


def evaluate(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
    """NumPy semantics of one IR node."""
    op, a = node.op, node.attrs
    if op in _UNARY_FNS:
        return [np.asarray(_UNARY_FNS[op](args[0]))]
    if op in _BINARY_FNS:
        x, y = args
        dtype = np.result_type(x, y) if x.ndim and y.ndim else (x if x.ndim else y).dtype
        return [np.asarray(_BINARY_FNS[op](x, y)).astype(dtype)]
    if op == "reduce":
        return [_reduce(args[0], a["kind"], tuple(a["axes"]), a["keepdims"])]
    if op == "softmax":
        x = args[0]
        e = np.exp(x - x.max(axis=a["axis"], keepdims=True))
        return [(e / e.sum(axis=a["axis"], keepdims=True)).astype(x.dtype)]
    if op == "matmul":
        return [args[0] @ args[1]]
    if op == "linear":
        out = args[0] @ args[1]
        return [out + args[2] if len(args) > 2 else out]
    if op == "conv":
        out = conv_reference(args[0], args[1], a)
        if len(args) > 2:
            bias = args[2] if a["channels_last"] else args[2].reshape(-1, *[1] * (out.ndim - 2))
            out = out + bias
        return [out]
    if op == "pool":
        return [pool_reference(args[0], a)]
    if op == "upsample":
        first = 1 if a["channels_last"] else 2
        sh, sw = a["scales"]
        return [np.repeat(np.repeat(args[0], sh, axis=first), sw, axis=first + 1)]
    if op == "reshape":
        return [args[0].reshape(a["shape"])]
    if op == "transpose":
        return [args[0].transpose(a["perm"])]
    if op == "concat":
        return [np.concatenate(args, axis=a["axis"])]
    if op == "slice":
        index = tuple(
            slice(b, e, s) for b, e, s in zip(a["begin"], a["end"], a["strides"], strict=True)
        )
        return [args[0][index]]
    if op == "pad":
        pads = list(zip(a["pads_begin"], a["pads_end"], strict=True))
        return [np.pad(args[0], pads, constant_values=a["value"])]
    if op == "broadcast":
        return [np.broadcast_to(args[0], a["shape"]).copy()]
    if op == "cast":
        return [args[0].astype(a["dtype"])]
    if op == "as_strided":
        flat = np.ascontiguousarray(args[0]).reshape(-1)
        size = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[a["offset"] :], a["shape"], [s * size for s in a["strides"]]
        )
        return [view.copy()]
    raise NotImplementedError(f"IR op {op!r} has no NumPy reference")
