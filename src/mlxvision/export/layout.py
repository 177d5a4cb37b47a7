"""Rewrite a channels-last (MLX) graph into a channels-first one (ONNX, Core ML).

Every value keeps its logical meaning, but is stored transposed by a permutation ``p``
(``physical = logical.transpose(p)``). The graph input (rank 4) arrives as NCHW, convolutions
and pools run in NCHW with OIHW weights, elementwise ops, reductions, slices, pads and
concatenations follow whatever layout their input has, transposes only relabel axes, and an
explicit ``transpose`` is inserted only where an op needs another layout (a reshape that would
reorder data, a matmul, the graph output).

Example:
    >>> import mlx.core as mx, mlx.nn as nn
    >>> from mlxvision.export.trace import trace
    >>> conv = nn.Conv2d(3, 4, 3).eval()
    >>> graph = to_channels_first(trace(conv, mx.zeros((1, 8, 8, 3))))
    >>> [n.op for n in graph.nodes], graph.values[graph.inputs[0]].shape[1:]
    (['conv', 'transpose'], (3, 8, 8))
"""

from __future__ import annotations

from .ir import BINARY, UNARY, Graph, Node
from .passes import rename

Perm = tuple[int, ...]


def _identity(rank: int) -> Perm:
    return tuple(range(rank))


def _inverse(p: Perm) -> Perm:
    inv = [0] * len(p)
    for i, axis in enumerate(p):
        inv[axis] = i
    return tuple(inv)


def channels_first_perm(rank: int) -> Perm:
    """The permutation from channels-last to channels-first: (0, rank-1, 1, ..., rank-2)."""
    return (0, rank - 1, *range(1, rank - 1))


class _Rewriter:
    def __init__(self, graph: Graph) -> None:
        self.old = graph
        self.new = Graph(layout="NCHW", dynamic_batch=graph.dynamic_batch)
        self.new._counter = graph._counter
        self.phys: dict[str, str] = {}
        self.perm: dict[str, Perm] = {}
        self.cache: dict[tuple[str, Perm], str] = {}

    def tensor(self, name: str) -> tuple[str, Perm]:
        if name not in self.phys:
            array = self.old.constants[name]
            self.new.add_const(name, array)
            self.phys[name], self.perm[name] = name, _identity(array.ndim)
        return self.phys[name], self.perm[name]

    def const(self, name: str, rank: int, perm: Perm) -> str:
        array = self.old.constants[name]
        array = array.reshape((1,) * (rank - array.ndim) + array.shape) if array.ndim else array
        if array.ndim and perm != _identity(rank):
            return self.new.add_const(self.new.fresh(name + "_t"), array.transpose(perm))
        if name not in self.new.constants:
            self.new.add_const(name, array)
        return name

    def define(self, name: str, perm: Perm, phys_name: str | None = None) -> str:
        value = self.old.values[name]
        phys_name = phys_name or name
        self.new.add_value(
            phys_name,
            tuple(value.shape[i] for i in perm),
            value.dtype,
            tuple(value.dyn[i] for i in perm),
        )
        self.phys[name], self.perm[name] = phys_name, perm
        return phys_name

    def materialize(self, name: str, target: Perm) -> str:
        if self.old.is_const(name):
            return self.const(name, len(target), target)
        phys, p = self.phys[name], self.perm[name]
        if p == target:
            return phys
        if (name, target) in self.cache:
            return self.cache[(name, target)]
        inv = _inverse(p)
        q = tuple(inv[t] for t in target)
        out = self.new.fresh(name + "_t")
        value = self.old.values[name]
        self.new.add_value(
            out,
            tuple(value.shape[t] for t in target),
            value.dtype,
            tuple(value.dyn[t] for t in target),
        )
        self.new.nodes.append(Node("transpose", [phys], [out], {"perm": q}))
        self.cache[(name, target)] = out
        return out

    def emit(self, node: Node, inputs: list[str], perm: Perm, **attrs: object) -> None:
        outs = [self.define(o, perm) for o in node.outputs]
        self.new.nodes.append(Node(node.op, inputs, outs, {**node.attrs, **attrs}, node.layer))


