"""Batches of ``(images, labels)`` as ``mx.array`` from an in-memory dataset."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import mlx.core as mx
import numpy as np

from .datasets.arrays import ArrayDataset


def batch_key(seed: int, epoch: int, batch: int) -> mx.array:
    """The random key of one batch: a pure function of ``(seed, epoch, batch)``.

    Example:
        >>> bool((batch_key(0, 1, 2) == batch_key(0, 1, 2)).all())
        True
    """
    state = np.random.SeedSequence([seed, epoch, batch]).generate_state(1, dtype=np.uint64)[0]
    return mx.random.key(int(state))


class DataLoader:
    """Iterate over a dataset in batches of ``(images, labels)``, images NHWC on the device.

    Shuffling, and the dataset's random transforms, depend only on ``seed`` and the epoch number:
    the n-th pass over a loader made with the same seed yields the same batches. Each ``iter()``
    starts the next epoch; :meth:`set_epoch` chooses one. The next batch is gathered on a
    background thread while the current one is in use.

    Example:
        >>> from mlxvision.data import Digits
        >>> loader = DataLoader(Digits(train=False), batch_size=100)
        >>> len(loader), [tuple(x.shape) for x, _ in loader][-1]
        (4, (60, 8, 8, 1))
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int = 64,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        prefetch: bool = True,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        if not hasattr(dataset, "images") or not hasattr(dataset, "labels"):
            raise TypeError(
                f"dataset: expected an in-memory dataset with .images and .labels "
                f"(for example ArrayDataset), got {type(dataset).__name__}"
            )
        if len(dataset) == 0:
            raise ValueError("dataset: is empty")
        if drop_last and len(dataset) < batch_size:
            raise ValueError(
                f"drop_last=True with batch_size={batch_size} leaves no batch of a dataset of "
                f"{len(dataset)} samples"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.prefetch = prefetch
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` yield epoch ``epoch`` (its order and augmentation)."""
        self.epoch = int(epoch)

    def order(self, epoch: int) -> np.ndarray:
        """Sample indices of ``epoch`` in the order they are batched."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def __iter__(self) -> Iterator[tuple[mx.array, mx.array]]:
        epoch = self.epoch
        self.epoch += 1
        order = self.order(epoch)
        starts = range(0, len(self) * self.batch_size, self.batch_size)
        ds = self.dataset

        def gather(start: int) -> tuple[np.ndarray, np.ndarray]:
            idx = order[start : start + self.batch_size]
            return ds.images[idx], ds.labels[idx]

        with ThreadPoolExecutor(max_workers=1) if self.prefetch else _Inline() as pool:
            pending = pool.submit(gather, starts[0]) if len(starts) else None
            for b, _start in enumerate(starts):
                images, labels = pending.result()
                if b + 1 < len(starts):
                    pending = pool.submit(gather, starts[b + 1])
                x = mx.array(images)
                if ds.transform is not None:
                    x = ds.transform(x, key=batch_key(self.seed, epoch, b))
                yield x, mx.array(labels)

    def __repr__(self) -> str:
        return (
            f"DataLoader(samples={len(self.dataset)}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed})"
        )


class _Inline:
    """A stand-in for an executor that runs work at once, on the calling thread."""

    class _Done:
        def __init__(self, value):
            self.value = value

        def result(self):
            return self.value

    def submit(self, fn, *args):
        return self._Done(fn(*args))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
