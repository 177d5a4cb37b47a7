"""One batch computed in parts, concurrently, on several CPU streams.

MLX's CPU backend runs each stream on its own thread, and every operation of a stream except
the matrix products on that one thread. A training or evaluation step that splits its batch
into ``n`` equal parts, each computed on its own stream with a one-thread BLAS, keeps ``n``
cores busy through the whole step (convolutions, element-wise operations, pooling) instead of
only during the matrix products.

A training step in parts computes the same update as one on the whole batch when the loss is a
mean over samples: the batch's loss and gradients are then the size-weighted means of the
parts'. That holds for models without batch statistics. A BatchNorm in training mode would
normalise each part with that part's statistics (as data-parallel training over processes
does), so ``"auto"`` splits the training batch only of models without batch statistics and
with a loss known to be a mean (:func:`mlxvision.engine.losses.is_sample_mean`), unless told
otherwise.

Where ``"auto"`` keeps the batch whole on the CPU, the step splits only its convolutions
(:func:`conv_streams`, :func:`mlxvision.ops.convolutions_in_parts`): each convolution's
passes run per part on its own stream, and everything between them, batch norms included,
sees the whole batch.

The cores of a process are shared as ``streams × BLAS threads``: building a training step sets
the BLAS to ``cores // streams`` threads (:func:`mlxvision.backend.set_blas_threads`; a set
``OPENBLAS_NUM_THREADS`` wins), and an evaluation step's ``"auto"`` uses the cores the BLAS
leaves free.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from .. import backend
from ..backend import available_cores, on_cpu
from ..native import onednn_conv
from ..ops import Conv2d, part_bounds, unordered_conv_gradients
from .losses import cross_entropy, is_sample_mean

RUNNING_STATISTICS = ("running_mean", "running_var")


def running_statistics(model: nn.Module) -> dict[str, mx.array]:
    """The model's batch-statistics buffers (BatchNorm running means and variances), by name.

    Example:
        >>> sorted(running_statistics(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm(3))))
        ['layers.1.running_mean', 'layers.1.running_var']
    """
    return {
        name: value
        for name, value in tree_flatten(model.parameters())
        if name.rsplit(".", 1)[-1] in RUNNING_STATISTICS
    }


def _check_count(streams: int | str, name: str) -> None:
    if streams == "auto":
        return
    if isinstance(streams, bool) or not isinstance(streams, int) or streams < 1:
        raise ValueError(f"{name}: expected 'auto' or a positive int, got {streams!r}")


def train_streams(
    streams: int | str, model: nn.Module, cores: int, loss_fn: Callable = cross_entropy
) -> int:
    """How many parts a training step splits its batch into.

    ``"auto"``: off the CPU 1; on the CPU ``cores`` (this process's share), or 1 when the
    model has batch statistics or the loss is not known to be a mean over samples (see the
    module's docstring). A number is taken as given.

    Example:
        >>> train_streams("auto", nn.Linear(2, 2), cores=4) == (4 if on_cpu() else 1)
        True
        >>> train_streams("auto", nn.BatchNorm(2), cores=4)
        1
        >>> train_streams("auto", nn.Linear(2, 2), cores=4, loss_fn=lambda y, t: y.sum())
        1
        >>> train_streams(3, nn.BatchNorm(2), cores=4)
        3
    """
    _check_count(streams, "streams")
    if streams != "auto":
        return int(streams)
    if not on_cpu() or running_statistics(model) or not is_sample_mean(loss_fn):
        return 1
    return max(1, cores)


def conv_streams(streams: int | str, model: nn.Module, parts: int, cores: int) -> int:
    """Into how many parts a training step splits each convolution's batch.

    ``"auto"`` on the CPU, with the batch kept whole (``parts`` = 1), several cores, a model
    with :class:`mlxvision.ops.Conv2d` layers and no native convolution
    (:func:`mlxvision.native.onednn_conv`, which threads each pass itself: ResNet-20 0.66×
    PyTorch's speed on one stream against 0.54× in parts): one per core; else 1 (a number
    of ``streams`` asked for is taken as the whole split).

    Example:
        >>> from mlxvision.ops import Conv2d
        >>> from mlxvision.native import onednn_conv
        >>> parts = conv_streams("auto", Conv2d(3, 8, 3), parts=1, cores=2)
        >>> parts == (2 if on_cpu() and onednn_conv() is None else 1)
        True
        >>> conv_streams("auto", nn.Linear(2, 2), parts=1, cores=2)
        1
    """
    if streams != "auto" or parts > 1 or not on_cpu() or onednn_conv() is not None:
        return 1  # oneDNN's convolutions (mlxvision.native) use every core themselves
    convolutions = any(isinstance(module, Conv2d) for _, module in model.named_modules())
    return max(1, cores) if convolutions else 1


def eval_streams(streams: int | str, cores: int | None = None) -> int:
    """How many parts an evaluation step splits its batch into.

    ``"auto"``: off the CPU 1; on the CPU the cores left over by the BLAS threads mlxvision
    set (:data:`mlxvision.backend.BLAS_THREADS`; none set: 1, the BLAS has every core).

    Example:
        >>> eval_streams(2)
        2
        >>> eval_streams("auto", cores=1)
        1
    """
    _check_count(streams, "streams")
    if streams != "auto":
        return int(streams)
    threads = backend.BLAS_THREADS.get("count")
    if not on_cpu() or not threads:
        return 1
    cores = available_cores() if cores is None else cores
    return max(1, cores // threads)


def share_cores_with_blas(streams: int, cores: int) -> int:
    """Set the BLAS to ``cores // streams`` threads on the CPU; return the count (0: unchanged).

    Unchanged off the CPU, when ``OPENBLAS_NUM_THREADS`` is set, or when mlxvision loaded no
    BLAS it can tell.

    Example:
        >>> share_cores_with_blas(1, cores=1) in (0, 1)
        True
    """
    if not on_cpu() or os.environ.get("OPENBLAS_NUM_THREADS"):
        return 0
    threads = max(1, cores // streams)
    return threads if backend.set_blas_threads(threads) else 0


class StreamSplit:
    """Split arrays along their first axis into ``count`` parts, one stream each.

    The streams (on the default device) are made on first use, by the thread that uses them:
    MLX streams belong to the thread that made them.

    Example:
        >>> split = StreamSplit(2)
        >>> [(weight, x.tolist()) for weight, (x,) in split.parts(mx.arange(5))]
        [(0.6, [0, 1, 2]), (0.4, [3, 4])]
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"StreamSplit: count must be a positive int, got {count}")
        self.count = count
        self._streams: list[mx.Stream] | None = None

    @property
    def streams(self) -> list[mx.Stream]:
        if self._streams is None:
            device = mx.default_device()
            self._streams = [mx.new_stream(device) for _ in range(self.count)]
        return self._streams

    def bounds(self, size: int) -> list[tuple[int, int]]:
        """``(start, stop)`` of each non-empty part of ``size`` rows, the first ones larger."""
        return part_bounds(size, self.count)

    def parts(self, *arrays: mx.array):
        """Yield ``(weight, part_arrays)`` per part, ``weight`` = its share of the rows, each
        inside its stream's context (operations made there run on that stream)."""
        size = arrays[0].shape[0]
        for (start, stop), stream in zip(self.bounds(size), self.streams, strict=False):
            with mx.stream(stream), unordered_conv_gradients():
                yield (stop - start) / size, tuple(a[start:stop] for a in arrays)


def weighted_sum(weights: Sequence[float], trees: Sequence[Any]) -> Any:
    """``Σ weight·tree``, leaf by leaf.

    Example:
        >>> weighted_sum([0.5, 0.5], [{"a": mx.array(1.0)}, {"a": mx.array(3.0)}])["a"].item()
        2.0
    """

    def combine(*leaves: mx.array) -> mx.array:
        scaled = [leaf if w == 1 else leaf * w for w, leaf in zip(weights, leaves, strict=True)]
        return sum(scaled[1:], scaled[0])

    return tree_map(combine, *trees)


def value_and_grad_in_parts(
    split: StreamSplit,
    model: nn.Module,
    part_step: Callable[[mx.array, mx.array, float], tuple[mx.array, mx.array, Any]],
    images: mx.array,
    targets: mx.array,
    *,
    start_forward: bool = True,
) -> tuple[mx.array, mx.array, Any]:
    """``(loss, correct, grads)`` of ``part_step`` over the parts of a batch, combined.

    ``part_step(images, targets, weight) -> (mean loss, correct count, weighted grads)`` runs
    once per part on that part's stream; ``weight`` is the part's share of the batch and the
    gradients must be those of ``weight ×`` the mean loss over the part's samples (weighting the
    loss, not the gradients, saves two passes over them). The loss is the size-weighted mean of
    the parts', the gradients and correct counts add up. Every part starts from the step's
    running statistics; afterwards the model holds their size-weighted mean.

    ``start_forward`` (not allowed inside ``mx.compile``) schedules the forward passes before
    returning (``mx.async_eval``). MLX's scheduler keeps only a few operations in flight and
    orders them by a width-limited walk of the graph, which left one stream idle for much of
    the forward pass when the whole step was evaluated at once (simple_cnn, batch 128, 2
    streams: 0.56 s against 0.46-0.51 s per step).

    Example:
        >>> import mlx.optimizers as optim
        >>> from mlxvision.engine.steps import TrainStep
        >>> model = nn.Linear(3, 2)
        >>> step = TrainStep(model, optim.SGD(learning_rate=0.1), streams=2)
        >>> loss, correct = step(mx.ones((5, 3)), mx.array([0, 1, 0, 1, 0]))
        >>> loss.shape, int(correct) <= 5
        ((), True)
    """
    start = running_statistics(model)
    weights, losses, corrects, grads, statistics = [], [], [], [], []
    try:
        for weight, (part_images, part_targets) in split.parts(images, targets):
            if start:
                model.update(tree_unflatten(list(start.items())))
            loss, correct, part_grads = part_step(part_images, part_targets, weight)
            weights.append(weight)
            losses.append(loss)
            corrects.append(correct)
            grads.append(part_grads)
            if start:
                statistics.append(running_statistics(model))
    except (ValueError, TypeError):
        part_step(images, targets, 1.0)  # the same error, naming the whole batch's shapes
        raise
    if start:
        model.update(tree_unflatten(list(weighted_sum(weights, statistics).items())))
    loss = weighted_sum(weights, losses)
    correct = sum(corrects[1:], corrects[0])
    if start_forward:
        mx.async_eval(loss, correct)
    return loss, correct, weighted_sum([1] * len(grads), grads)


def sums_in_parts(
    split: StreamSplit, step: Callable[..., dict[str, mx.array]], *arrays: mx.array
) -> dict[str, mx.array]:
    """The sums an evaluation ``step(*arrays)`` returns, computed part by part and added.

    Example:
        >>> split = StreamSplit(2)
        >>> sums_in_parts(split, lambda x: {"total": x.sum()}, mx.arange(5))["total"].item()
        10
    """
    results = [step(*part) for _, part in split.parts(*arrays)]
    return weighted_sum([1] * len(results), results)
