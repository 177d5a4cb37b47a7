"""``Trainer``: a thin loop over the compiled steps, with a progress bar and epoch summaries."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from tqdm.auto import tqdm

from .losses import cross_entropy
from .steps import LossFn, make_eval_step, make_train_step

Batches = Iterable[tuple[mx.array, mx.array]]


class Trainer:
    """Fit and evaluate a classifier on loaders of ``(images, labels)`` batches.

    ``optimizer`` may be left out for a trainer that only evaluates and predicts. Losses and
    correct counts accumulate on the device; the host reads them only every
    ``log_every`` steps (for the progress bar) and at the end of an epoch.

    Example:
        >>> import mlx.optimizers as optim
        >>> from mlxvision.data import DataLoader, Digits, transforms as T
        >>> from mlxvision.models import create_model
        >>> data = Digits(train=False, transform=T.ToTensor())
        >>> model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
        >>> trainer = Trainer(model, optim.Adam(learning_rate=1e-3), verbose=False)
        >>> history = trainer.fit(DataLoader(data, batch_size=60, shuffle=True), epochs=1)
        >>> sorted(history[0])
        ['accuracy', 'epoch', 'images_per_sec', 'loss', 'seconds']
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: optim.Optimizer | None = None,
        loss_fn: LossFn = cross_entropy,
        *,
        compile: bool = True,
        verbose: bool = True,
        log_every: int = 20,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.verbose = verbose
        self.log_every = max(1, int(log_every))
        self.compile = compile
        self.train_step = None
        self.eval_step = make_eval_step(model, loss_fn, compile=compile)
        self.history: list[dict[str, Any]] = []

    def fit(self, train_loader: Batches, epochs: int, val_loader: Batches | None = None) -> list:
        """Train for ``epochs`` epochs; return one dict of metrics per epoch (also in ``history``).

        Each dict holds ``epoch``, ``loss`` and ``accuracy`` (training batches, as augmented),
        ``seconds``, ``images_per_sec`` and, with ``val_loader``, ``val_loss`` and
        ``val_accuracy``. Accuracies are fractions in [0, 1].
        """
        if epochs < 1:
            raise ValueError(f"epochs: expected a positive int, got {epochs}")
        if self.optimizer is None:
            raise ValueError("fit: this Trainer has no optimizer; pass one to Trainer(...)")
        if self.train_step is None:
            self.train_step = make_train_step(
                self.model, self.optimizer, self.loss_fn, compile=self.compile
            )
        start_epoch = len(self.history)
        for epoch in range(start_epoch + 1, start_epoch + epochs + 1):
            record = self._train_epoch(train_loader, epoch, start_epoch + epochs)
            if val_loader is not None:
                val = self.evaluate(val_loader)
                record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            self.history.append(record)
            if self.verbose:
                tqdm.write(epoch_summary(record, start_epoch + epochs))
        return self.history[start_epoch:]

    def _train_epoch(self, loader: Batches, epoch: int, last_epoch: int) -> dict[str, Any]:
        self.model.train()
        total_loss = mx.array(0.0)
        total_correct = mx.array(0)
        seen = 0
        began = time.perf_counter()
        bar = tqdm(
            total=_length(loader),
            desc=f"Epoch {epoch}/{last_epoch}",
            disable=not self.verbose,
            leave=False,
            unit="batch",
        )
        for step, (images, labels) in enumerate(loader, start=1):
            loss, correct = self.train_step(images, labels)
            n = labels.shape[0]
            total_loss = total_loss + loss * n
            total_correct = total_correct + correct
            seen += n
            mx.async_eval(total_loss, total_correct, self.model.state, self.optimizer.state)
            if self.verbose and step % self.log_every == 0:
                elapsed = time.perf_counter() - began
                bar.set_postfix(
                    loss=f"{total_loss.item() / seen:.4f}",
                    acc=f"{100 * total_correct.item() / seen:.2f}%",
                    img_s=f"{seen / elapsed:.0f}",
                )
            bar.update(1)
        bar.close()
        if seen == 0:
            raise ValueError("train_loader: yielded no batches")
        seconds = time.perf_counter() - began
        return {
            "epoch": epoch,
            "loss": total_loss.item() / seen,
            "accuracy": total_correct.item() / seen,
            "seconds": seconds,
            "images_per_sec": seen / seconds,
        }

    def evaluate(self, loader: Batches) -> dict[str, float]:
        """Mean loss and accuracy (a fraction) of the model in eval mode over ``loader``."""
        self.model.eval()
        total_loss = mx.array(0.0)
        total_correct = mx.array(0.0)
        seen = 0
        full = None
        for images, labels in loader:
            n = labels.shape[0]
            full = full or n
            weights = mx.ones((n,))
            if n < full:
                images, labels, weights = _pad_batch(images, labels, weights, full)
            loss_sum, correct = self.eval_step(images, labels, weights)
            total_loss = total_loss + loss_sum
            total_correct = total_correct + correct
            seen += n
            mx.async_eval(total_loss, total_correct)
        if seen == 0:
            raise ValueError("evaluate: the loader yielded no batches")
        return {"loss": total_loss.item() / seen, "accuracy": total_correct.item() / seen}

    def predict(self, images: mx.array) -> mx.array:
        """Logits of the model in eval mode for one batch of images."""
        self.model.eval()
        return self.model(images)


def epoch_summary(record: dict[str, Any], epochs: int) -> str:
    """The one-line summary of an epoch, in the tutorial's words.

    Example:
        >>> epoch_summary({"epoch": 1, "loss": 0.5, "accuracy": 0.9}, 10)
        'Epoch [1/10], Loss: 0.5000, Accuracy: 90.00%'
    """
    line = (
        f"Epoch [{record['epoch']}/{epochs}], Loss: {record['loss']:.4f}, "
        f"Accuracy: {100 * record['accuracy']:.2f}%"
    )
    if "val_accuracy" in record:
        line += (
            f", Val Loss: {record['val_loss']:.4f}, "
            f"Val Accuracy: {100 * record['val_accuracy']:.2f}%"
        )
    if "images_per_sec" in record:
        line += f" ({record['images_per_sec']:.0f} images/s)"
    return line


def _pad_batch(images, labels, weights, size):
    pad = size - labels.shape[0]
    images = mx.concatenate([images, mx.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = mx.concatenate([labels, mx.zeros((pad,), labels.dtype)])
    weights = mx.concatenate([weights, mx.zeros((pad,))])
    return images, labels, weights


def _length(loader: Batches) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None
