"""Pictures of a run: training curves and a confusion matrix (needs matplotlib).

Example:
    >>> import tempfile
    >>> history = [{"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 0.9, "val_accuracy": 0.6},
    ...            {"epoch": 2, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7}]
    >>> plot_history(history, tempfile.mkdtemp() + "/curves.png").suffix
    '.png'
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._files import atomic_path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'mlxvision[plot]'") from None
    return plt


def plot_history(history: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Loss and accuracy per epoch, training next to validation, as one PNG.

    ``history`` is what :meth:`~mlxvision.engine.Trainer.fit` returns: one record per epoch
    with ``epoch``, ``loss`` and ``accuracy``, and ``val_*`` / ``ema_val_*`` where present.
    Returns the path written.

    Example:
        >>> import tempfile
        >>> history = [{"epoch": 1, "loss": 1.2, "accuracy": 0.6},
        ...            {"epoch": 2, "loss": 0.7, "accuracy": 0.8}]
        >>> plot_history(history, tempfile.mkdtemp() + "/curves.png").name
        'curves.png'
    """
    if not history:
        raise ValueError("plot_history: the history is empty (train at least one epoch)")
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((loss_ax, "loss", "Loss"), (acc_ax, "accuracy", "Accuracy (%)")):
        scale = 100 if metric == "accuracy" else 1
        for prefix, name in (("", "train"), ("val_", "validation"), ("ema_val_", "EMA")):
            values = [r.get(prefix + metric) for r in history]
            if all(v is not None for v in values):
                ax.plot(epochs, [scale * v for v in values], marker="o", label=name)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.tight_layout()
    return _save(figure, path, plt)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[float]], classes: Sequence[str], path: str | os.PathLike
) -> Path:
    """A confusion matrix (rows: true class, columns: predicted) with counts in the cells.

    Example:
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/c.png"
        >>> plot_confusion_matrix([[5, 1], [0, 4]], ["cat", "dog"], path).name
        'c.png'
    """
    import numpy as np

    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(classes):
        raise ValueError(
            f"plot_confusion_matrix: expected a {len(classes)}×{len(classes)} matrix for "
            f"{len(classes)} classes, got shape {counts.shape}"
        )
    plt = _pyplot()
    size = max(4.0, 0.5 * len(classes) + 2)
    figure, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    if len(classes) <= 30:
        threshold = counts.max() / 2 if counts.size else 0
        for i in range(len(classes)):
            for j in range(len(classes)):
                color = "white" if counts[i, j] > threshold else "black"
                ax.text(j, i, f"{counts[i, j]:g}", ha="center", va="center", color=color, size=8)
    figure.tight_layout()
    return _save(figure, path, plt)


def _save(figure, path: str | os.PathLike, plt) -> Path:
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            figure.savefig(tmp, dpi=110)
    finally:
        plt.close(figure)
    return path
