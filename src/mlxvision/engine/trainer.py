"""``Trainer``: a thin loop over the compiled steps, with callbacks, EMA and exact resume."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten
from tqdm.auto import tqdm

from .callbacks import Callback
from .distributed import init as distributed_init
from .ema import EMA
from .losses import cross_entropy, label_smoothing_loss
from .steps import LossFn, make_eval_step, make_train_step

Batches = Iterable[tuple[mx.array, mx.array]]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the first bad step.

    Example:
        >>> import mlx.optimizers as optim
        >>> from mlxvision.models import create_model
        >>> model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
        >>> images, labels = mx.full((4, 8, 8, 1), float("nan")), mx.zeros((4,), mx.int32)
        >>> trainer = Trainer(model, optim.SGD(learning_rate=0.1), verbose=False)
        >>> trainer.fit([(images, labels)], epochs=1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mlxvision.engine.trainer.NonFiniteLossError: the training loss became NaN ... at step 1 ...
    """


class DistributedError(RuntimeError):
    """Another process of a distributed job died or could not be reached.

    :meth:`Trainer.fit` raises it with ``distributed=True`` when a collective operation fails;
    the message gives the step, and checkpoints saved before it are intact.

    Example:
        >>> issubclass(DistributedError, RuntimeError)
        True
        >>> str(DistributedError("rank 1: lost contact with another process of the job"))
        'rank 1: lost contact with another process of the job'
    """


