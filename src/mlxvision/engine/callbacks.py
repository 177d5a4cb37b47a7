"""Callbacks: code that runs at points of ``Trainer.fit`` (Lightning/Keras style, but small).

Hooks get the trainer; ``logs``/``record`` dicts hold plain Python numbers, read from the
device only at log intervals and epoch ends.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .trainer import Trainer


class Callback:
    """Base class: override the hooks you need.

    Example:
        >>> class PrintEpoch(Callback):
        ...     def on_epoch_end(self, trainer, record):
        ...         print(record["epoch"])
    """

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_step_end(self, trainer: Trainer) -> None:
        """After every optimizer call; nothing has been read from the device (keep it cheap)."""

    def on_log(self, trainer: Trainer, logs: dict[str, Any]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None:
        """When ``fit`` returns or raises: release what the callback holds."""


def _better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


def _check_mode(mode: str) -> str:
    if mode not in ("max", "min"):
        raise ValueError(f"mode: expected 'max' or 'min', got {mode!r}")
    return mode


def _metric(record: dict[str, Any], monitor: str, who: str) -> float:
    if monitor not in record:
        raise KeyError(
            f"{who}: the metric {monitor!r} is not logged; logged metrics: {', '.join(record)}"
        )
    return float(record[monitor])


class ModelCheckpoint(Callback):
    """Save the whole training state into ``trainer.run_dir/checkpoints`` (or ``folder``).

    Saves at every epoch end (and every ``every_n_steps`` optimizer steps, for mid-epoch
    resume), keeping the ``keep_last`` newest and the ``keep_best`` best by ``monitor``.

    Example:
        >>> callback = ModelCheckpoint("runs/demo/checkpoints", monitor="val_accuracy", keep_best=1)
    """

    def __init__(
        self,
        folder: str | os.PathLike | None = None,
        *,
        monitor: str | None = "val_accuracy",
        mode: str = "max",
        keep_last: int = 1,
        keep_best: int = 1,
        every_n_steps: int | None = None,
    ) -> None:
        from ..checkpoint import CheckpointManager

        self.folder = folder
        self.every_n_steps = every_n_steps
        self._settings = dict(
            keep_last=keep_last,
            keep_best=keep_best if monitor else 0,
            monitor=monitor,
            mode=_check_mode(mode),
        )
        self._manager_class = CheckpointManager
        self.manager = None

    def on_fit_start(self, trainer: Trainer) -> None:
        folder = self.folder or Path(trainer.run_dir or ".") / "checkpoints"
        self.manager = self._manager_class(folder, **self._settings)

    def on_step_end(self, trainer: Trainer) -> None:
        step = trainer.global_step
        due = self.every_n_steps and step % self.every_n_steps == 0 and trainer.position["batch"]
        if due and trainer.is_main:
            trainer.save_checkpoint(self.manager)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if trainer.is_main:
            trainer.save_checkpoint(self.manager)

    @property
    def best_path(self) -> Path | None:
        return self.manager.best() if self.manager else None

    @property
    def last_path(self) -> Path | None:
        return self.manager.latest() if self.manager else None


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Example:
        >>> stop = EarlyStopping(monitor="val_loss", mode="min", patience=3)
    """

    def __init__(
        self, monitor: str = "val_loss", mode: str = "min", patience: int = 5, min_delta: float = 0
    ) -> None:
        self.monitor, self.mode = monitor, _check_mode(mode)
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best: float | None = None
        self.waited = 0

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        value = _metric(record, self.monitor, "EarlyStopping")
        if _better(value, self.best, self.mode, self.min_delta):
            self.best, self.waited = value, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            trainer.stop_training = True
            trainer.log(
                f"Early stopping: {self.monitor} has not improved for {self.patience} epochs "
                f"(best {self.best:.4f})"
            )


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs.

    Works with a constant learning rate (not a schedule function).

    Example:
        >>> plateau = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2)
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 5,
        min_lr: float = 0.0,
    ) -> None:
        if not 0 < factor < 1:
            raise ValueError(f"factor: expected a value in (0, 1), got {factor}")
        self.monitor, self.mode = monitor, _check_mode(mode)
        self.factor, self.patience, self.min_lr = factor, int(patience), float(min_lr)
        self.best: float | None = None
        self.waited = 0

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        value = _metric(record, self.monitor, "ReduceLROnPlateau")
        if _better(value, self.best, self.mode):
            self.best, self.waited = value, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            self.waited = 0
            lr = max(trainer.learning_rate * self.factor, self.min_lr)
            trainer.set_learning_rate(lr)
            trainer.log(f"ReduceLROnPlateau: learning rate now {lr:.3g}")


class CSVLogger(Callback):
    """Append each epoch's record to a CSV file (columns fixed by the first epoch).

    Example:
        >>> logger = CSVLogger("runs/demo/metrics.csv")
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if not trainer.is_main:
            return
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(record), extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(record)


class JSONLinesLogger(Callback):
    """Append each epoch's record as one JSON line.

    Example:
        >>> logger = JSONLinesLogger("runs/demo/metrics.jsonl")
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if not trainer.is_main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


class TensorBoardLogger(Callback):
    """Write epoch metrics (and step losses at log intervals) for TensorBoard (on rank 0 only).

    Needs ``tensorboardX`` (``pip install tensorboardX``); the error says so if it is missing.

    Example:
        >>> logger = TensorBoardLogger("runs/demo/tensorboard")  # doctest: +SKIP
    """

    def __init__(self, logdir: str | os.PathLike) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError(
                "TensorBoardLogger needs tensorboardX: pip install tensorboardX"
            ) from None
        self.writer = SummaryWriter(str(logdir))

    def on_log(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if not trainer.is_main:
            return
        for key in ("loss", "accuracy", "lr"):
            if key in logs:
                self.writer.add_scalar(f"step/{key}", logs[key], trainer.global_step)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if not trainer.is_main:
            return
        for key, value in record.items():
            if isinstance(value, int | float) and math.isfinite(value) and key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", value, record["epoch"])
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        self.writer.close()
