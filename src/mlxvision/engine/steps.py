"""Compiled training and evaluation steps: the functional core of the engine.

A train step is ``step(images, targets) -> (loss, correct)``: it updates the model and the
optimizer in place and returns the batch's mean loss and number of correct predictions as
``mx.array`` scalars, without reading them on the host. Compiled (the default on GPUs; see
:func:`mlxvision.backend.compile_by_default`), it is one ``mx.compile`` over
``mx.value_and_grad``, with the model's state, the optimizer's state, MLX's random state
(dropout, stochastic depth) and the step's own state (gradient accumulation buffer, loss scale)
captured as inputs and outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map

from ..backend import compile_by_default
from ..data.device import translate_flip
from ..ops import convolutions_in_parts
from .distributed import cores_per_process
from .lean_updates import lean_updates_by_default, use_lean_updates
from .losses import cross_entropy
from .precision import LossScaler, compute_dtype, computing_in
from .streams import (
    StreamSplit,
    conv_streams,
    eval_streams,
    share_cores_with_blas,
    sums_in_parts,
    train_streams,
    value_and_grad_in_parts,
)

LossFn = Callable[..., mx.array]


class TrainStep:
    """One optimisation step per call; see :func:`make_train_step`, which builds it.

    ``state`` lists what the compiled step reads and writes (the model, the optimizer's state,
    MLX's random state and the step's own buffers): ``mx.eval(step.state)`` or
    ``mx.async_eval(step.state)`` after a call makes the update happen.

    Example:
        >>> import mlx.optimizers as optim
        >>> from mlxvision.models import create_model
        >>> model = create_model("simple_cnn", num_classes=2, in_channels=1, input_size=8)
        >>> step = TrainStep(model, optim.SGD(learning_rate=0.1), accumulate=2)
        >>> _ = step(mx.zeros((4, 8, 8, 1)), mx.array([0, 1, 0, 1]))
        >>> step.micro_step, "grads" in step.extra
        (1, True)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: optim.Optimizer,
        loss_fn: LossFn = cross_entropy,
        *,
        compile: bool | None = None,
        precision: str = "float32",
        clip_grad_norm: float | None = None,
        accumulate: int = 1,
        group: mx.distributed.Group | None = None,
        streams: int | str = "auto",
    ) -> None:
        if accumulate < 1:
            raise ValueError(f"accumulate: expected a positive int, got {accumulate}")
        if clip_grad_norm is not None and clip_grad_norm <= 0:
            raise ValueError(f"clip_grad_norm: expected a positive number, got {clip_grad_norm}")
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.dtype = compute_dtype(precision)
        self.precision = precision
        self.clip_grad_norm = clip_grad_norm
        self.accumulate = int(accumulate)
        self.group = group if group is not None and group.size() > 1 else None
        cores = cores_per_process(self.group)
        self.streams = train_streams(streams, model, cores, loss_fn)
        self.conv_streams = conv_streams(streams, model, self.streams, cores)
        share_cores_with_blas(max(self.streams, self.conv_streams), cores)
        self._split = StreamSplit(self.streams) if self.streams > 1 else None
        self._conv_split = StreamSplit(self.conv_streams) if self.conv_streams > 1 else None
        self.scaler = LossScaler() if precision == "float16" else None
        self.micro_step = 0
        if lean_updates_by_default():
            use_lean_updates(optimizer)
        optimizer.init(model.trainable_parameters())  # state must exist before compile captures it
        self.extra: dict[str, Any] = {}
        if self.scaler is not None:
            self.extra["scaler"] = self.scaler.state
        if self.accumulate > 1:
            self.extra["grads"] = tree_map(mx.zeros_like, model.trainable_parameters())
        if compile is None:
            compile = compile_by_default()
        self.compiled = bool(compile)
        self._value_and_grad = mx.value_and_grad(self._loss)
        self.state = [model.state, optimizer.state, mx.random.state, self.extra]

        def compiled(f):
            return mx.compile(f, inputs=self.state, outputs=self.state)

        wrap = compiled if compile else (lambda f: f)
        self._update = wrap(self._step_and_update)
        self._accumulate = wrap(self._step_and_accumulate)
        # An uncompiled step still compiles its optimizer update: one fused pass over each
        # parameter instead of one per operation (SGD with momentum on the tutorial CNN's 8.6 M
        # parameters: 46 ms → 15 ms on a CPU core).
        self._apply_gradients = self._apply if compile else compiled(self._apply)

    def __call__(self, images: mx.array, targets: mx.array) -> tuple[mx.array, mx.array]:
        self.micro_step += 1
        if self.micro_step % self.accumulate == 0:
            return self._update(images, targets)
        return self._accumulate(images, targets)

    def _loss(self, params, images, targets, weight=1.0):
        if self.dtype != mx.float32:
            params = tree_map(lambda p: p.astype(self.dtype), params)
            images = images.astype(self.dtype)
        self.model.update(params)
        logits = self.model(images)
        loss = self.loss_fn(logits, targets)
        scaled = loss * self.scaler.scale if self.scaler is not None else loss
        return scaled * weight if weight != 1.0 else scaled, (loss, logits)

    def _gradients(self, images, targets):
        self.model.train()
        params = self.model.trainable_parameters()

        def part_step(images, targets, weight=1.0):
            (_, (loss, logits)), grads = self._value_and_grad(params, images, targets, weight)
            labels = targets if targets.ndim == 1 else mx.argmax(targets, axis=-1)
            correct = (mx.argmax(logits, axis=-1) == labels).sum().astype(mx.int32)
            return loss, correct, grads

        if self._split is None:
            conv_parts = self._conv_split.streams if self._conv_split is not None else ()
            with convolutions_in_parts(conv_parts):
                loss, correct, grads = part_step(images, targets)
        else:
            loss, correct, grads = value_and_grad_in_parts(
                self._split, self.model, part_step, images, targets, start_forward=not self.compiled
            )
        self.model.update(params)  # float32 master weights back in place of the cast copies
        return loss, correct, grads

    def _step_and_accumulate(self, images, targets):
        loss, correct, grads = self._gradients(images, targets)
        self.extra["grads"] = tree_map(mx.add, self.extra["grads"], grads)
        return loss, correct

    def _step_and_update(self, images, targets):
        loss, correct, grads = self._gradients(images, targets)
        if self.accumulate > 1:
            total = tree_map(mx.add, self.extra["grads"], grads)
            grads = tree_map(lambda g: g / self.accumulate, total)
            self.extra["grads"] = tree_map(mx.zeros_like, total)
        if self.group is not None:
            grads = nn.utils.average_gradients(grads, group=self.group)
        self._apply_gradients(grads)
        return loss, correct

    def _apply(self, grads) -> None:
        if self.scaler is not None:
            grads = tree_map(lambda g: g / self.scaler.scale, grads)
        if self.clip_grad_norm is not None:
            grads, _ = optim.clip_grad_norm(grads, self.clip_grad_norm)
        if self.scaler is None:
            self.optimizer.update(self.model, grads)
        else:
            self._update_if_finite(grads)

    def _update_if_finite(self, grads) -> None:
        finite = mx.array(True)
        for _, g in tree_flatten(grads):
            finite = finite & mx.isfinite(g).all()
        old_params = self.model.trainable_parameters()
        old_state = tree_map(lambda x: x, self.optimizer.state)
        self.optimizer.update(self.model, grads)
        new_params = self.model.trainable_parameters()
        self.model.update(tree_map(lambda n, o: mx.where(finite, n, o), new_params, old_params))
        _select_in_place(self.optimizer.state, old_state, finite)
        self.scaler.update(finite)


