"""Graph passes over the export IR: fold, simplify and recognise what MLX decomposed.

:func:`optimize` runs them in order: drop identities and implicit broadcasts, fold constants,
turn ``max(x, 0)`` into ``relu``, recognise pooling and nearest-upsampling patterns, collapse
chains of per-channel arithmetic (an eval-mode BatchNorm) into one scale and shift, fold scale
and shift into the convolution or linear layer before them, apply linear layers to the last
axis where MLX flattened the leading ones around them, and drop ops that do nothing.

Example:
    >>> import numpy as np
    >>> from mlxvision.export.ir import Graph
    >>> g = Graph(inputs=["x"], outputs=["z"])
    >>> _ = g.add_value("x", (1, 3), "float32")
    >>> _ = g.add_node("add", ["x", g.add_const("a", np.float32(1))], [("y", (1, 3), "float32")])
    >>> _ = g.add_node("mul", ["y", g.add_const("b", np.float32(2))], [("w", (1, 3), "float32")])
    >>> _ = g.add_node("sub", ["w", g.add_const("c", np.float32(3))], [("z", (1, 3), "float32")])
    >>> optimize(g)
    >>> [n.op for n in g.nodes]
    ['mul', 'add']
"""

from __future__ import annotations

import math

import numpy as np

from .ir import BINARY, Graph, Node, evaluate

_AFFINE = ("add", "sub", "mul", "div")
Users = dict[str, list[Node]]


def optimize(graph: Graph) -> None:
    """Run every pass in order, in place."""
    remove_identities(graph)
    drop_implicit_broadcasts(graph)
    fold_constants(graph)
    fuse_relu(graph)
    recognise_pools(graph)
    recognise_upsampling(graph)
    collapse_affine(graph)
    remove_identities(graph)
    fold_affine_into_layers(graph)
    unflatten_linears(graph)
    remove_noops(graph)
    graph.prune()


def _single_consumer(graph: Graph, name: str, users: Users | None = None) -> Node | None:
    found = (users if users is not None else graph.consumers()).get(name, [])
    if len(found) != 1 or name in graph.outputs:
        return None
    return found[0]


def bypass(graph: Graph, node: Node, new: str, users: Users | None = None) -> None:
    """Remove ``node`` (one output) and let its consumers read ``new`` instead.

    ``users`` (as from :meth:`Graph.consumers`) is kept up to date when given, so a pass can
    bypass many nodes without rescanning the graph each time.
    """
    old = node.outputs[0]
    graph.nodes.remove(node)
    if users is None:
        users = graph.consumers()
    else:
        for name in set(node.inputs):
            users[name] = [u for u in users.get(name, []) if u is not node]
    if old in graph.outputs and new not in graph.inputs and not graph.is_const(new):
        if new in graph.outputs:
            _append_identity(graph, new, old, users)
            return
        rename(graph, new, old)
        users[old] = users.get(old, []) + users.pop(new, [])
        return
    if old in graph.outputs:
        _append_identity(graph, new, old, users)
        return
    moved = users.pop(old, [])
    for other in moved:
        other.inputs = [new if i == old else i for i in other.inputs]
    users.setdefault(new, []).extend(moved)


def _append_identity(graph: Graph, src: str, out: str, users: Users) -> None:
    identity = Node("identity", [src], [out])
    graph.nodes.append(identity)
    users.setdefault(src, []).append(identity)


def rename(graph: Graph, old: str, new: str) -> None:
    """Rename the value ``old`` to ``new`` everywhere (``new`` takes over its shape)."""
    value = graph.values.pop(old)
    value.name = new
    graph.values[new] = value
    for node in graph.nodes:
        node.inputs = [new if i == old else i for i in node.inputs]
        node.outputs = [new if o == old else o for o in node.outputs]


def remove_identities(graph: Graph) -> None:
    users = graph.consumers()
    for node in [n for n in graph.nodes if n.op == "identity"]:
        bypass(graph, node, node.inputs[0], users)


def drop_implicit_broadcasts(graph: Graph) -> None:
    """Drop ``broadcast`` nodes whose consumers broadcast by themselves (binary ops)."""
    users_of = graph.consumers()
    for node in [n for n in graph.nodes if n.op == "broadcast"]:
        out = node.outputs[0]
        users = users_of.get(out, [])
        if not users or out in graph.outputs:
            continue
        src_shape = graph.values[node.inputs[0]].shape
        ok = True
        for user in users:
            if user.op not in BINARY:
                ok = False
                break
            shapes = [src_shape if i == out else graph.values[i].shape for i in user.inputs]
            if tuple(np.broadcast_shapes(*shapes)) != graph.values[user.outputs[0]].shape:
                ok = False
                break
        if ok:
            bypass(graph, node, node.inputs[0], users_of)


