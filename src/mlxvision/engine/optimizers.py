"""Optimizers with parameter groups: no weight decay on norms and biases, per-group settings."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx
import mlx.optimizers as optim

ParamFilter = Callable[[str, mx.array], bool]


def is_norm_or_bias(path: str, parameter: mx.array) -> bool:
    """True for parameters that weight decay should skip: biases and norm scales (1-D).

    Example:
        >>> is_norm_or_bias("bn1.weight", mx.ones(8))
        True
        >>> is_norm_or_bias("conv.weight", mx.ones((8, 3)))
        False
    """
    return parameter.ndim <= 1


def grouped(groups: Sequence[tuple[str | ParamFilter, optim.Optimizer]]) -> optim.Optimizer:
    """One optimizer per group of parameters, each with its own settings (learning rate, ...).

    A group is chosen by a shell-style pattern over the parameter path (``"fc.*"``) or a
    predicate ``(path, parameter) -> bool``; the first matching group wins and the last group is
    the fallback (its selector is ignored; use ``"*"``).

    Example:
        >>> opt = grouped([("fc2.*", optim.SGD(learning_rate=0.1)), ("*", optim.SGD(1e-3))])
        >>> type(opt).__name__
        'MultiOptimizer'
    """
    if not groups:
        raise ValueError("groups: expected at least one (selector, optimizer) pair")
    filters = [_as_filter(selector) for selector, _ in groups[:-1]]
    return optim.MultiOptimizer([opt for _, opt in groups], filters)


def _as_filter(selector: str | ParamFilter) -> ParamFilter:
    if callable(selector):
        return selector
    return lambda path, _: fnmatch.fnmatchcase(path, selector)


def with_weight_decay(
    optimizer_class: type[optim.Optimizer],
    weight_decay: float,
    *,
    decay_norm_and_bias: bool = False,
    **settings: Any,
) -> optim.Optimizer:
    """``optimizer_class(weight_decay=..., **settings)`` that skips biases and norm parameters.

    Works with optimizers that take ``weight_decay`` (``SGD``, ``AdamW``, ``Lion``, ...).

    Example:
        >>> opt = with_weight_decay(optim.SGD, 5e-4, learning_rate=0.1, momentum=0.9)
        >>> [o.weight_decay for o in opt.optimizers]
        [0.0, 0.0005]
    """
    if decay_norm_and_bias:
        return optimizer_class(weight_decay=weight_decay, **settings)
    return optim.MultiOptimizer(
        [
            optimizer_class(weight_decay=0.0, **settings),
            optimizer_class(weight_decay=weight_decay, **settings),
        ],
        [is_norm_or_bias],
    )