def _select_in_place(container, old, keep_new: mx.array) -> None:
    items = container.items() if isinstance(container, dict) else enumerate(container)
    for key, value in list(items):
        if isinstance(value, mx.array):
            container[key] = mx.where(keep_new, value, old[key])
        elif isinstance(value, dict | list):
            _select_in_place(value, old[key], keep_new)


def make_train_step(
    model: nn.Module,
    optimizer: optim.Optimizer,
    loss_fn: LossFn = cross_entropy,
    *,
    compile: bool | None = None,
    precision: str = "float32",
    clip_grad_norm: float | None = None,
    accumulate: int = 1,
    group: mx.distributed.Group | None = None,
    streams: int | str = "auto",
) -> TrainStep:
    """A function that trains ``model`` on one batch and returns ``(loss, correct)``.

    - ``targets`` may be integer labels or soft targets ``(N, classes)`` (MixUp/CutMix).
    - ``precision="bfloat16"`` or ``"float16"`` computes the forward and backward passes in that
      dtype while the optimizer updates float32 master weights; float16 also scales the loss
      dynamically and skips steps whose gradients overflow.
    - ``clip_grad_norm`` rescales the gradients so their global L2 norm is at most that value.
    - ``accumulate=k`` sums gradients over ``k`` calls and updates once, with their mean: ``k``
      micro-batches of size ``b`` train like one batch of ``k·b`` (for models without
      batch-statistics layers).
    - ``group`` (an ``mx.distributed`` group of several processes): gradients are averaged
      over the group before each update, in few large messages; every process then applies the
      same update. Each process's batch is its shard of the global batch. On a CPU, the
      processes of one machine share its cores.
    - ``streams``: on a CPU, the batch is split into this many parts, computed concurrently on
      as many CPU streams (:mod:`mlxvision.engine.streams`), with the BLAS set to the cores
      left per stream. ``"auto"``: one part per core of this process for models without
      batch statistics and a loss that is a mean over samples
      (:func:`~mlxvision.engine.losses.is_sample_mean`; the same update as the whole batch),
      else one part (a BatchNorm part would normalise with its own statistics; the parts of a
      summed loss would be weighted wrongly), and one off the CPU. A number splits any model;
      the loss must then be a mean over samples. Where ``"auto"`` keeps the batch whole on a
      CPU of several cores, each convolution is computed in one part per core instead
      (:func:`~mlxvision.ops.convolutions_in_parts`; batch norms still see the whole batch;
      ``streams=1`` turns this off too).

    - An optimizer of exactly MLX's ``SGD``, ``Adam`` or ``AdamW`` class (also inside a
      ``MultiOptimizer``) gets the class of :mod:`mlxvision.engine.lean_updates`, whose
      equal updates reuse the old parameters' and state's memory (VGG-11: 5× → 3× the
      parameters' size; ResNet-18 on an H200 peaks below PyTorch); not with
      ``MLXVISION_LEAN_UPDATES=0``.

    ``compile`` (``mx.compile`` over the whole step) defaults to yes on GPUs and no on CPUs,
    where MLX's compiler measured no faster (:func:`mlxvision.backend.compile_by_default`).

    The model runs in training mode inside the step. Call it with batches of one shape (drop or
    pad the last batch): each new shape compiles the step again.

    Example:
        >>> import mlx.core as mx, mlx.optimizers as optim
        >>> from mlxvision.models import create_model
        >>> model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
        >>> step = make_train_step(model, optim.Adam(learning_rate=1e-3))
        >>> loss, correct = step(mx.zeros((4, 8, 8, 1)), mx.array([0, 1, 2, 3]))
        >>> loss.shape, correct.dtype
        ((), mlx.core.int32)
    """
    return TrainStep(
        model,
        optimizer,
        loss_fn,
        compile=compile,
        precision=precision,
        clip_grad_norm=clip_grad_norm,
        accumulate=accumulate,
        group=group,
        streams=streams,
    )