def fold_constants(graph: Graph) -> None:
    """Evaluate nodes whose inputs are all constants (a ``broadcast`` stays a node)."""
    for node in list(graph.nodes):
        if node.op == "broadcast" or not all(graph.is_const(i) for i in node.inputs):
            continue
        if any(o in graph.outputs for o in node.outputs):
            continue
        results = evaluate(node, [graph.constants[i] for i in node.inputs])
        graph.nodes.remove(node)
        for name, result in zip(node.outputs, results, strict=True):
            dtype = graph.values[name].dtype
            graph.constants[name] = np.asarray(result).astype(dtype)


def _const_operand(graph: Graph, node: Node) -> tuple[int, np.ndarray] | None:
    """(index of the tensor operand, the constant) when exactly one operand is constant."""
    if len(node.inputs) != 2:
        return None
    a, b = (graph.is_const(i) for i in node.inputs)
    if a == b:
        return None
    index = 1 if a else 0
    const = graph.constants[node.inputs[1 - index]]
    shape = graph.values[node.inputs[index]].shape
    if tuple(np.broadcast_shapes(const.shape, shape)) != shape:
        return None
    return index, const


def fuse_relu(graph: Graph) -> None:
    for node in graph.nodes:
        found = _const_operand(graph, node) if node.op == "max" else None
        if found and not np.any(found[1]):
            node.op, node.inputs = "relu", [node.inputs[found[0]]]


def recognise_pools(graph: Graph) -> None:
    """Turn MLX's sliding-window patterns (reshape/as_strided + reduce) into ``pool`` nodes."""
    for node in [n for n in graph.nodes if n.op == "reduce"]:
        if node not in graph.nodes or node.attrs["kind"] not in ("max", "sum"):
            continue
        if tuple(node.attrs["axes"]) != (3, 4) or len(graph.values[node.inputs[0]].shape) != 6:
            continue
        squeeze = _single_consumer(graph, node.outputs[0])
        if squeeze is None or squeeze.op != "reshape":
            continue
        window = _window_source(graph, node.inputs[0])
        if window is None:
            continue
        source, kernel, strides, pads, dead = window
        kind = node.attrs["kind"]
        out = squeeze.outputs[0]
        shape, dtype = graph.values[out].shape, graph.values[out].dtype
        source, pads = _absorb_pad(graph, source, pads, kind, dead)
        position = graph.nodes.index(squeeze)
        after = graph.nodes[position + 1] if position + 1 < len(graph.nodes) else None
        for gone in [*dead, node, squeeze]:
            if gone in graph.nodes:
                graph.nodes.remove(gone)
        index = graph.nodes.index(after) if after is not None else len(graph.nodes)
        attrs = {
            "kind": "max" if kind == "max" else "avg",
            "kernel": kernel,
            "strides": strides,
            "pads_begin": pads[0],
            "pads_end": pads[1],
            "channels_last": True,
        }
        if kind == "max":
            graph.add_node("pool", [source], [(out, shape, dtype)], attrs, index=index)
            continue
        pooled = graph.fresh(out + "_avg")
        area = graph.add_const(graph.fresh("window_area"), np.asarray(np.prod(kernel), dtype))
        graph.add_node("pool", [source], [(pooled, shape, dtype)], attrs, index=index)
        graph.add_node("mul", [pooled, area], [(out, shape, dtype)], index=index + 1)


