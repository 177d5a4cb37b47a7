"""Compiled training and evaluation steps: the functional core of the engine.

A train step is ``step(images, labels) -> (loss, correct)``: it updates the model and the
optimizer in place and returns the batch's mean loss and number of correct predictions as
``mx.array`` scalars, without reading them on the host. With ``compile=True`` (the default) it
is compiled with ``mx.compile`` over ``nn.value_and_grad``, with the model's state, the
optimizer's state and MLX's random state captured as inputs and outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

from .losses import cross_entropy

LossFn = Callable[[mx.array, mx.array], mx.array]
TrainStep = Callable[[mx.array, mx.array], tuple[mx.array, mx.array]]
EvalStep = Callable[[mx.array, mx.array, mx.array], tuple[mx.array, mx.array]]


def make_train_step(
    model: nn.Module,
    optimizer: optim.Optimizer,
    loss_fn: LossFn = cross_entropy,
    *,
    compile: bool = True,
) -> TrainStep:
    """A function that trains ``model`` on one batch and returns ``(loss, correct)``.

    The model runs in training mode inside the step. Call the step with batches of one shape
    (drop or pad the last batch): each new shape compiles the step again.

    Example:
        >>> import mlx.core as mx, mlx.optimizers as optim
        >>> from mlxvision.models import create_model
        >>> model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
        >>> step = make_train_step(model, optim.Adam(learning_rate=1e-3))
        >>> loss, correct = step(mx.zeros((4, 8, 8, 1)), mx.array([0, 1, 2, 3]))
        >>> loss.shape, correct.dtype
        ((), mlx.core.int32)
    """
    if not optimizer.state:
        optimizer.init(model.trainable_parameters())

    def loss_and_logits(images: mx.array, labels: mx.array) -> tuple[mx.array, mx.array]:
        logits = model(images)
        return loss_fn(logits, labels), logits

    loss_and_grad = nn.value_and_grad(model, loss_and_logits)

    def step(images: mx.array, labels: mx.array) -> tuple[mx.array, mx.array]:
        model.train()
        (loss, logits), grads = loss_and_grad(images, labels)
        optimizer.update(model, grads)
        correct = (mx.argmax(logits, axis=-1) == labels).sum().astype(mx.int32)
        return loss, correct

    if not compile:
        return step
    state = [model.state, optimizer.state, mx.random.state]
    return mx.compile(step, inputs=state, outputs=state)


def make_eval_step(
    model: nn.Module, loss_fn: LossFn = cross_entropy, *, compile: bool = True
) -> EvalStep:
    """A function ``step(images, labels, weights) -> (loss_sum, correct)`` in eval mode.

    ``weights`` (one per sample, 1 or 0) masks out padding, so a short last batch padded to the
    full size counts only its real samples and the step never recompiles. ``loss_fn`` must
    accept ``reduction="none"`` (as :func:`mlx.nn.losses.cross_entropy` does) or return one loss
    per sample.

    Example:
        >>> import mlx.core as mx
        >>> from mlxvision.models import create_model
        >>> model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
        >>> step = make_eval_step(model)
        >>> _, correct = step(mx.zeros((4, 8, 8, 1)), mx.zeros(4, mx.int32), mx.ones(4))
        >>> int(correct) <= 4
        True
    """

    def step(images: mx.array, labels: mx.array, weights: mx.array) -> tuple[mx.array, mx.array]:
        model.eval()
        logits = model(images)
        losses = _per_sample(loss_fn, logits, labels)
        hits = (mx.argmax(logits, axis=-1) == labels).astype(mx.float32)
        return (losses * weights).sum(), (hits * weights).sum()

    if not compile:
        return step
    return mx.compile(step, inputs=[model.state])


def _per_sample(loss_fn: LossFn, logits: mx.array, labels: mx.array) -> mx.array:
    if loss_fn is cross_entropy:
        return nn.losses.cross_entropy(logits, labels, reduction="none")
    losses = loss_fn(logits, labels)
    if losses.shape != labels.shape:
        raise ValueError(
            f"loss_fn: for evaluation expected one loss per sample, shape {labels.shape}, got "
            f"{losses.shape}; give make_eval_step a loss with reduction='none'"
        )
    return losses