def to_channels_first(graph: Graph) -> Graph:
    """A new graph whose rank-4 input is NCHW and whose convolutions and pools are NCHW."""
    rw = _Rewriter(graph)
    for name in graph.inputs:
        rank = len(graph.values[name].shape)
        rw.define(name, channels_first_perm(rank) if rank == 4 else _identity(rank))
        rw.new.inputs.append(name)
    for node in graph.nodes:
        _rewrite(rw, node)
    for name in graph.outputs:
        phys = rw.materialize(name, _identity(len(graph.values[name].shape)))
        if phys != name:
            if phys in rw.new.inputs or rw.new.is_const(phys) or phys in rw.new.outputs:
                rw.new.add_value(
                    name,
                    rw.new.values[phys].shape,
                    rw.new.values[phys].dtype,
                    rw.new.values[phys].dyn,
                )
                rw.new.nodes.append(Node("identity", [phys], [name]))
            else:
                rw.new.values.pop(name, None)
                rename(rw.new, phys, name)
        rw.new.outputs.append(name)
    rw.new.prune()
    return rw.new


def _rewrite(rw: _Rewriter, node: Node) -> None:
    old = rw.old
    op = node.op
    rank = len(old.values[node.outputs[0]].shape)
    tensors = [i for i in node.inputs if not old.is_const(i)]
    if op in UNARY or op == "cast":
        phys, p = rw.tensor(node.inputs[0])
        rw.emit(node, [phys], p)
    elif op in BINARY:
        ref = _identity(rank)
        if all(len(old.values[t].shape) == rank for t in tensors):
            ref = rw.perm[tensors[0]]
        rw.emit(node, [rw.materialize(i, ref) for i in node.inputs], ref)
    elif op == "reduce":
        phys, p = rw.tensor(node.inputs[0])
        inv = _inverse(p)
        axes = tuple(sorted(inv[a] for a in node.attrs["axes"]))
        out_p = p
        if not node.attrs["keepdims"]:
            kept = [a for a in p if a not in node.attrs["axes"]]
            out_p = tuple(sorted(kept).index(a) for a in kept)
        rw.emit(node, [phys], out_p, axes=axes)
    elif op == "softmax":
        phys, p = rw.tensor(node.inputs[0])
        rw.emit(node, [phys], p, axis=_inverse(p)[node.attrs["axis"]])
    elif op == "concat":
        ref = rw.perm[tensors[0]] if tensors else _identity(rank)
        inputs = [rw.materialize(i, ref) for i in node.inputs]
        rw.emit(node, inputs, ref, axis=_inverse(ref)[node.attrs["axis"]])
    elif op in ("slice", "pad"):
        phys, p = rw.tensor(node.inputs[0])
        keys = ("begin", "end", "strides") if op == "slice" else ("pads_begin", "pads_end")
        rw.emit(node, [phys], p, **{k: tuple(node.attrs[k][a] for a in p) for k in keys})
    elif op == "transpose":
        phys, p = rw.tensor(node.inputs[0])
        inv_q = _inverse(tuple(node.attrs["perm"]))
        rw.phys[node.outputs[0]] = phys
        rw.perm[node.outputs[0]] = tuple(inv_q[a] for a in p)
    elif op == "reshape":
        src = node.inputs[0]
        phys, p = rw.tensor(src)
        shape = old.values[src].shape
        non_unit = [a for a in p if shape[a] != 1]
        if non_unit != sorted(non_unit):
            phys = rw.materialize(src, _identity(len(p)))
        rw.emit(node, [phys], _identity(rank))
    elif op in ("conv", "pool", "upsample"):
        cf = channels_first_perm(rank)
        inputs = [rw.materialize(node.inputs[0], cf)]
        if op == "conv":
            weight = old.constants.get(node.inputs[1]) if len(node.inputs) > 1 else None
            if weight is None:
                raise ValueError(
                    "export: a convolution whose weights are computed at run time cannot be "
                    "exported; weights must be parameters"
                )
            inputs.append(rw.new.add_const(rw.new.fresh("weight"), weight.transpose(cf)))
            inputs += [rw.tensor(b)[0] for b in node.inputs[2:]]
        rw.emit(node, inputs, cf, channels_last=False)
    elif op == "linear":
        phys, p = rw.tensor(node.inputs[0])
        if p[-1] != len(p) - 1:
            phys, p = rw.materialize(node.inputs[0], _identity(len(p))), _identity(len(p))
        rw.emit(node, [phys] + [rw.tensor(i)[0] for i in node.inputs[1:]], p)
    else:
        inputs = [rw.materialize(i, _identity(len(old.values[i].shape))) for i in node.inputs]
        rw.emit(node, inputs, _identity(rank))
