"""The speed recipe: airbench-style CIFAR-10 training from the library's public pieces.

Everything the fast CIFAR-10 records use, each a reusable part of the library:

- the data held on the device, shuffled, translated and mirrored there in one gather
  (:class:`~mlxvision.data.DeviceLoader`, alternating flips);
- ``airbench_net`` with identity-initialised filters, whitening stem initialised from the data
  (:meth:`~mlxvision.models.fastnet.FastNet.init_whitening`) and frozen
  (:func:`~mlxvision.models.fastnet.freeze_like_airbench`);
- :class:`~mlxvision.engine.optimizers.Muon` for the convolution filters next to SGD-Nesterov
  for the head and the biases (:func:`~mlxvision.engine.optimizers.grouped`), all decaying
  linearly to zero; the stem's bias trains only for the first epochs;
- label-smoothed cross-entropy summed over the batch, bfloat16 compute over float32 master
  weights, the whole step under ``mx.compile`` (:class:`~mlxvision.engine.steps.TrainStep`);
- test-time augmentation with mirrored and shifted views
  (:func:`~mlxvision.engine.steps.tta_logits`).

:class:`SpeedRun` builds and compiles all of it once; :meth:`SpeedRun.fit` then trains a fresh
model per seed, reusing the compiled step, and times it the way the records do.
"""

from __future__ import annotations

import json
import math
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

from ..backend import compile_by_default
from ..data.device import DeviceLoader, normalize
from ..engine import schedules
from ..engine.distributed import sync_batch_norm_statistics
from ..engine.losses import cross_entropy
from ..engine.optimizers import Muon, grouped
from ..engine.precision import compute_dtype
from ..engine.steps import make_eval_step, make_train_step
from ..models import create_model
from ..models.fastnet import FastNet, freeze_like_airbench
from .recipe import Recipe

#: The speed recipe's settings that :class:`Recipe` has no field for, with their defaults.
SPEED_OPTIONS: dict[str, Any] = {
    "bias_lr": 0.053,  # SGD learning rate of the stem's bias and the BatchNorm biases
    "head_lr": 0.67,  # SGD learning rate of the linear head
    "filter_momentum": 0.6,  # Muon's momentum (the recipe's ``momentum`` is SGD's)
    "whiten_bias_epochs": 3,  # the stem's bias trains only this long
    "whiten_samples": 5000,  # training images (a seeded random sample) that whiten the stem
    "translate": 2,  # random translation, pixels
    "ns_steps": 3,  # Newton-Schulz iterations of Muon
    "eval_batch_size": 2000,
}


