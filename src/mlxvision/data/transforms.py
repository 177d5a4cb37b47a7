"""Batch transforms that run on the device, vectorized, with per-sample randomness.

Every transform takes a batch of images ``N×H×W×C`` (an ``mx.array``) and an optional random
``key`` (from ``mx.random.key``); the same key gives the same batch. Without a key, MLX's global
random state is used. Names and semantics follow torchvision where they apply to NHWC batches.

Example:
    >>> import mlx.core as mx
    >>> t = Compose([RandomCrop(8, padding=1), RandomHorizontalFlip(), ToTensor(),
    ...              Normalize([0.5], [0.5])])
    >>> batch = mx.zeros((4, 8, 8, 1), dtype=mx.uint8)
    >>> t(batch, key=mx.random.key(0)).shape
    (4, 8, 8, 1)
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx


def _check_batch(images: mx.array, who: str) -> None:
    if images.ndim != 4:
        raise ValueError(
            f"{who}: expected a batch of images N×H×W×C, got an array of shape {images.shape}"
        )


def _pair(size: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) <= 0:
        raise ValueError(f"{what}: expected a positive int or (height, width), got {size!r}")
    return pair


class Transform:
    """Base class: ``transform(images, key=None) -> images``."""

    def __call__(self, images: mx.array, key: mx.array | None = None) -> mx.array:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Compose(Transform):
    """Apply transforms in order, giving each its own part of the random key.

    Example:
        >>> Compose([ToTensor()])(mx.full((1, 2, 2, 1), 255, dtype=mx.uint8)).max().item()
        1.0
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, images: mx.array, key: mx.array | None = None) -> mx.array:
        keys = mx.random.split(key, len(self.transforms)) if key is not None else None
        for i, transform in enumerate(self.transforms):
            images = transform(images, key=None if keys is None else keys[i])
        return images


class ToFloat(Transform):
    """Convert integer images in 0–255 to floats in [0, 1]; float images only change dtype.

    Example:
        >>> ToFloat()(mx.array([[[[0], [255]]]], dtype=mx.uint8)).tolist()
        [[[[0.0], [1.0]]]]
    """

    def __init__(self, dtype: mx.Dtype = mx.float32) -> None:
        self.dtype = dtype

    def __call__(self, images: mx.array, key: mx.array | None = None) -> mx.array:
        if mx.issubdtype(images.dtype, mx.integer):
            return images.astype(self.dtype) * (1.0 / 255.0)
        return images.astype(self.dtype)


class ToTensor(ToFloat):
    """torchvision's name for :class:`ToFloat`; the layout stays NHWC.

    Example:
        >>> ToTensor()(mx.zeros((1, 2, 2, 3), dtype=mx.uint8)).dtype
        mlx.core.float32
    """


class Normalize(Transform):
    """``(images - mean) / std`` per channel (the last axis).

    Example:
        >>> Normalize([0.5], [0.25])(mx.ones((1, 1, 1, 1))).item()
        2.0
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std):
            raise ValueError(f"Normalize: mean {self.mean} and std {self.std} differ in length")
        if min(self.std) <= 0:
            raise ValueError(f"Normalize: std must be positive, got {self.std}")

    def __call__(self, images: mx.array, key: mx.array | None = None) -> mx.array:
        _check_batch(images, "Normalize")
        channels = images.shape[-1]
        if len(self.mean) not in (1, channels):
            raise ValueError(
                f"Normalize: images have {channels} channels (shape {images.shape}) but mean/std "
                f"have {len(self.mean)} values"
            )
        if not mx.issubdtype(images.dtype, mx.floating):
            raise TypeError(
                f"Normalize: expected float images, got {images.dtype}; put ToTensor() before it"
            )
        mean = mx.array(self.mean, dtype=images.dtype)
        inv_std = mx.array([1.0 / s for s in self.std], dtype=images.dtype)
        return (images - mean) * inv_std


class RandomHorizontalFlip(Transform):
    """Mirror each image left–right with probability ``p``, independently per sample.

    Example:
        >>> x = mx.array([[[[1], [2]]]])
        >>> RandomHorizontalFlip(p=1.0)(x).reshape(-1).tolist()
        [2, 1]
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, images: mx.array, key: mx.array | None = None) -> mx.array:
        _check_batch(images, "RandomHorizontalFlip")
        flip = mx.random.uniform(shape=(images.shape[0], 1, 1, 1), key=key) < self.p
        return mx.where(flip, images[:, :, ::-1, :], images)


class RandomCrop(Transform):
    """Pad each side by ``padding`` (with ``fill``), then crop ``size`` at a random place per image.

    Offsets are uniform over every position where the crop fits, as in torchvision.

    Example:
        >>> RandomCrop(32, padding=4)(mx.zeros((2, 32, 32, 3))).shape
        (2, 32, 32, 3)
    """

    def __init__(
        self, size: int | Sequence[int], padding: int | None = None, fill: float = 0
    ) -> None:
        self.size = _pair(size, "RandomCrop size")
        self.padding = int(padding or 0)
        if self.padding < 0:
            raise ValueError(f"RandomCrop: padding must be >= 0, got {padding}")
        self.fill = fill

    def __call__(self, images: mx.array, key: mx.array | None = None) -> mx.array:
        _check_batch(images, "RandomCrop")
        p = self.padding
        if p:
            images = mx.pad(images, [(0, 0), (p, p), (p, p), (0, 0)], constant_values=self.fill)
        n, height, width, _ = images.shape
        crop_h, crop_w = self.size
        if crop_h > height or crop_w > width:
            raise ValueError(
                f"RandomCrop: crop {crop_h}×{crop_w} is larger than the (padded) images "
                f"{height}×{width}"
            )
        key_y, key_x = mx.random.split(key) if key is not None else (None, None)
        top = mx.random.randint(0, height - crop_h + 1, shape=(n,), key=key_y)
        left = mx.random.randint(0, width - crop_w + 1, shape=(n,), key=key_x)
        return crop_at(images, top, left, (crop_h, crop_w))


def crop_at(images: mx.array, top: mx.array, left: mx.array, size: tuple[int, int]) -> mx.array:
    """Crop ``size`` out of each image at its own ``(top[i], left[i])``, in one gather.

    Example:
        >>> x = mx.arange(16).reshape(1, 4, 4, 1)
        >>> crop_at(x, mx.array([1]), mx.array([2]), (2, 2)).reshape(-1).tolist()
        [6, 7, 10, 11]
    """
    crop_h, crop_w = size
    rows = top[:, None] + mx.arange(crop_h)[None, :]
    cols = left[:, None] + mx.arange(crop_w)[None, :]
    batch = mx.arange(images.shape[0])[:, None, None]
    return images[batch, rows[:, :, None], cols[:, None, :]]
