"""A dataset held on the device, batched and augmented there: no host work per batch.

For small datasets that fit in device memory (CIFAR, MNIST), the fastest loader keeps every
image on the device, normalized once, and builds each batch with one gather that shuffles,
translates and mirrors at the same time. This is how the fast CIFAR-10 training records feed
their GPUs; :class:`DeviceLoader` gives it to any training loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import mlx.core as mx
import numpy as np

from .loader import batch_key


def _reflect(index: mx.array, size: int) -> mx.array:
    """Indices outside ``[0, size)`` mirrored back inside, as reflect padding does."""
    index = mx.abs(index)
    return mx.where(index > size - 1, 2 * (size - 1) - index, index)


def translate_flip(
    images: mx.array,
    shifts: mx.array,
    flip: mx.array | None = None,
    indices: mx.array | None = None,
) -> mx.array:
    """Each image moved by its own ``(dy, dx)`` shift, mirrored where ``flip`` is set.

    The result equals reflect-padding by the largest shift, cropping each image at its offset
    and then flipping it left to right: ``out[b, i, j] = images[b, reflect(i + dy), reflect(j
    + dx)]`` with ``j`` mirrored first for flipped images. It is one gather, so it costs one
    pass over the output. ``images`` is ``(N, H, W, C)``; ``shifts`` ``(B, 2)`` integers;
    ``flip`` ``(B,)`` booleans; ``indices`` ``(B,)`` picks the images first (a shuffled batch
    without a separate copy; default: all ``N = B`` images in order).

    Example:
        >>> x = mx.arange(16).reshape(1, 4, 4, 1)
        >>> translate_flip(x, mx.array([[0, 1]]))[0, :, :, 0].tolist()[0]
        [1, 2, 3, 2]
        >>> translate_flip(x, mx.array([[0, 0]]), flip=mx.array([True]))[0, 0, :, 0].tolist()
        [3, 2, 1, 0]
    """
    if images.ndim != 4:
        raise ValueError(f"images: expected (N, H, W, C), got shape {images.shape}")
    count = shifts.shape[0]
    if shifts.shape != (count, 2):
        raise ValueError(f"shifts: expected shape ({count}, 2), got {shifts.shape}")
    _, height, width, _ = images.shape
    columns = mx.arange(width)[None]
    if flip is not None:
        columns = mx.where(flip[:, None], width - 1 - columns, columns)
    rows = _reflect(shifts[:, :1] + mx.arange(height)[None], height)
    columns = _reflect(shifts[:, 1:] + columns, width)
    if indices is None:
        indices = mx.arange(count)
    return images[indices[:, None, None], rows[:, :, None], columns[:, None, :]]


def random_translate_flip(
    images: mx.array, max_shift: int, key: mx.array, flip: bool = True
) -> mx.array:
    """Random translation by up to ``max_shift`` pixels (reflect padding) and random mirroring
    of every image of a batch, on the device.

    Example:
        >>> x = mx.random.uniform(shape=(8, 16, 16, 3))
        >>> random_translate_flip(x, 2, mx.random.key(0)).shape
        (8, 16, 16, 3)
    """
    shift_key, flip_key = mx.random.split(key)
    count = images.shape[0]
    shifts = mx.random.randint(-max_shift, max_shift + 1, (count, 2), key=shift_key)
    mirror = mx.random.bernoulli(0.5, (count,), key=flip_key) if flip else None
    return translate_flip(images, shifts, mirror)


class DeviceLoader:
    """Shuffled, augmented batches of a dataset held on the device.

    ``images`` (``(N, H, W, C)`` uint8 or floats in [0, 1]) are converted to ``dtype`` and
    normalized with ``mean``/``std`` once, on the device. Every epoch reshuffles; each batch is
    then gathered, randomly translated by up to ``translate`` pixels (reflect padding) and
    mirrored, in one gather.

    Mirroring is *alternating*, as in the airbench CIFAR-10 records: a seeded random half of
    the images is mirrored in even epochs, and exactly the other half in odd epochs, so every
    image is seen both ways every two epochs (``flip="random"`` draws afresh each epoch).

    Randomness depends only on ``seed`` and the epoch, so the same arguments give the same
    batches. With ``world_size`` processes (data-parallel training), ``batch_size`` is the global
    batch and each process gets its ``rank``-th equal part of every batch: together the
    processes see exactly the batches, shifts and mirrors of a single process. ``drop_last``
    (the default when shuffling) keeps every batch the same shape, so a compiled step never
    recompiles.

    Example:
        >>> images = np.zeros((10, 8, 8, 3), np.uint8)
        >>> loader = DeviceLoader(images, np.arange(10) % 2, batch_size=4, translate=1)
        >>> len(loader), [x.shape for x, _ in loader]
        (2, [(4, 8, 8, 3), (4, 8, 8, 3)])
    """

    def __init__(
        self,
        images: np.ndarray | mx.array,
        labels: np.ndarray | mx.array | Sequence[int],
        batch_size: int,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        translate: int = 0,
        flip: bool | str = "alternating",
        shuffle: bool = True,
        drop_last: bool | None = None,
        seed: int = 0,
        dtype: mx.Dtype = mx.float32,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        images = mx.array(images) if not isinstance(images, mx.array) else images
        labels = mx.array(np.asarray(labels)) if not isinstance(labels, mx.array) else labels
        if images.ndim != 4:
            raise ValueError(f"images: expected (N, H, W, C), got shape {images.shape}")
        if labels.shape != images.shape[:1]:
            raise ValueError(
                f"labels: expected one label per image, shape ({images.shape[0]},), "
                f"got {labels.shape}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size}")
        drop_last = shuffle if drop_last is None else drop_last
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of world_size {world_size}: expected 0 <= rank < size")
        if batch_size % world_size:
            raise ValueError(
                f"batch_size {batch_size} must divide evenly over world_size {world_size}"
            )
        if world_size > 1 and not (shuffle and drop_last):
            raise ValueError("world_size > 1 needs shuffle=True and drop_last (equal shards)")
        if flip not in (True, False, "alternating", "random"):
            raise ValueError(f"flip: expected 'alternating', 'random' or False, got {flip!r}")
        if translate < 0 or translate >= min(images.shape[1:3]):
            raise ValueError(
                f"translate: expected 0 <= translate < image size {images.shape[1:3]}, "
                f"got {translate}"
            )
        self.images = normalize(images, mean, std, dtype)
        self.labels = labels.astype(mx.int32)
        self.batch_size = int(batch_size)
        self.translate = int(translate)
        self.flip = "alternating" if flip is True else flip
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0
        count = images.shape[0]
        self._base_flip = mx.random.bernoulli(0.5, (count,), key=batch_key(self.seed, 0, 0, 2))

    def __len__(self) -> int:
        count = self.images.shape[0]
        if self.drop_last:
            return count // self.batch_size
        return -(-count // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` yield epoch ``epoch`` (counted from 0)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[mx.array, mx.array]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        count = self.images.shape[0]
        key = batch_key(self.seed, epoch, 0, 3)
        order_key, shift_key, flip_key = mx.random.split(key, 3)
        order = mx.random.permutation(count, key=order_key) if self.shuffle else mx.arange(count)
        if self.flip == "alternating":
            mirror = self._base_flip if epoch % 2 == 0 else mx.logical_not(self._base_flip)
        elif self.flip == "random":
            mirror = mx.random.bernoulli(0.5, (count,), key=flip_key)
        else:
            mirror = None
        augment = self.translate > 0 or mirror is not None
        shifts = mx.random.randint(-self.translate, self.translate + 1, (count, 2), key=shift_key)
        part = self.batch_size // self.world_size
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            first = start + self.rank * part
            picked = order[first : first + part]
            if augment:
                flips = mirror[picked] if mirror is not None else None
                batch = translate_flip(self.images, shifts[picked], flips, indices=picked)
            else:
                batch = self.images[picked]
            yield batch, self.labels[picked]


def normalize(
    images: mx.array,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    dtype: mx.Dtype = mx.float32,
) -> mx.array:
    """``(images / 255 - mean) / std`` for uint8 images, ``(images - mean) / std`` for floats,
    in ``dtype``.

    Example:
        >>> normalize(mx.array([[[[255]]]], dtype=mx.uint8), [0.5], [0.5]).item()
        1.0
    """
    scaled = images.astype(mx.float32)
    if images.dtype == mx.uint8:
        scaled = scaled / 255.0
    if mean is not None:
        scaled = scaled - mx.array(mean, dtype=mx.float32)
    if std is not None:
        scaled = scaled / mx.array(std, dtype=mx.float32)
    return scaled.astype(dtype)
