"""MLX's SGD, Adam and AdamW computed so that a step's new parameters and optimizer state take
the memory of the old ones.

Under :func:`mlx.core.compile` (and in an optimizer's own compiled update), MLX fuses an
update such as SGD's ``v ← μv + g; p ← p − lr·v`` into one kernel with two outputs, and a
kernel with several outputs does not write each into an input's buffer (the array-level
measurements are in ``benchmarks/results/cpu.md``). Every step then holds the old
and the new parameters and state at once: 5× the parameters' size with momentum SGD, against
3× (parameters, momentum, gradients) when each output reuses its input. The classes here
compute the same updates with each new state array as a separate kernel's output
(:func:`mlx.core.contiguous`, the identity on these arrays, ends the fused kernel), so each
kernel has one output and reuses its input's buffer (for arrays of at least
:data:`LEAN_MIN_SIZE` values). VGG-11 (129 M parameters) training on a
CPU, batch 16: 2,485 → 1,524 MB peak, 10.6 → 11.4 images/s
(``benchmarks/results/cpu.md``).

:func:`use_lean_updates` gives an optimizer of exactly MLX's class (also inside
:class:`mlx.optimizers.MultiOptimizer`) these classes, in place, as
:func:`~mlxvision.ops.use_fast_layers` does for layers; the results are equal bit for bit
(tested on the CPU).
:func:`~mlxvision.engine.make_train_step` does it unless ``MLXVISION_LEAN_UPDATES=0``.
On an H200 (bf16, ``benchmarks/results/gpu_throughput.md``): ResNet-18's peak 1,376 →
1,341–1,343 MB (PyTorch: 1,348) at 0.90–0.93× PyTorch's speed against 0.93× with MLX's
update; VGG-11's 2,612 → 1,719 MB at 6% less speed. Models of many small arrays lose a
kernel launch per array kept apart, so arrays under :data:`LEAN_MIN_SIZE` values keep MLX's
fused update (EfficientNet-B0: 15 of 213 arrays apart, 8% less speed between medians of
overlapping runs).

Example:
    >>> import mlx.optimizers as optim
    >>> opt = use_lean_updates(optim.SGD(learning_rate=0.1, momentum=0.9))
    >>> type(opt).__name__, isinstance(opt, optim.SGD)
    ('LeanSGD', True)
"""

from __future__ import annotations

from typing import TypeVar

import mlx.core as mx
import mlx.optimizers as optim

from ..backend import switch_setting

OptimizerT = TypeVar("OptimizerT", bound=optim.Optimizer)

LEAN_MIN_SIZE = 65_536
"""Arrays with fewer values keep MLX's fused update: their memory is negligible, and each
array kept apart costs a kernel launch (EfficientNet-B0: 15 of its 213 parameter arrays hold
70% of its values; ResNet-18: 13 of 62 hold 98%)."""


def _apart(new_state: mx.array) -> mx.array:
    """``new_state`` as its own kernel's output, so that kernel reuses the old state's
    buffer; small arrays are left in the fused update."""
    return mx.contiguous(new_state) if new_state.size >= LEAN_MIN_SIZE else new_state


class LeanSGD(optim.SGD):
    """:class:`mlx.optimizers.SGD` whose momentum buffer is a separate kernel's output.

    Example:
        >>> import mlx.nn as nn
        >>> layer = nn.Linear(2, 2)
        >>> opt = LeanSGD(learning_rate=0.1, momentum=0.9)
        >>> opt.update(layer, {"weight": mx.ones((2, 2)), "bias": mx.ones(2)})
        >>> opt.state["bias"]["v"].tolist()
        [1.0, 1.0]
    """

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        if self.weight_decay != 0:
            gradient = gradient + self.weight_decay * parameter
        lr = self.learning_rate.astype(gradient.dtype)
        if self.momentum <= 0:
            return parameter - lr * gradient
        velocity = self.momentum * state.get("v")
        if self.dampening > 0:
            velocity = velocity + (1 - self.dampening) * gradient
        else:
            velocity = velocity + gradient
        state["v"] = velocity = _apart(velocity)
        step = gradient + self.momentum * velocity if self.nesterov else velocity
        return parameter - lr * step


class LeanAdam(optim.Adam):
    """:class:`mlx.optimizers.Adam` whose moments are separate kernels' outputs.

    Example:
        >>> import mlx.nn as nn
        >>> layer = nn.Linear(2, 2)
        >>> opt = LeanAdam(learning_rate=0.1)
        >>> opt.update(layer, {"weight": mx.ones((2, 2)), "bias": mx.ones(2)})
        >>> [round(v, 3) for v in opt.state["bias"]["m"].tolist()]
        [0.1, 0.1]
    """

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        lr = self.learning_rate.astype(gradient.dtype)
        b1, b2 = self.betas
        first = _apart(b1 * state["m"] + (1 - b1) * gradient)
        second = _apart(b2 * state["v"] + (1 - b2) * mx.square(gradient))
        state["m"], state["v"] = first, second
        if not self.bias_correction:
            return parameter - lr * first / (mx.sqrt(second) + self.eps)
        c1 = (lr / (1 - b1**self.step)).astype(gradient.dtype)
        c2 = mx.rsqrt(1 - b2**self.step).astype(gradient.dtype)
        return parameter - c1 * first / (mx.sqrt(second) * c2 + self.eps)


class LeanAdamW(optim.AdamW):
    """:class:`mlx.optimizers.AdamW`: decoupled weight decay, then :class:`LeanAdam`'s step.

    Example:
        >>> import mlx.nn as nn
        >>> layer = nn.Linear(2, 2)
        >>> opt = LeanAdamW(learning_rate=0.1, weight_decay=0.01)
        >>> opt.update(layer, {"weight": mx.zeros((2, 2)), "bias": mx.zeros(2)})
        >>> sorted(opt.state["bias"])
        ['m', 'v']
    """

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        lr = self.learning_rate.astype(gradient.dtype)
        decayed = parameter * (1 - lr * self.weight_decay)
        return LeanAdam.apply_single(self, gradient, decayed, state)


LEAN_CLASSES: dict[type, type] = {optim.SGD: LeanSGD, optim.Adam: LeanAdam, optim.AdamW: LeanAdamW}


def use_lean_updates(optimizer: OptimizerT, enabled: bool = True) -> OptimizerT:
    """Give ``optimizer`` (and each part of a :class:`mlx.optimizers.MultiOptimizer`) the lean
    class of its exact MLX class, in place; other classes are left alone. ``enabled=False``
    gives MLX's classes back. State, schedules and hyperparameters are untouched. Returns
    ``optimizer``.

    Example:
        >>> import mlx.optimizers as optim
        >>> opt = optim.AdamW(learning_rate=1e-3)
        >>> type(use_lean_updates(opt)).__name__, type(use_lean_updates(opt, False)).__name__
        ('LeanAdamW', 'AdamW')
    """
    swaps = LEAN_CLASSES if enabled else {lean: plain for plain, lean in LEAN_CLASSES.items()}
    if type(optimizer) in swaps:
        optimizer.__class__ = swaps[type(optimizer)]
    for part in getattr(optimizer, "optimizers", []):
        use_lean_updates(part, enabled)
    return optimizer


def lean_updates_by_default() -> bool:
    """Whether :func:`~mlxvision.engine.make_train_step` gives optimizers their lean class:
    yes unless ``MLXVISION_LEAN_UPDATES=0``.

    Example:
        >>> isinstance(lean_updates_by_default(), bool)
        True
    """
    return switch_setting("MLXVISION_LEAN_UPDATES") is not False