class SpeedRun:
    """The speed recipe on in-memory images: build and compile once, then train per seed.

    ``recipe`` is a :class:`Recipe` such as ``get_recipe("cifar10_fast")``: its ``lr`` is
    Muon's learning rate for the filters, ``momentum`` SGD's, ``weight_decay`` the decoupled
    decay per step and per example (times the batch size, as airbench sets it),
    ``label_smoothing``, ``precision``, ``tta`` (0, 1 or 2), ``epochs``, ``batch_size`` and
    ``model_kwargs`` (``widths``, ``logit_scale``); ``recipe.options`` overrides
    :data:`SPEED_OPTIONS`. ``images`` are uint8 ``(N, H, W, C)``.

    ``group`` (an ``mx.distributed`` group of several processes) trains data-parallel: each
    process computes its equal part of every batch, with BatchNorm statistics of its part (as
    PyTorch's DDP), and the summed gradients make one update of the global batch everywhere. On
    a CPU the processes of one machine share its cores (the train step sees to it); since MLX's
    CPU backend runs all but the matrix products on one thread, two processes on two cores
    train faster than one.

    Example:
        >>> from mlxvision.recipes import get_recipe
        >>> recipe = get_recipe("cifar10_fast").replace(
        ...     epochs=1, batch_size=16, model_kwargs={"widths": (8, 16, 16)}, precision="float32"
        ... )
        >>> images = np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3), dtype=np.uint8)
        >>> run = SpeedRun(recipe, images, np.arange(32) % 10, mean=(0.5,) * 3, std=(0.25,) * 3)
        >>> result = run.fit(seed=0)
        >>> result["steps"], 0.0 <= run.evaluate(images, np.arange(32) % 10) <= 1.0
        (2, True)
    """

    def __init__(
        self,
        recipe: Recipe,
        images: np.ndarray | mx.array,
        labels: np.ndarray | mx.array,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        num_classes: int = 10,
        compile: bool | None = None,
        group: mx.distributed.Group | None = None,
    ) -> None:
        unknown = sorted(set(recipe.options) - set(SPEED_OPTIONS))
        if unknown:
            raise ValueError(
                f"recipe {recipe.name}: unknown options {unknown}; known: {sorted(SPEED_OPTIONS)}"
            )
        if recipe.schedule != "linear":
            raise ValueError(
                f"recipe {recipe.name}: the speed recipe decays every learning rate linearly "
                f"to zero (schedule 'linear'), got schedule {recipe.schedule!r}"
            )
        self.recipe = recipe
        self.options = {**SPEED_OPTIONS, **recipe.options}
        self.group = group if group is not None and group.size() > 1 else None
        self.rank, self.world = (group.rank(), group.size()) if self.group else (0, 1)
        self.mean, self.std = tuple(mean), tuple(std)
        self.dtype = compute_dtype(recipe.precision)
        self.loader = DeviceLoader(
            images,
            labels,
            recipe.batch_size,
            mean=mean,
            std=std,
            translate=int(self.options["translate"]),
            seed=recipe.seed,
            dtype=self.dtype,
            rank=self.rank,
            world_size=self.world,
        )
        if len(self.loader) == 0:
            raise ValueError(
                f"batch_size {recipe.batch_size} is larger than the {len(labels)} training images"
            )
        count = self.loader.images.shape[0]
        picked = np.random.default_rng(recipe.seed).permutation(count)
        #: The training images the stem is whitened with: a seeded random sample (datasets
        #: stored class by class must not whiten with one class).
        self.whiten_indices = mx.array(np.sort(picked[: int(self.options["whiten_samples"])]))
        self.steps_per_epoch = len(self.loader)
        self.total_steps = math.ceil(recipe.epochs * self.steps_per_epoch)
        height, width, channels = self.loader.images.shape[1:]
        self.input_shape = (height, width, channels)
        self.num_classes = int(num_classes)
        self.model = self._new_model(recipe.seed)
        self.optimizer = self._optimizer()
        loss = partial(
            _scaled_sum_loss, label_smoothing=recipe.label_smoothing, scale=float(self.world)
        )
        compile = compile_by_default() if compile is None else compile
        self.step = make_train_step(
            self.model,
            self.optimizer,
            loss,
            compile=compile,
            precision=recipe.precision,
            group=self.group,
        )
        self.eval_step = make_eval_step(
            self.model, compile=compile, precision=recipe.precision, tta=int(recipe.tta)
        )

    def _new_model(self, seed: int) -> FastNet:
        mx.random.seed(seed)
        kwargs = {"in_channels": self.input_shape[2], **self.recipe.model_kwargs}
        model = create_model(self.recipe.model, num_classes=self.num_classes, **kwargs)
        if not isinstance(model, FastNet):
            raise ValueError(
                f"recipe {self.recipe.name}: the speed recipe trains airbench_net, "
                f"not {self.recipe.model!r}"
            )
        return freeze_like_airbench(model)

    def _optimizer(self) -> optim.Optimizer:
        recipe, options = self.recipe, self.options
        total, batch = self.total_steps, recipe.batch_size
        whiten_steps = max(1, math.ceil(options["whiten_bias_epochs"] * self.steps_per_epoch))
        decay = recipe.weight_decay * batch

        def sgd(lr: float, steps: int) -> optim.SGD:
            return optim.SGD(
                learning_rate=schedules.linear_decay(lr, steps),
                momentum=recipe.momentum,
                nesterov=recipe.nesterov,
                weight_decay=decay / lr,
            )

        filters = Muon(
            learning_rate=schedules.linear_decay(recipe.lr, total),
            momentum=options["filter_momentum"],
            ns_steps=int(options["ns_steps"]),
            ns_dtype=self.dtype if self.dtype != mx.float32 else mx.float32,
        )
        return grouped(
            [
                ("whiten.bias", sgd(options["bias_lr"], whiten_steps)),
                ("head.weight", sgd(options["head_lr"], total)),
                (lambda path, p: p.ndim == 4, filters),
                ("*", sgd(options["bias_lr"], total)),
            ]
        )

    def reset(self, seed: int) -> None:
        """A fresh model and optimizer for ``seed``, in place: the compiled step stays valid."""
        fresh = self._new_model(seed)
        self.model.update(fresh.parameters())
        _zero_in_place(self.optimizer.state)
        self.loader.seed = seed
        self.loader.set_epoch(0)

    def fit(self, seed: int | None = None, labels: mx.array | None = None) -> dict[str, Any]:
        """Train a fresh model from ``seed`` (default: the recipe's); return the timings.

        ``train_seconds`` runs from the reset (whitening included) to the end of the last
        step, with the device synchronised at both ends. ``labels`` replaces the training
        labels for this run only (random labels make a warm-up run that compiles every kernel
        without learning anything).
        """
        seed = self.recipe.seed if seed is None else int(seed)
        saved_labels = self.loader.labels
        if labels is not None:
            self.loader.labels = mx.array(labels).astype(mx.int32)
        mx.synchronize()
        began = time.perf_counter()
        self.reset(seed)
        self.model.init_whitening(self.loader.images[self.whiten_indices])
        losses = []
        step = 0
        epoch = 0
        while step < self.total_steps:
            for images, targets in self.loader:
                loss, _ = self.step(images, targets)
                mx.async_eval(self.step.state, loss)
                step += 1
                if step >= self.total_steps:
                    break
            losses.append(loss)
            epoch += 1
        if self.group:
            sync_batch_norm_statistics(self.model, self.group)
        mx.eval(self.step.state)
        mx.synchronize()
        seconds = time.perf_counter() - began
        self.loader.labels = saved_labels
        batch = self.recipe.batch_size
        return {
            "seed": seed,
            "train_seconds": seconds,
            "steps": step,
            "epochs": epoch,
            "train_loss_per_epoch": [float(x.item()) / batch for x in losses],
        }

    def evaluate(self, images: np.ndarray | mx.array, labels: np.ndarray | mx.array) -> float:
        """Accuracy on ``images`` (uint8 NHWC) with the recipe's test-time augmentation.

        In a data-parallel job each process evaluates its share of the images.
        """
        total = len(labels)
        first, last = total * self.rank // self.world, total * (self.rank + 1) // self.world
        x = normalize(mx.array(images[first:last]), self.mean, self.std, self.dtype)
        y = mx.array(np.asarray(labels[first:last])).astype(mx.int32)
        size = int(self.options["eval_batch_size"])
        correct = mx.array(0.0)
        for start in range(0, x.shape[0], size):
            batch, target = x[start : start + size], y[start : start + size]
            count = batch.shape[0]
            weights = mx.ones(count)
            if count < size and start > 0:
                pad = size - count
                batch = mx.concatenate([batch, mx.zeros((pad, *batch.shape[1:]), batch.dtype)])
                target = mx.concatenate([target, mx.zeros(pad, mx.int32)])
                weights = mx.concatenate([weights, mx.zeros(pad)])
            correct = correct + self.eval_step(batch, target, weights)["correct"]
        if self.group:
            correct = mx.distributed.all_sum(correct, group=self.group)
        return correct.item() / total