def make_eval_step(
    model: nn.Module,
    loss_fn: LossFn = cross_entropy,
    *,
    compile: bool | None = None,
    precision: str = "float32",
    top_k: int = 5,
    tta: bool | int = False,
    streams: int | str = "auto",
) -> Callable[[mx.array, mx.array, mx.array], dict[str, mx.array]]:
    """A function ``step(images, labels, weights) -> sums`` of the model in eval mode.

    ``sums`` holds, over the samples whose weight is 1: ``loss`` (sum of per-sample losses),
    ``correct`` (top-1 hits), ``top_k`` (hits within the ``top_k`` best classes) and
    ``confusion`` (a ``classes × classes`` matrix, rows = true class, columns = prediction).
    ``weights`` (1 or 0 per sample) masks out padding, so a short last batch padded to the full
    size counts only its real samples and the step never recompiles. ``tta`` averages the logits
    of several views of each image (:func:`tta_logits`: ``True`` or 1 = the image and its
    mirror, 2 = also shifted by one pixel). ``loss_fn`` must accept ``reduction="none"``.
    ``streams``: the batch is computed in that many parts on as many CPU streams and the sums
    added; ``"auto"`` (decided at the first call): on a CPU, the cores the BLAS threads that
    mlxvision set leave free (:func:`mlxvision.engine.streams.eval_streams`), else 1.
    ``precision="bfloat16"`` or ``"float16"`` computes in that dtype, with the images and the
    trainable parameters cast as :func:`make_train_step` casts them; the logits and the sums
    are float32.

    Example:
        >>> import mlx.core as mx
        >>> from mlxvision.models import create_model
        >>> model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
        >>> step = make_eval_step(model)
        >>> sums = step(mx.zeros((4, 8, 8, 1)), mx.zeros(4, mx.int32), mx.ones(4))
        >>> sorted(sums), sums["confusion"].shape
        (['confusion', 'correct', 'loss', 'top_k'], (10, 10))
    """
    dtype = compute_dtype(precision)
    if int(tta) not in TTA_LEVELS:
        raise ValueError(f"tta: expected one of {TTA_LEVELS} (or a bool), got {tta!r}")

    def step(images: mx.array, labels: mx.array, weights: mx.array) -> dict[str, mx.array]:
        model.eval()
        images = images.astype(dtype) if dtype != mx.float32 else images
        with computing_in(model, dtype):
            logits = tta_logits(model, images, tta).astype(mx.float32)
        losses = _per_sample(loss_fn, logits, labels)
        predictions = mx.argmax(logits, axis=-1)
        classes = logits.shape[-1]
        k = min(top_k, classes)
        label_logit = mx.take_along_axis(logits, labels[:, None], axis=-1)
        rank = (logits > label_logit).sum(axis=-1)
        confusion = mx.zeros((classes, classes)).at[labels, predictions].add(weights)
        return {
            "loss": (losses * weights).sum(),
            "correct": ((predictions == labels) * weights).sum(),
            "top_k": ((rank < k) * weights).sum(),
            "confusion": confusion,
        }

    if compile is None:
        compile = compile_by_default()
    eval_streams(streams)  # checks the value now; "auto" is resolved at the first call
    compiled = mx.compile(step, inputs=[model.state]) if compile else step
    split: list[StreamSplit] = []

    def step_in_parts(images: mx.array, labels: mx.array, weights: mx.array):
        if not split:
            split.append(StreamSplit(eval_streams(streams)))
        if split[0].count == 1:
            return compiled(images, labels, weights)
        return sums_in_parts(split[0], compiled, images, labels, weights)

    return step_in_parts


