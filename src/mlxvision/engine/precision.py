"""Precision policies: float32, or bfloat16/float16 compute over float32 master weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map

PRECISIONS = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}


def compute_dtype(precision: str) -> mx.Dtype:
    """The dtype a precision policy computes in.

    Example:
        >>> compute_dtype("bfloat16")
        mlx.core.bfloat16
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


@contextlib.contextmanager
def computing_in(model: nn.Module, dtype: mx.Dtype) -> Iterator[None]:
    """Inside, ``model``'s trainable parameters are copies cast to ``dtype`` (as a training step
    of that precision computes with them); its float32 master weights are put back after.

    Example:
        >>> import mlx.nn as nn
        >>> layer = nn.Linear(2, 2)
        >>> with computing_in(layer, mx.bfloat16):
        ...     layer(mx.ones((1, 2), mx.bfloat16)).dtype
        mlx.core.bfloat16
        >>> layer.weight.dtype
        mlx.core.float32
    """
    if dtype == mx.float32:
        yield
        return
    master = model.trainable_parameters()
    model.update(tree_map(lambda p: p.astype(dtype), master))
    try:
        yield
    finally:
        model.update(master)


class LossScaler:
    """Dynamic loss scaling for float16: grow the scale after a run of finite steps, halve it
    (and skip the update) when a gradient overflows. State lives in arrays, updated on the
    device inside the compiled step.

    Example:
        >>> scaler = LossScaler(initial=8.0, growth_interval=2)
        >>> scaler.update(mx.array(True)); scaler.update(mx.array(True))
        >>> scaler.state["scale"].item()
        16.0
        >>> scaler.update(mx.array(False)); scaler.state["scale"].item()
        8.0
    """

    def __init__(self, initial: float = 2.0**15, growth_interval: int = 2000) -> None:
        self.growth_interval = int(growth_interval)
        self.state = {"scale": mx.array(float(initial)), "good_steps": mx.array(0)}

    @property
    def scale(self) -> mx.array:
        return self.state["scale"]

    def update(self, finite: mx.array) -> None:
        good = mx.where(finite, self.state["good_steps"] + 1, 0)
        grow = good >= self.growth_interval
        scale = self.state["scale"]
        self.state["scale"] = mx.where(finite, mx.where(grow, scale * 2, scale), scale * 0.5)
        self.state["good_steps"] = mx.where(grow, 0, good)
