"""Loss functions with the signature ``loss_fn(logits, labels) -> scalar``."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def cross_entropy(logits: mx.array, labels: mx.array) -> mx.array:
    """Mean softmax cross-entropy of integer ``labels`` under ``logits`` (N×classes).

    Example:
        >>> import mlx.core as mx
        >>> round(cross_entropy(mx.zeros((2, 4)), mx.array([0, 3])).item(), 4)
        1.3863
    """
    return nn.losses.cross_entropy(logits, labels, reduction="mean")