def recognise_upsampling(graph: Graph) -> None:
    """Turn MLX's nearest upsampling (rank-6 reshape, broadcast, reshape) into ``upsample``.

    ``(N, H, W, C) → (N, H, 1, W, 1, C) → (N, H, sh, W, sw, C) → (N, H·sh, W·sw, C)`` repeats
    every pixel ``sh × sw`` times; Core ML takes tensors of rank 5 at most.
    """
    users = graph.consumers()
    for split in [n for n in graph.nodes if n.op == "reshape"]:
        src = graph.values[split.inputs[0]].shape
        if len(src) != 4 or graph.values[split.outputs[0]].shape != (
            *src[:2],
            1,
            src[2],
            1,
            src[3],
        ):
            continue
        spread = _single_consumer(graph, split.outputs[0], users)
        if spread is None or spread.op != "broadcast":
            continue
        _, _, sh, _, sw, _ = graph.values[spread.outputs[0]].shape
        merge = _single_consumer(graph, spread.outputs[0], users)
        expected = (src[0], src[1] * sh, src[2] * sw, src[3])
        if (
            merge is None
            or merge.op != "reshape"
            or graph.values[merge.outputs[0]].shape != expected
        ):
            continue
        index = graph.nodes.index(split)
        for gone in (split, spread, merge):
            graph.nodes.remove(gone)
        node = Node(
            "upsample",
            [split.inputs[0]],
            merge.outputs,
            {"scales": (sh, sw), "channels_last": True},
        )
        graph.nodes.insert(index, node)


def _window_source(
    graph: Graph, name: str
) -> tuple[str, tuple[int, int], tuple[int, int], tuple, list[Node]] | None:
    producers = graph.producers()
    node = producers.get(name)
    if node is None:
        return None
    if node.op == "transpose" and tuple(node.attrs["perm"]) == (0, 1, 3, 2, 4, 5):
        split = producers.get(node.inputs[0])
        if (
            split is None
            or split.op != "reshape"
            or _single_consumer(graph, split.outputs[0]) is not node
        ):
            return None
        src = split.inputs[0]
        n, h, w, c = (graph.values[src].shape + (0, 0, 0, 0))[:4]
        if len(graph.values[src].shape) != 4:
            return None
        shape = graph.values[split.outputs[0]].shape
        if shape[0] != n or shape[5] != c or shape[1] * shape[2] != h or shape[3] * shape[4] != w:
            return None
        kernel = (shape[2], shape[4])
        return src, kernel, kernel, ((0, 0), (0, 0)), [split, node]
    if node.op == "as_strided" and node.attrs["offset"] == 0:
        flat = producers.get(node.inputs[0])
        if (
            flat is None
            or flat.op != "reshape"
            or _single_consumer(graph, flat.outputs[0]) is not node
        ):
            return None
        src = flat.inputs[0]
        if len(graph.values[src].shape) != 4:
            return None
        n, hp, wp, c = graph.values[src].shape
        shape, st = node.attrs["shape"], node.attrs["strides"]
        if len(shape) != 6 or shape[0] != n or shape[5] != c or c == 0 or wp == 0:
            return None
        sh, sw = st[1] // (wp * c), st[2] // c
        if tuple(st) != (hp * wp * c, sh * wp * c, sw * c, wp * c, c, 1):
            return None
        kernel = (shape[3], shape[4])
        if (hp - kernel[0]) // sh + 1 != shape[1] or (wp - kernel[1]) // sw + 1 != shape[2]:
            return None
        return src, kernel, (sh, sw), ((0, 0), (0, 0)), [flat, node]
    return None


def _absorb_pad(
    graph: Graph, source: str, pads: tuple, kind: str, dead: list[Node]
) -> tuple[str, tuple]:
    """Use the pool's own padding when the pad before it fills with what the pool ignores."""
    pad = graph.producers().get(source)
    users = graph.consumers().get(source, [])
    if pad is None or pad.op != "pad" or len(users) != 1 or source in graph.outputs:
        return source, pads
    begin, end, value = pad.attrs["pads_begin"], pad.attrs["pads_end"], pad.attrs["value"]
    if begin[0] or begin[3] or end[0] or end[3]:
        return source, pads
    if (kind == "max" and value != -np.inf) or (kind == "sum" and value != 0):
        return source, pads
    dead.append(pad)
    return pad.inputs[0], ((begin[1], begin[2]), (end[1], end[2]))


def _affine_step(graph: Graph, node: Node) -> tuple[str, np.ndarray, np.ndarray] | None:
    """``node`` as ``y = x * s + t`` with constant s, t: returns (x, s, t)."""
    if node.op not in _AFFINE:
        return None
    found = _const_operand(graph, node)
    if found is None:
        return None
    index, c = found
    x, c = node.inputs[index], c.astype(np.float64)
    one, zero = np.ones((), np.float64), np.zeros((), np.float64)
    if node.op == "add":
        return x, one, c
    if node.op == "sub":
        return (x, one, -c) if index == 0 else (x, -one, c)
    if node.op == "mul":
        return x, c, zero
    if index == 0:
        return x, 1.0 / c, zero
    return None


