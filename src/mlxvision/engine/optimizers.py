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


def newton_schulz(matrix: mx.array, steps: int = 3, dtype: mx.Dtype = mx.bfloat16) -> mx.array:
    """An approximately orthogonal matrix with the singular vectors of ``matrix`` (2-D).

    Muon's quintic Newton-Schulz iteration ``X ← aX + (bA + cA²)X`` with ``A = XXᵀ`` and
    ``(a, b, c) = (3.4445, -4.7750, 2.0315)``, started from ``matrix / ‖matrix‖`` and computed
    in ``dtype``: it pushes every singular value towards 1 (into roughly [0.7, 1.2] after a
    few steps) without a decomposition. Returned in ``matrix``'s dtype.

    Example:
        >>> q = newton_schulz(mx.random.normal((4, 8), key=mx.random.key(0)), steps=5)
        >>> s = mx.linalg.svd(q.astype(mx.float32), compute_uv=False, stream=mx.cpu)
        >>> bool((s > 0.6).all() and (s < 1.3).all())
        True
    """
    if matrix.ndim != 2:
        raise ValueError(f"matrix: expected a 2-D array, got shape {matrix.shape}")
    a, b, c = 3.4445, -4.7750, 2.0315
    x = matrix.astype(dtype)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / (mx.linalg.norm(x.astype(mx.float32)).astype(dtype) + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return (x.T if tall else x).astype(matrix.dtype)


class Muon(optim.Optimizer):
    """Muon as the airbench CIFAR-10 record uses it, for convolution filters and weight
    matrices: Nesterov heavy-ball momentum, the update orthogonalised by
    :func:`newton_schulz`, and each weight renormalised to Frobenius norm ``sqrt(rows)``
    before its step.

    For a parameter ``W`` (rows = output channels, everything else flattened) and gradient
    ``g``: ``m ← μm + g``; ``u = g + μm`` (Nesterov) or ``m``; ``W ← W·sqrt(rows)/‖W‖``;
    ``W ← W − lr·NS(u)``. It differs from ``mlx.optimizers.Muon`` in three ways, all as in
    the record: no momentum dampening, no weight decay, and the weight normalisation (which
    keeps a layer followed by BatchNorm at a fixed scale, so the learning rate alone sets the
    step's angle). Use it for ≥ 2-D weights only, next to SGD or Adam for the rest
    (:func:`grouped`).

    Example:
        >>> import mlx.nn as nn
        >>> layer = nn.Conv2d(8, 16, 3, bias=False)
        >>> opt = Muon(learning_rate=0.1)
        >>> opt.update(layer, {"weight": mx.ones_like(layer.weight)})
        >>> layer.weight.shape, sorted(opt.state["weight"])
        ((16, 3, 3, 8), ['m'])
    """

    def __init__(
        self,
        learning_rate: float | Callable[[mx.array], mx.array],
        momentum: float = 0.6,
        nesterov: bool = True,
        ns_steps: int = 3,
        ns_dtype: mx.Dtype = mx.bfloat16,
        normalize_weights: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum: expected a value in [0, 1), got {momentum}")
        self._maybe_schedule("learning_rate", learning_rate)
        self.momentum = momentum
        self.nesterov = nesterov
        self.ns_steps = int(ns_steps)
        self.ns_dtype = ns_dtype
        self.normalize_weights = normalize_weights

    def init_single(self, parameter: mx.array, state: dict) -> None:
        if parameter.ndim < 2:
            raise ValueError(
                f"Muon: expected weights of 2 or more dimensions, got shape {parameter.shape}; "
                "optimize biases and norms with another optimizer (see grouped())"
            )
        state["m"] = mx.zeros_like(parameter)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        momentum = self.momentum * state["m"] + gradient
        state["m"] = momentum
        direction = gradient + self.momentum * momentum if self.nesterov else momentum
        if self.normalize_weights:
            norm = mx.linalg.norm(parameter.astype(mx.float32))
            parameter = parameter * (parameter.shape[0] ** 0.5 / norm).astype(parameter.dtype)
        rows = direction.reshape(direction.shape[0], -1)
        update = newton_schulz(rows, self.ns_steps, self.ns_dtype).reshape(parameter.shape)
        lr = self.learning_rate.astype(parameter.dtype)
        return parameter - lr * update.astype(parameter.dtype)
