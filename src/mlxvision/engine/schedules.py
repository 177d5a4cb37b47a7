"""Learning-rate schedules: functions of the optimizer's step count, evaluated on the device.

Each returns a callable ``schedule(step) -> learning rate`` that MLX optimizers accept as
``learning_rate`` (they call it with their step counter inside the compiled step). Step counts
start at 0, as in PyTorch's schedulers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import mlx.core as mx

Schedule = Callable[[mx.array], mx.array]


def _check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name}: expected a positive number, got {value}")


def warmup_cosine(
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    end_lr: float = 0.0,
    warmup_start_lr: float = 0.0,
) -> Schedule:
    """Linear warmup from ``warmup_start_lr`` to ``base_lr``, then cosine decay to ``end_lr``.

    Example:
        >>> s = warmup_cosine(1.0, total_steps=10, warmup_steps=2)
        >>> [round(s(mx.array(t)).item(), 3) for t in (0, 1, 2, 6, 10)]
        [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    _check_positive("total_steps", total_steps)
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps: expected 0 <= warmup_steps < {total_steps}")
    decay_steps = total_steps - warmup_steps

    def schedule(step: mx.array) -> mx.array:
        step = mx.array(step).astype(mx.float32)
        warm = warmup_start_lr + (base_lr - warmup_start_lr) * step / max(warmup_steps, 1)
        t = mx.clip((step - warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = end_lr + 0.5 * (base_lr - end_lr) * (1.0 + mx.cos(math.pi * t))
        return mx.where(step < warmup_steps, warm, cosine)

    return schedule


def one_cycle(
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal: str = "cos",
) -> Schedule:
    """PyTorch's ``OneCycleLR`` (two phases): from ``max_lr/div_factor`` up to ``max_lr`` over
    ``pct_start`` of the steps, then down to ``max_lr/div_factor/final_div_factor``.

    Example:
        >>> s = one_cycle(1.0, total_steps=100, anneal="linear")
        >>> [round(s(mx.array(t)).item(), 4) for t in (0, 29, 99)]
        [0.04, 1.0, 0.0]
    """
    _check_positive("total_steps", total_steps)
    if not 0 < pct_start < 1:
        raise ValueError(f"pct_start: expected a value in (0, 1), got {pct_start}")
    if anneal not in ("cos", "linear"):
        raise ValueError(f"anneal: expected 'cos' or 'linear', got {anneal!r}")
    initial = max_lr / div_factor
    final = initial / final_div_factor
    peak = float(pct_start * total_steps) - 1
    end = float(total_steps) - 1

    def interpolate(start, stop, pct):
        if anneal == "cos":
            return stop + (start - stop) / 2.0 * (mx.cos(math.pi * pct) + 1)
        return (stop - start) * pct + start

    def schedule(step: mx.array) -> mx.array:
        step = mx.array(step).astype(mx.float32)
        up = interpolate(initial, max_lr, mx.clip(step / peak, 0.0, 1.0))
        down = interpolate(max_lr, final, mx.clip((step - peak) / (end - peak), 0.0, 1.0))
        return mx.where(step <= peak, up, down)

    return schedule


def multistep(base_lr: float, milestones: Sequence[int], gamma: float = 0.1) -> Schedule:
    """``base_lr · gamma^k`` where ``k`` milestones have been reached (PyTorch's MultiStepLR).

    Example:
        >>> s = multistep(1.0, milestones=[3, 6], gamma=0.5)
        >>> [s(mx.array(t)).item() for t in (0, 3, 5, 6)]
        [1.0, 0.5, 0.5, 0.25]
    """
    marks = mx.array(sorted(int(m) for m in milestones))

    def schedule(step: mx.array) -> mx.array:
        passed = (mx.array(step) >= marks).sum().astype(mx.float32)
        return base_lr * mx.power(mx.array(gamma, mx.float32), passed)

    return schedule


def step_decay(base_lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``base_lr · gamma^(step // step_size)`` (PyTorch's StepLR).

    Example:
        >>> s = step_decay(1.0, step_size=2, gamma=0.1)
        >>> [round(s(mx.array(t)).item(), 4) for t in (0, 1, 2, 4)]
        [1.0, 1.0, 0.1, 0.01]
    """
    _check_positive("step_size", step_size)

    def schedule(step: mx.array) -> mx.array:
        k = (mx.array(step) // step_size).astype(mx.float32)
        return base_lr * mx.power(mx.array(gamma, mx.float32), k)

    return schedule


def linear_decay(
    base_lr: float, total_steps: int, end_lr: float = 0.0, warmup_steps: int = 0
) -> Schedule:
    """Linear warmup from 0 over ``warmup_steps``, then linear decay to ``end_lr``.

    Example:
        >>> s = linear_decay(1.0, total_steps=4)
        >>> [s(mx.array(t)).item() for t in (0, 2, 4)]
        [1.0, 0.5, 0.0]
    """
    _check_positive("total_steps", total_steps)

    def schedule(step: mx.array) -> mx.array:
        step = mx.array(step).astype(mx.float32)
        warm = base_lr * step / max(warmup_steps, 1)
        t = mx.clip((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0, 1.0)
        return mx.where(step < warmup_steps, warm, base_lr + (end_lr - base_lr) * t)

    return schedule