class Trainer:
    """Fit, evaluate and predict with a classifier over loaders of ``(images, labels)`` batches.

    - ``precision``: ``"float32"``, or ``"bfloat16"``/``"float16"`` compute over float32 master
      weights; ``clip_grad_norm``, ``accumulate`` and ``label_smoothing`` as in
      :func:`mlxvision.engine.make_train_step`.
    - ``ema_decay``: keep an exponential moving average of the weights, evaluated (``ema_val_*``)
      and saved beside the raw ones.
    - MixUp/CutMix: give the training ``DataLoader`` a ``batch_transform``; its soft targets
      train as they come.
    - ``streams``: on a CPU, every batch is split into parts computed concurrently on this many
      streams (:mod:`mlxvision.engine.streams`); ``"auto"``: one per core for models without
      BatchNorm, else one, with each convolution computed in one part per core.
    - ``seed``: seeds MLX's random numbers (dropout, stochastic depth) when training starts;
      with the loader's seed, a CPU run repeats bit for bit.
    - ``tta``: average the logits of several views of each image at evaluation: ``True`` or 1,
      the image and its mirror; 2, also shifted by a pixel
      (:func:`~mlxvision.engine.steps.tta_logits`).
    - ``callbacks``: :class:`~mlxvision.engine.callbacks.Callback` objects; ``run_dir`` is where
      checkpoints and logs go by default.
    - ``distributed=True``: data-parallel over the processes of an ``mx.distributed`` job
      (started with ``mlx.launch``). The training loader is sharded by rank (its ``batch_size``
      is per process: the global batch is ``batch_size × world_size``; no learning rate is
      rescaled for you); gradients are averaged before each update; BatchNorm statistics are
      per process within a step and averaged at each epoch end; metrics are summed over all
      processes; only rank 0 prints and writes files; every rank resumes from the same
      checkpoint. If no progress is seen for ``watchdog_timeout`` seconds (a process died),
      the others stop with a message instead of waiting forever.

    Losses and correct counts accumulate on the device; the host reads them only every
    ``log_every`` steps and at the end of an epoch. A NaN or infinite loss stops training with
    :class:`NonFiniteLossError` naming the first bad step, before any checkpoint of it is saved.

    Example:
        >>> import mlx.optimizers as optim
        >>> from mlxvision.data import DataLoader, Digits, transforms as T
        >>> from mlxvision.models import create_model
        >>> data = Digits(train=False, transform=T.ToTensor())
        >>> model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
        >>> trainer = Trainer(model, optim.Adam(learning_rate=1e-3), verbose=False)
        >>> history = trainer.fit(DataLoader(data, batch_size=60, shuffle=True), epochs=1)
        >>> sorted(history[0])
        ['accuracy', 'epoch', 'images_per_sec', 'loss', 'lr', 'seconds']
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: optim.Optimizer | None = None,
        loss_fn: LossFn = cross_entropy,
        *,
        callbacks: Sequence[Callback] = (),
        precision: str = "float32",
        clip_grad_norm: float | None = None,
        accumulate: int = 1,
        label_smoothing: float = 0.0,
        ema_decay: float | None = None,
        tta: bool | int = False,
        top_k: int = 5,
        seed: int | None = None,
        run_dir: str | os.PathLike | None = None,
        distributed: bool = False,
        watchdog_timeout: float = 600.0,
        compile: bool | None = None,
        streams: int | str = "auto",
        verbose: bool = True,
        log_every: int = 50,
    ) -> None:
        if label_smoothing:
            if loss_fn is not cross_entropy:
                raise ValueError("label_smoothing: only with the default cross_entropy loss")
            loss_fn = label_smoothing_loss(label_smoothing)
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.callbacks = list(callbacks)
        self.step_options = dict(
            precision=precision,
            clip_grad_norm=clip_grad_norm,
            accumulate=accumulate,
            streams=streams,
        )
        self.ema = EMA(model, ema_decay) if ema_decay else None
        self.seed = seed
        self.run_dir = Path(run_dir) if run_dir else None
        self.group = distributed_init() if distributed else None
        self.rank = self.group.rank() if self.group else 0
        self.world_size = self.group.size() if self.group else 1
        self.watchdog_timeout = watchdog_timeout
        self._watchdog = None
        self.compile = compile
        self.verbose = verbose and self.rank == 0
        self.log_every = max(1, int(log_every))
        self.train_step = None
        self.eval_step = make_eval_step(
            model,
            loss_fn,
            compile=compile,
            precision=precision,
            top_k=top_k,
            tta=tta,
            streams=streams,
        )
        self.history: list[dict[str, Any]] = []
        self.global_step = 0
        self.position = {"epoch": 1, "batch": 0}
        self.stop_training = False
        self._bad_step = mx.array(-1)

    # ----------------------------------------------------------------- training
    def fit(
        self,
        train_loader: Batches,
        epochs: int,
        val_loader: Batches | None = None,
        resume: str | os.PathLike | None = None,
    ) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs are complete; return one record per epoch trained now.

        A record holds ``epoch``, ``loss`` and ``accuracy`` (training batches, as augmented),
        ``lr``, ``seconds``, ``images_per_sec`` and, with ``val_loader``, ``val_loss``,
        ``val_accuracy``, ``val_top5`` (and ``ema_val_*`` with an EMA). Accuracies are
        fractions. ``resume`` (a checkpoint or run folder) restores the whole training state
        first and continues from the saved batch, mid-epoch if that is where it stopped.
        """
        if self.optimizer is None:
            raise ValueError("fit: this Trainer has no optimizer; pass one to Trainer(...)")
        if resume is not None:
            self.restore(resume)
        elif self.seed is not None and self.global_step == 0:
            mx.random.seed(self.seed + self.rank)
        if self.group is not None:
            self._prepare_distributed(train_loader)
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs: expected a positive int, got {epochs!r}")
        if self.position["epoch"] > epochs:
            raise ValueError(
                f"epochs={epochs}: this run has already completed {self.position['epoch'] - 1} "
                "epochs; ask for more"
            )
        if self.train_step is None:
            self.train_step = self._make_train_step()
        self.stop_training = False
        self._call("on_fit_start")
        try:
            return self._fit_epochs(train_loader, epochs, val_loader)
        finally:  # also when training fails: callbacks release what they hold
            self._call("on_fit_end")
            if self._watchdog is not None:
                self._watchdog.stop()
                self._watchdog = None

    def _fit_epochs(
        self, train_loader: Batches, epochs: int, val_loader: Batches | None
    ) -> list[dict[str, Any]]:
        trained = []
        while self.position["epoch"] <= epochs and not self.stop_training:
            epoch = self.position["epoch"]
            self._call("on_epoch_start", epoch)
            try:
                record = self._train_epoch(train_loader, epoch, epochs)
            except RuntimeError as err:
                if self.group is None or isinstance(err, NonFiniteLossError):
                    raise
                raise DistributedError(
                    f"rank {self.rank}: lost contact with another process of the job at step "
                    f"{self.global_step} ({err}). Checkpoints saved before this are intact; "
                    "restart the job with resume=... to continue."
                ) from err
            if val_loader is not None:
                record.update(self._validate(val_loader))
            self.history.append(record)
            trained.append(record)
            self.position = {"epoch": epoch + 1, "batch": 0}
            self.log(epoch_summary(record, epochs))
            self._call("on_epoch_end", record)
        return trained

    @property
    def is_main(self) -> bool:
        """True on the process that prints and writes files (rank 0)."""
        return self.rank == 0

    def _make_train_step(self):
        return make_train_step(
            self.model,
            self.optimizer,
            self.loss_fn,
            compile=self.compile,
            group=self.group,
            **self.step_options,
        )

    def _prepare_distributed(self, loader: Batches) -> None:
        from .distributed import Watchdog, check_same_weights

        if getattr(loader, "world_size", None) == 1 and self.world_size > 1:
            loader.rank, loader.world_size = self.rank, self.world_size
            self.log(
                f"Sharded the training loader over {self.world_size} processes: global batch "
                f"{loader.batch_size * self.world_size} = {self.world_size} × {loader.batch_size}"
            )
        elif getattr(loader, "world_size", self.world_size) != self.world_size:
            raise ValueError(
                f"train_loader: sharded for world_size={loader.world_size} but the job has "
                f"{self.world_size} processes"
            )
        check_same_weights(self.model, self.group)
        if self.world_size > 1 and self._watchdog is None:
            self._watchdog = Watchdog(self.rank, self.watchdog_timeout)
            stop_on_sigterm(self.rank)

    def _train_epoch(self, loader: Batches, epoch: int, last_epoch: int) -> dict[str, Any]:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch - 1)
        self.model.train()
        skip = self.position["batch"]
        totals = {"loss": mx.array(0.0), "correct": mx.array(0), "seen": 0}
        began = time.perf_counter()
        bar = tqdm(
            total=_length(loader),
            initial=skip,
            desc=f"Epoch {epoch}/{last_epoch}",
            disable=not self.verbose,
            leave=False,
            unit="batch",
        )
        for index, (images, labels) in enumerate(loader):
            if index < skip:
                continue
            loss, correct = self.train_step(images, labels)
            if self.ema is not None:
                self.ema.update()
            n = labels.shape[0]
            totals["loss"] = totals["loss"] + loss * n
            totals["correct"] = totals["correct"] + correct
            totals["seen"] += n
            self._bad_step = mx.where(
                (self._bad_step < 0) & ~mx.isfinite(loss), self.global_step + 1, self._bad_step
            )
            mx.async_eval(totals["loss"], totals["correct"], self._bad_step, self.train_step.state)
            self.global_step += 1
            self.position["batch"] = index + 1
            bar.update(1)
            if self._watchdog is not None:
                self._watchdog.pet()
            self._call("on_step_end")
            if self.global_step % self.log_every == 0:
                logs = self._read(totals, began)
                bar.set_postfix(
                    loss=f"{logs['loss']:.4f}",
                    acc=f"{100 * logs['accuracy']:.2f}%",
                    img_s=f"{logs['images_per_sec']:.0f}",
                )
                self._call("on_log", logs)
        bar.close()
        if totals["seen"] == 0:
            raise ValueError(f"train_loader: yielded no batches in epoch {epoch}")
        record = {"epoch": epoch, **self._read(totals, began)}
        record["seconds"] = time.perf_counter() - began
        if self.group is not None:
            from .distributed import sync_batch_norm_statistics

            sync_batch_norm_statistics(self.model, self.group)
        return record

    def _read(self, totals: dict[str, Any], began: float) -> dict[str, Any]:
        self._check_finite()
        loss, correct, seen = totals["loss"].item(), totals["correct"].item(), totals["seen"]
        if self.group is not None:
            from .distributed import all_sum_numbers

            loss, correct, seen = all_sum_numbers([loss, correct, seen], self.group)
        if self._watchdog is not None:
            self._watchdog.pet()
        return {
            "loss": loss / seen,
            "accuracy": correct / seen,
            "lr": self.learning_rate,
            "images_per_sec": seen / max(time.perf_counter() - began, 1e-9),
        }

    def _check_finite(self) -> None:
        bad = int(self._bad_step.item())
        if bad >= 0:
            raise NonFiniteLossError(
                f"the training loss became NaN or infinite at step {bad} (counting optimizer "
                f"calls from 1; now epoch {self.position['epoch']}, batch "
                f"{self.position['batch']}). Lower the learning rate, clip gradients "
                "(clip_grad_norm=...) or check the data; checkpoints saved before this stay valid."
            )

    def _validate(self, loader: Batches) -> dict[str, float]:
        result = {f"val_{k}": v for k, v in self._scalars(self.evaluate(loader)).items()}
        if self.ema is not None:
            with self.ema.swapped():
                ema = self.evaluate(loader)
            result.update({f"ema_val_{k}": v for k, v in self._scalars(ema).items()})
        return result

    @staticmethod
    def _scalars(result: dict[str, Any]) -> dict[str, float]:
        return {k: v for k, v in result.items() if isinstance(v, float)}

    # --------------------------------------------------------------- evaluation
    def evaluate(self, loader: Batches) -> dict[str, Any]:
        """Metrics of the model in eval mode over ``loader``.

        Returns ``loss``, ``accuracy``, ``top5`` (top-k accuracy, k = ``top_k``),
        ``per_class_accuracy`` (a list) and ``confusion_matrix`` (rows: true class, columns:
        predicted, as nested lists of counts).
        """
        self.model.eval()
        sums: dict[str, mx.array] | None = None
        seen = 0
        full = None
        for images, labels in loader:
            n = labels.shape[0]
            full = full or n
            weights = mx.ones((n,))
            if n < full:
                images, labels, weights = _pad_batch(images, labels, weights, full)
            batch = self.eval_step(images, labels, weights)
            sums = batch if sums is None else {k: sums[k] + batch[k] for k in sums}
            seen += n
            mx.async_eval(sums)
        if sums is None:
            raise ValueError("evaluate: the loader yielded no batches")
        if self.group is not None and getattr(loader, "world_size", 1) > 1:
            from .distributed import all_sum_numbers

            sums = {k: mx.distributed.all_sum(v, group=self.group) for k, v in sums.items()}
            (seen,) = all_sum_numbers([seen], self.group)
        confusion = np.array(sums["confusion"]).astype(np.int64)
        per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
        return {
            "loss": sums["loss"].item() / seen,
            "accuracy": sums["correct"].item() / seen,
            "top5": sums["top_k"].item() / seen,
            "per_class_accuracy": per_class.tolist(),
            "confusion_matrix": confusion.tolist(),
        }

    def predict(self, data: mx.array | Batches, probabilities: bool = True) -> mx.array:
        """Class probabilities (or logits) of the model in eval mode, for a batch of images or
        every batch of a loader (concatenated).

        Example:
            >>> import mlx.core as mx
            >>> from mlxvision.models import create_model
            >>> model = create_model("simple_cnn", num_classes=3, in_channels=1, input_size=8)
            >>> Trainer(model).predict(mx.zeros((2, 8, 8, 1))).shape
            (2, 3)
        """
        self.model.eval()
        batches = [data] if isinstance(data, mx.array) else (images for images, _ in data)
        outputs = []
        for images in batches:
            logits = self.model(images).astype(mx.float32)
            outputs.append(mx.softmax(logits, axis=-1) if probabilities else logits)
        return mx.concatenate(outputs) if len(outputs) > 1 else outputs[0]

    # ------------------------------------------------------------ state, resume
    @property
    def learning_rate(self) -> float:
        """The learning rate the optimizer used last (or will use first)."""
        if self.optimizer is None:
            return float("nan")
        return float(np.array(self.optimizer.learning_rate))

    def set_learning_rate(self, value: float) -> None:
        """Set a constant learning rate (not available with a schedule function)."""
        optimizer = self.optimizer
        targets = getattr(optimizer, "optimizers", [optimizer])
        for opt in targets:
            if callable(getattr(opt, "_schedulers", {}).get("learning_rate")):
                raise ValueError("set_learning_rate: the optimizer follows a schedule function")
            opt.learning_rate = mx.array(value, dtype=mx.float32)

    def save_checkpoint(self, where) -> Path:
        """Save the whole training state: into a folder path, or through a CheckpointManager."""
        from ..checkpoint import CheckpointManager, save_checkpoint

        if self.train_step is None:
            raise ValueError("save_checkpoint: nothing trained yet (call fit first)")
        self._check_finite()  # never save weights that a NaN has reached
        mx.eval(self.train_step.state)
        record = self.history[-1] if self.history else {}
        state = {
            "epoch": self.position["epoch"],
            "batch": self.position["batch"],
            "global_step": self.global_step,
            "micro_step": self.train_step.micro_step,
            "seed": self.seed,
            "history": self.history,
            "metrics": {k: v for k, v in record.items() if isinstance(v, int | float)},
        }
        contents = dict(
            optimizer_state=self.optimizer.state,
            ema_weights=self.ema.shadow if self.ema else None,
            arrays={
                "random": list(mx.random.state),
                "step": self.train_step.extra,
                "ema_updates": self.ema.state["updates"] if self.ema else mx.array(0),
            },
            state=state,
        )
        if isinstance(where, CheckpointManager):
            return where.save(self.global_step, self.model, **contents)
        return save_checkpoint(where, self.model, **contents)

    def restore(self, path: str | os.PathLike) -> Path:
        """Load the training state saved by :meth:`save_checkpoint` (a checkpoint or run folder)."""
        from ..checkpoint import read_arrays, read_state, resolve_checkpoint, verify_checkpoint
        from ..checkpoint.model_file import check_weights

        folder = resolve_checkpoint(path)
        verify_checkpoint(folder)
        state = read_state(folder)
        weights = read_arrays(folder, "model")
        check_weights(folder, self.model, dict(tree_flatten(weights)))
        self.model.update(weights)
        optimizer_state = read_arrays(folder, "optimizer")
        if optimizer_state is not None:
            self.optimizer.state = optimizer_state
        arrays = read_arrays(folder, "arrays") or {}
        if "random" in arrays:
            high, low = (int(v) for v in np.array(arrays["random"][0]).tolist())
            mx.random.seed((high << 32) | low)  # puts back exactly this key
        if self.ema is not None:
            shadow = read_arrays(folder, "ema")
            if shadow is None:
                raise ValueError(f"{folder}: saved without EMA, but this Trainer keeps one")
            self.ema.state["shadow"] = shadow
            self.ema.state["updates"] = arrays.get("ema_updates", mx.array(0))
        self.train_step = self._make_train_step()
        for key, value in (arrays.get("step") or {}).items():
            self.train_step.extra[key] = value
        self.train_step.micro_step = int(state.get("micro_step", 0))
        self.history = list(state.get("history", []))
        self.global_step = int(state["global_step"])
        self.position = {"epoch": int(state["epoch"]), "batch": int(state["batch"])}
        mx.eval(self.model.state, self.optimizer.state)
        return folder

    # ------------------------------------------------------------------ helpers
    def log(self, message: str) -> None:
        if self.verbose:
            tqdm.write(message)

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)


def stop_on_sigterm(rank: int) -> None:
    """Say why when the launcher ends this process (it does when another process dies).

    Installs a SIGTERM handler that prints which rank was stopped and exits with status
    ``128 + SIGTERM``; it does nothing outside the main thread.

    Example:
        >>> previous = signal.getsignal(signal.SIGTERM)
        >>> stop_on_sigterm(rank=0)
        >>> signal.getsignal(signal.SIGTERM) is not previous
        True
        >>> _ = signal.signal(signal.SIGTERM, previous)  # put the earlier handler back
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):
        print(
            f"mlxvision: rank {rank}: stopped by the launcher (SIGTERM), usually because another "
            "process of the job ended; checkpoints saved before this are intact.",
            file=sys.stderr,
            flush=True,
        )
        os._exit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)


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
    if "ema_val_accuracy" in record:
        line += f", EMA Val Accuracy: {100 * record['ema_val_accuracy']:.2f}%"
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