TTA_LEVELS = (0, 1, 2)


def tta_logits(model: Callable[[mx.array], mx.array], images: mx.array, level: int = 1) -> mx.array:
    """Logits averaged over views of each image (test-time augmentation).

    - level 0: the image alone;
    - level 1: the mean of the image and its mirror image;
    - level 2 (as the airbench records evaluate): half of level 1, plus half of the mean of
      level 1 on the image shifted one pixel up-left and one pixel down-right (reflect padding).

    Example:
        >>> import mlx.nn as nn
        >>> model = nn.Sequential(lambda x: x.mean(axis=(1, 2)), nn.Linear(3, 2))
        >>> tta_logits(model, mx.ones((4, 8, 8, 3)), level=2).shape
        (4, 2)
    """
    level = int(level)
    if level not in TTA_LEVELS:
        raise ValueError(f"level: expected one of {TTA_LEVELS}, got {level}")
    if level == 0:
        return model(images)

    def mirrored(x: mx.array) -> mx.array:
        return (model(x) + model(x[:, :, ::-1, :])) * 0.5

    logits = mirrored(images)
    if level == 1:
        return logits
    count = images.shape[0]
    shifted = [
        mirrored(translate_flip(images, mx.full((count, 2), offset, dtype=mx.int32)))
        for offset in (-1, 1)
    ]
    return logits * 0.5 + (shifted[0] + shifted[1]) * 0.25


def _per_sample(loss_fn: LossFn, logits: mx.array, labels: mx.array) -> mx.array:
    try:
        losses = loss_fn(logits, labels, reduction="none")
    except TypeError:
        losses = loss_fn(logits, labels)
    if losses.shape != labels.shape:
        raise ValueError(
            f"loss_fn: for evaluation expected one loss per sample, shape {labels.shape}, got "
            f"{losses.shape}; give make_eval_step a loss that accepts reduction='none'"
        )
    return losses
