"""Exponential moving average of a model's weights, updated on the device."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map


class EMA:
    """``shadow ← d·shadow + (1 − d)·weights`` after each step, over all of the model's arrays
    (BatchNorm statistics included, as timm's ``ModelEmaV2``).

    With ``warmup=True`` the decay starts low and rises as ``min(decay, (1 + n) / (10 + n))``
    after ``n`` updates, so early weights do not dominate a short run.

    Example:
        >>> import mlx.nn as nn
        >>> model = nn.Linear(2, 1)
        >>> w0 = mx.array(model.weight)
        >>> ema = EMA(model, decay=0.5, warmup=False)
        >>> _ = model.update(tree_map(mx.zeros_like, model.parameters()))
        >>> ema.update()
        >>> bool(mx.allclose(ema.shadow["weight"], 0.5 * w0))
        True
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay: expected a value in (0, 1), got {decay}")
        self.model = model
        self.decay = float(decay)
        self.warmup = warmup
        shadow = tree_map(lambda p: mx.array(p), model.parameters())
        mx.eval(shadow)
        self.state = {"shadow": shadow, "updates": mx.array(0)}
        self._update = mx.compile(
            self._update_impl, inputs=[model.state, self.state], outputs=[self.state]
        )

    @property
    def shadow(self) -> dict:
        return self.state["shadow"]

    def current_decay(self, updates: mx.array) -> mx.array:
        if not self.warmup:
            return mx.array(self.decay)
        n = updates.astype(mx.float32)
        return mx.minimum(self.decay, (1.0 + n) / (10.0 + n))

    def _update_impl(self) -> None:
        d = self.current_decay(self.state["updates"])
        self.state["shadow"] = tree_map(
            lambda s, p: d * s + (1.0 - d) * p.astype(s.dtype),
            self.state["shadow"],
            self.model.parameters(),
        )
        self.state["updates"] = self.state["updates"] + 1

    def update(self) -> None:
        """Fold the model's current weights into the average (lazy; no host sync)."""
        self._update()

    @contextlib.contextmanager
    def swapped(self) -> Iterator[nn.Module]:
        """Within the block, the model holds the averaged weights; its own come back after.

        Example:
            >>> import mlx.nn as nn
            >>> model = nn.Linear(2, 1); ema = EMA(model)
            >>> with ema.swapped() as averaged:
            ...     _ = averaged(mx.zeros((1, 2)))
        """
        own = self.model.parameters()
        self.model.update(self.shadow)
        try:
            yield self.model
        finally:
            self.model.update(own)