def collapse_affine(graph: Graph) -> None:
    """Collapse chains of add/sub/mul/div by constants into one ``mul`` and one ``add``."""
    changed = True
    while changed:
        changed = False
        users = graph.consumers()
        removed: set[int] = set()
        for node in list(graph.nodes):
            step = _affine_step(graph, node) if id(node) not in removed else None
            if step is None:
                continue
            x, s, t = step
            chain, last = [node], node
            while True:
                user = _single_consumer(graph, last.outputs[0], users)
                nxt = _affine_step(graph, user) if user is not None else None
                if nxt is None or nxt[0] != last.outputs[0]:
                    break
                _, s2, t2 = nxt
                s, t = s * s2, t * s2 + t2
                chain.append(user)
                last = user
            s, t = _strip(np.asarray(s)), _strip(np.asarray(t))
            if len(chain) <= int(not np.all(s == 1)) + int(bool(np.any(t))):
                continue
            index = graph.nodes.index(node)
            for gone in chain:
                graph.nodes.remove(gone)
                removed.add(id(gone))
            _emit_affine(graph, x, s, t, last.outputs[0], index)
            changed = True


def _strip(array: np.ndarray) -> np.ndarray:
    while array.ndim and array.shape[0] == 1:
        array = array[0]
    return array


def _emit_affine(graph: Graph, x: str, s: np.ndarray, t: np.ndarray, out: str, index: int) -> None:
    value = graph.values[out]
    dtype = value.dtype
    s, t = _strip(np.asarray(s)), _strip(np.asarray(t))
    current = x
    if not np.all(s == 1):
        scaled = out if not np.any(t) else graph.fresh(out + "_scale")
        graph.add_node(
            "mul",
            [current, graph.add_const(graph.fresh("scale"), s.astype(dtype))],
            [(scaled, value.shape, dtype)],
            index=index,
        )
        current, index = scaled, index + 1
    if current == x and not np.any(t):
        graph.add_node("identity", [x], [(out, value.shape, dtype)], index=index)
    elif np.any(t):
        graph.add_node(
            "add",
            [current, graph.add_const(graph.fresh("shift"), t.astype(dtype))],
            [(out, value.shape, dtype)],
            index=index,
        )


def _channel_affine(
    graph: Graph, name: str, channels: int, users: Users
) -> tuple[list[Node], np.ndarray, np.ndarray] | None:
    """The mul/add nodes after ``name`` acting per last-axis channel, as (nodes, s, t)."""
    nodes: list[Node] = []
    s, t = np.ones(channels), np.zeros(channels)
    current = name
    while True:
        user = _single_consumer(graph, current, users)
        step = _affine_step(graph, user) if user is not None else None
        if step is None or step[0] != current:
            break
        _, s2, t2 = step
        s2, t2 = _strip(s2), _strip(t2)
        if (
            s2.ndim > 1
            or t2.ndim > 1
            or (s2.ndim and s2.shape[0] != channels)
            or (t2.ndim and t2.shape[0] != channels)
        ):
            break
        s, t = s * s2, t * s2 + t2
        nodes.append(user)
        current = user.outputs[0]
    return (nodes, s, t) if nodes else None


def fold_affine_into_layers(graph: Graph) -> None:
    """Fold per-channel scale/shift into the conv before it; make ``matmul`` by a constant
    matrix (plus scale/shift) a ``linear`` node with bias."""
    # folding removes only the scale/shift nodes it absorbs: the consumers of every other
    # value stay as they are, so one index serves the whole pass
    users = graph.consumers()
    for node in list(graph.nodes):
        if (
            node.op == "conv"
            and len(node.inputs) >= 2
            and all(graph.is_const(i) for i in node.inputs[1:])
        ):
            _fold_conv(graph, node, users)
        elif (
            node.op == "matmul"
            and graph.is_const(node.inputs[1])
            and graph.constants[node.inputs[1]].ndim == 2
        ):
            _fold_linear(graph, node, users)


