"""Batches of ``(images, labels)`` as ``mx.array`` from an in-memory dataset."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import mlx.core as mx
import numpy as np

from .datasets.arrays import ArrayDataset

BatchTransform = Callable[..., tuple[mx.array, mx.array]]


def batch_key(seed: int, epoch: int, batch: int, stream: int = 0, rank: int = 0) -> mx.array:
    """The random key of one batch: a pure function of ``(seed, epoch, batch, stream, rank)``.

    ``stream`` tells independent uses apart: the dataset's transform gets stream 0, the loader's
    ``batch_transform`` stream 1. ``rank`` gives each data-parallel process its own draws.

    Example:
        >>> bool((batch_key(0, 1, 2) == batch_key(0, 1, 2)).all())
        True
    """
    entropy = [seed, epoch, batch] + ([stream] if stream or rank else []) + ([rank] if rank else [])
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return mx.random.key(int(state))


class DataLoader:
    """Iterate over a dataset in batches of ``(images, labels)``, images NHWC on the device.

    Order and randomness depend only on ``seed`` and the epoch number: the n-th pass over a
    loader made with the same arguments yields the same batches. Each ``iter()`` starts the next
    epoch; :meth:`set_epoch` chooses one. Batch ``b`` of epoch ``e`` is transformed by the
    dataset's ``transform`` with the key ``batch_key(seed, e, b)``, then by ``batch_transform``
    (for example :class:`~mlxvision.data.transforms.MixUp`; it returns soft targets in place of
    the labels) with ``batch_key(seed, e, b, stream=1)``.

    Prefetch: before batch ``b`` is handed out, batch ``b + 1`` is gathered, copied to the device
    and its transform scheduled with ``mx.async_eval``, so the device computes it while the
    caller works on batch ``b`` and never waits for the host. All of it runs on the calling
    thread: MLX streams belong to the thread that made them, and a background thread for the
    NumPy gather alone measured no faster. ``prefetch=False`` builds each batch only when asked
    for, lazily (nothing is evaluated).

    Sharding for data-parallel training: with ``world_size`` processes, process ``rank`` gets
    every ``world_size``-th sample of the epoch's order starting at ``rank`` (the same seeded
    permutation on every rank, so the ranks' samples are disjoint and together cover the
    dataset). When the dataset size is not a multiple of ``world_size``, the order is first
    padded by repeating its first samples, as PyTorch's ``DistributedSampler``: every rank then
    holds ``ceil(len(dataset) / world_size)`` samples and the same number of batches, and up to
    ``world_size - 1`` samples are seen twice per epoch (evaluation metrics count them twice).
    ``drop_last`` then drops each rank's last incomplete batch; without it that batch is
    smaller.

    Example:
        >>> from mlxvision.data import Digits
        >>> loader = DataLoader(Digits(train=False), batch_size=100)
        >>> len(loader), [tuple(x.shape) for x, _ in loader][-1]
        (4, (60, 8, 8, 1))
        >>> shard = DataLoader(Digits(train=False), batch_size=100, rank=1, world_size=7)
        >>> len(shard), len(shard.indices(0))  # ceil(360 / 7) samples per rank
        (1, 52)
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int = 64,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        prefetch: bool = True,
        rank: int = 0,
        world_size: int = 1,
        batch_transform: BatchTransform | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        if not hasattr(dataset, "images") or not hasattr(dataset, "labels"):
            raise TypeError(
                f"dataset: expected an in-memory dataset with .images and .labels "
                f"(for example ArrayDataset), got {type(dataset).__name__}; for an ImageFolder "
                "use ImageFolder(...).to_arrays(), or stream it with ImageFolder(...).batches()"
            )
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size: expected a positive int, got {world_size!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank: expected an int in [0, {world_size}), got {rank!r}")
        if len(dataset) == 0:
            raise ValueError("dataset: is empty")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.prefetch = prefetch
        self.rank = rank
        self.world_size = world_size
        self.batch_transform = batch_transform
        self.epoch = 0
        if drop_last and self.samples_per_rank < batch_size:
            raise ValueError(
                f"drop_last=True with batch_size={batch_size} leaves no batch of "
                f"{self.samples_per_rank} samples per rank ({len(dataset)} samples, "
                f"world_size={world_size})"
            )

    @property
    def samples_per_rank(self) -> int:
        """Samples per rank and epoch, padding included: ``ceil(len(dataset) / world_size)``."""
        return math.ceil(len(self.dataset) / self.world_size)

    def __len__(self) -> int:
        n = self.samples_per_rank
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` yield epoch ``epoch`` (its order and augmentation)."""
        self.epoch = int(epoch)

    def order(self, epoch: int) -> np.ndarray:
        """All sample indices of ``epoch`` in order, before sharding and padding."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def indices(self, epoch: int) -> np.ndarray:
        """This rank's sample indices of ``epoch``, in the order they are batched."""
        order = self.order(epoch)
        total = self.samples_per_rank * self.world_size
        if total > len(order):
            order = np.resize(order, total)  # repeats the order from its start
        return order[self.rank : total : self.world_size]

    def _batch(self, epoch: int, b: int, idx: np.ndarray) -> tuple[mx.array, mx.array]:
        ds = self.dataset
        images, labels = mx.array(ds.images[idx]), mx.array(ds.labels[idx])
        if ds.transform is not None:
            images = ds.transform(images, key=batch_key(self.seed, epoch, b, rank=self.rank))
        if self.batch_transform is not None:
            images, labels = self.batch_transform(
                images, labels, key=batch_key(self.seed, epoch, b, stream=1, rank=self.rank)
            )
        return images, labels

    def _scheduled(self, epoch: int, b: int, idx: np.ndarray) -> tuple[mx.array, mx.array]:
        batch = self._batch(epoch, b, idx)
        mx.async_eval(batch)
        return batch

    def __iter__(self) -> Iterator[tuple[mx.array, mx.array]]:
        epoch = self.epoch
        self.epoch += 1
        indices = self.indices(epoch)
        size = self.batch_size
        batches = [indices[b * size : (b + 1) * size] for b in range(len(self))]
        if not self.prefetch:
            for b, idx in enumerate(batches):
                yield self._batch(epoch, b, idx)
            return
        pending = self._scheduled(epoch, 0, batches[0]) if batches else None
        for b in range(len(batches)):
            current = pending
            if b + 1 < len(batches):
                pending = self._scheduled(epoch, b + 1, batches[b + 1])
            yield current

    def __repr__(self) -> str:
        shard = f", rank={self.rank}, world_size={self.world_size}" if self.world_size > 1 else ""
        return (
            f"DataLoader(samples={len(self.dataset)}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed}{shard})"
        )
