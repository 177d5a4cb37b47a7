"""Loss functions with the signature ``loss_fn(logits, targets) -> scalar``.

``targets`` are integer class labels ``(N,)`` or class probabilities ``(N, classes)`` (the soft
targets of MixUp/CutMix or label smoothing).
"""

from __future__ import annotations

import mlx.core as mx


def cross_entropy(
    logits: mx.array,
    targets: mx.array,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> mx.array:
    """Softmax cross-entropy, computed in float32, with optional label smoothing.

    With smoothing ``ε`` the target of each sample is ``(1 - ε)·onehot + ε/classes`` (as in
    PyTorch's ``CrossEntropyLoss(label_smoothing=ε)``). ``reduction`` is ``"mean"``, ``"sum"`` or
    ``"none"`` (one loss per sample).

    Example:
        >>> import mlx.core as mx
        >>> round(cross_entropy(mx.zeros((2, 4)), mx.array([0, 3])).item(), 4)
        1.3863
        >>> soft = mx.array([[0.5, 0.5, 0.0, 0.0]])
        >>> round(cross_entropy(mx.zeros((1, 4)), soft).item(), 4)
        1.3863
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1), got {label_smoothing}")
    logits = logits.astype(mx.float32)
    log_probs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    classes = logits.shape[-1]
    if targets.ndim == logits.ndim:
        if targets.shape != logits.shape:
            raise ValueError(
                f"targets: soft targets must have the logits' shape {logits.shape}, "
                f"got {targets.shape}"
            )
        probs = targets.astype(mx.float32)
        if label_smoothing:
            probs = probs * (1.0 - label_smoothing) + label_smoothing / classes
        losses = -(probs * log_probs).sum(axis=-1)
    elif targets.ndim == logits.ndim - 1:
        picked = mx.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
        losses = -picked
        if label_smoothing:
            losses = (1.0 - label_smoothing) * losses - label_smoothing * log_probs.mean(axis=-1)
    else:
        raise ValueError(
            f"targets: expected labels of shape {logits.shape[:-1]} or probabilities of shape "
            f"{logits.shape}, got {targets.shape}"
        )
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")


def label_smoothing_loss(epsilon: float):
    """``cross_entropy`` with label smoothing ``epsilon``, as a two-argument loss function.

    Example:
        >>> import mlx.core as mx
        >>> loss = label_smoothing_loss(0.1)
        >>> round(loss(mx.zeros((1, 10)), mx.array([3])).item(), 4)
        2.3026
    """
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon: expected a value in [0, 1), got {epsilon}")

    def loss(logits: mx.array, targets: mx.array, reduction: str = "mean") -> mx.array:
        return cross_entropy(logits, targets, label_smoothing=epsilon, reduction=reduction)

    loss.__name__ = f"cross_entropy_ls{epsilon:g}"
    loss.sample_mean = True
    return loss


cross_entropy.sample_mean = True


def is_sample_mean(loss_fn) -> bool:
    """Whether ``loss_fn`` is known to return the mean of per-sample losses: mlxvision's own,
    or any function with the attribute ``sample_mean = True``.

    A batch may then be computed in parts and their losses and gradients combined by size
    (:mod:`mlxvision.engine.streams`).

    Example:
        >>> is_sample_mean(cross_entropy), is_sample_mean(lambda logits, targets: logits.sum())
        (True, False)
    """
    return bool(getattr(loss_fn, "sample_mean", False))
