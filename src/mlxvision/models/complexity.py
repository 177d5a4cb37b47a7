"""Counting a model's multiply-adds from a trace of its forward pass.

``mx.export_function`` with a callback reports every primitive of the forward pass with the
shapes of its inputs and outputs, without computing anything (weights may stay unevaluated).
Multiply-adds are counted where nearly all of a vision model's arithmetic is: convolutions and
matrix products (linear layers, attention). Elementwise work (norms, activations, pooling) is
left out, as in the usual MACs tables (torchvision's "GFLOPS" column counts the same way).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ..ops import fast_conv_disabled


def count_multiply_adds(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-adds of one eval-mode forward pass of ``model`` on an input of ``input_shape``.

    Example:
        >>> import mlx.nn as nn
        >>> count_multiply_adds(nn.Conv2d(3, 8, kernel_size=3, padding=1), (1, 4, 4, 3))
        3456
        >>> count_multiply_adds(nn.Linear(5, 2), (1, 5))
        10
    """
    events: list[dict[str, Any]] = []
    was_training = model.training
    model.eval()
    try:
        with fast_conv_disabled():  # the trace must hold MLX's own primitives
            mx.export_function(events.append, lambda x: model(x), mx.zeros(tuple(input_shape)))
    finally:
        model.train(was_training)
    return sum(_primitive_macs(e) for e in events if e.get("type") == "primitive")


def _shape(entry: tuple) -> tuple[int, ...]:
    return tuple(entry[1])


def _primitive_macs(event: dict[str, Any]) -> int:
    name = event["name"]
    inputs = [_shape(a) for a in event["inputs"]]
    outputs = [_shape(a) for a in event["outputs"]]
    if name == "Convolution":
        # weight (O, kh, kw, I / groups): each output element needs kh·kw·I/groups products
        return math.prod(outputs[0]) * math.prod(inputs[1][1:])
    if name in ("Matmul", "AddMM", "BlockMaskedMM", "GatherMM"):
        return math.prod(outputs[0]) * inputs[0][-1]
    if name == "ScaledDotProductAttention":
        (*lead, queries, depth), keys = inputs[0], inputs[1][-2]
        return 2 * math.prod(lead) * queries * keys * depth
    return 0