def run_speed_recipe(
    recipe: Recipe,
    *,
    data_root: str | os.PathLike | None = None,
    out: str | os.PathLike = "runs",
    name: str | None = None,
    verbose: bool = True,
    distributed: bool = False,
) -> dict[str, Any]:
    """Train a speed recipe into a run folder, as :func:`~mlxvision.recipes.run_recipe` does
    for the others (``recipe.json``, ``metrics.jsonl``, ``model.safetensors``,
    ``result.json``); ``train_seconds`` here includes compiling the step. ``distributed=True``
    trains data-parallel over the processes of an ``mx.distributed`` job (see
    :class:`SpeedRun`); rank 0 alone writes the run folder.

    Example:
        >>> from mlxvision.recipes import get_recipe
        >>> get_recipe("cifar10_fast").optimizer  # run_recipe hands "muon" recipes to this
        'muon'
        >>> run_speed_recipe(get_recipe("cifar10_fast"), data_root=None)
        Traceback (most recent call last):
        ...
        ValueError: dataset 'cifar10' needs a data folder (--data PATH)
    """
    from ..checkpoint import save
    from ..engine.distributed import init as distributed_init
    from .catalog import load_datasets
    from .run import CONFIG_FILE, METRICS_FILE, MODEL_FILE, RESULT_FILE, _run_name, model_metadata

    group = distributed_init() if distributed else None
    world = group.size() if group else 1
    main = group is None or group.rank() == 0
    verbose = verbose and main
    if recipe.batch_size % world:
        raise ValueError(
            f"recipe {recipe.name}: batch_size {recipe.batch_size} does not divide over "
            f"{world} processes"
        )
    train, test = load_datasets(recipe.dataset, data_root)
    run = Path(out) / (name or _run_name(group))
    if main:
        run.mkdir(parents=True, exist_ok=True)
        (run / CONFIG_FILE).write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")
    mean, std = recipe.normalize or (train.mean, train.std)
    if verbose and world > 1:
        print(f"data-parallel over {world} processes: global batch {recipe.batch_size}")
    if verbose:
        print(
            f"Training {recipe.model} on {recipe.dataset} ({len(train)} train / {len(test)} test "
            f"images) with the speed recipe {recipe.name}; run folder {run}"
        )
    speed = SpeedRun(
        recipe,
        train.images,
        train.labels,
        mean=mean,
        std=std,
        num_classes=train.num_classes,
        group=group,
    )
    timing = speed.fit()
    accuracy = speed.evaluate(test.images, test.labels)
    result = {
        "run": str(run),
        "recipe": recipe.name,
        "model": recipe.model,
        "epochs": recipe.epochs,
        "test_accuracy": accuracy,
        "tta": int(recipe.tta),
        "train_seconds": timing["train_seconds"],
        "steps": timing["steps"],
        "images_per_sec": timing["steps"] * recipe.batch_size / timing["train_seconds"],
        "processes": world,
    }
    if not main:
        return result
    with open(run / METRICS_FILE, "w") as log:
        for epoch, loss in enumerate(timing["train_loss_per_epoch"], 1):
            log.write(json.dumps({"epoch": epoch, "train_loss_last_batch": loss}) + "\n")
    save(
        speed.model, run / MODEL_FILE, metadata=model_metadata(recipe, data_root, train, mean, std)
    )
    (run / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    if verbose:
        print(
            f"Test Accuracy: {100 * accuracy:.2f}% (test-time augmentation level {int(recipe.tta)})"
            f" after {recipe.epochs} epochs in {timing['train_seconds']:.1f} s"
        )
        print(f"Saved {run / MODEL_FILE}")
    return result


def _scaled_sum_loss(
    logits: mx.array, targets: mx.array, *, label_smoothing: float, scale: float
) -> mx.array:
    # Summed over the batch; times the number of processes, whose gradients the step averages:
    # the update is then the one of the summed loss over the global batch.
    loss = cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction="sum")
    return loss * scale if scale != 1 else loss


def _zero_in_place(container: Any) -> None:
    items = container.items() if isinstance(container, dict) else enumerate(container)
    for key, value in list(items):
        if isinstance(value, mx.array):
            container[key] = mx.zeros_like(value)
        elif isinstance(value, dict | list):
            _zero_in_place(value)


__all__ = ["SPEED_OPTIONS", "SpeedRun", "run_speed_recipe"]