def _scaled(weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    # float32 weights are scaled in float32 (the scale rounded once): float64 costs twice as much
    work = np.float32 if weight.dtype == np.float32 else np.float64
    return weight.astype(work, copy=False) * scale.astype(work)


def _fold_conv(graph: Graph, node: Node, users: Users) -> None:
    weight = graph.constants[node.inputs[1]]
    channels = weight.shape[0]
    found = _channel_affine(graph, node.outputs[0], channels, users)
    if found is None:
        return
    nodes, s, t = found
    bias = graph.constants[node.inputs[2]] if len(node.inputs) > 2 else np.zeros(channels)
    dtype = graph.values[node.outputs[0]].dtype
    weight = _scaled(weight, s.reshape(-1, *[1] * (weight.ndim - 1)))
    new_w = graph.add_const(graph.fresh("conv_weight"), weight.astype(dtype, copy=False))
    new_b = graph.add_const(graph.fresh("conv_bias"), (bias * s + t).astype(dtype))
    out = nodes[-1].outputs[0]
    for gone in nodes:
        graph.nodes.remove(gone)
    old = node.outputs[0]
    node.inputs = [node.inputs[0], new_w, new_b]
    node.outputs = [out]
    graph.values.pop(old, None)


def _fold_linear(graph: Graph, node: Node, users: Users) -> None:
    weight = graph.constants[node.inputs[1]]
    channels = weight.shape[1]
    dtype = graph.values[node.outputs[0]].dtype
    found = _channel_affine(graph, node.outputs[0], channels, users)
    node.op = "linear"
    if found is None:
        return
    nodes, s, t = found
    new_w = graph.add_const(graph.fresh("linear_weight"), _scaled(weight, s).astype(dtype))
    new_b = graph.add_const(graph.fresh("linear_bias"), t.astype(dtype))
    out = nodes[-1].outputs[0]
    for gone in nodes:
        graph.nodes.remove(gone)
    old = node.outputs[0]
    node.inputs = [node.inputs[0], new_w, new_b]
    node.outputs = [out]
    graph.values.pop(old, None)


def unflatten_linears(graph: Graph) -> None:
    """Drop the reshapes MLX puts around a ``linear`` on a tensor of rank 3 or more.

    ``(..., K) → (M, K) → linear → (M, N) → (..., N)`` becomes ``linear`` on the last axis: a
    transformer then carries no reshape per linear layer.
    """
    users, producers = graph.consumers(), graph.producers()
    for node in [n for n in graph.nodes if n.op == "linear"]:
        flat = producers.get(node.inputs[0])
        if flat is None or flat.op != "reshape" or graph.is_const(flat.inputs[0]):
            continue
        src = graph.values[flat.inputs[0]].shape
        flat_shape = (math.prod(src[:-1]), src[-1]) if len(src) >= 3 else None
        if graph.values[flat.outputs[0]].shape != flat_shape:
            continue
        back = _single_consumer(graph, node.outputs[0], users)
        if _single_consumer(graph, flat.outputs[0], users) is not node or back is None:
            continue
        if back.op != "reshape" or graph.values[back.outputs[0]].shape != (
            *src[:-1],
            graph.values[node.outputs[0]].shape[-1],
        ):
            continue
        graph.nodes.remove(flat)
        graph.nodes.remove(back)
        graph.values.pop(node.outputs[0])
        node.inputs = [flat.inputs[0], *node.inputs[1:]]
        node.outputs = list(back.outputs)


def _is_noop(graph: Graph, node: Node) -> bool:
    src = graph.values[node.inputs[0]] if node.inputs else None
    out = graph.values[node.outputs[0]]
    if src is None or graph.is_const(node.inputs[0]) or src.shape != out.shape:
        return False
    if node.op in ("reshape", "broadcast"):
        return True
    if node.op == "transpose":
        return tuple(node.attrs["perm"]) == tuple(range(len(out.shape)))
    if node.op == "cast":
        return src.dtype == out.dtype
    if node.op == "pad":
        return not any(node.attrs["pads_begin"]) and not any(node.attrs["pads_end"])
    if node.op == "slice":
        return all(s == 1 for s in node.attrs["strides"])
    if node.op in ("mul", "div", "add", "sub"):
        found = _const_operand(graph, node)
        if found is None or found[0] != 0:
            return False
        neutral = 1 if node.op in ("mul", "div") else 0
        return bool(np.all(found[1] == neutral))
    return False


def remove_noops(graph: Graph) -> None:
    users = graph.consumers()
    for node in list(graph.nodes):
        if _is_noop(graph, node):
            bypass(graph, node, node.inputs[0], users)
    remove_identities(graph)
