"""Batch transforms that run on the device, vectorized, with per-sample randomness.

Every image transform takes a batch of images ``N×H×W×C`` (an ``mx.array``) and an optional
random ``key`` (from ``mx.random.key``) and returns the transformed batch; the same key gives the
same batch. Without a key, MLX's global random state is used. Names and semantics follow
torchvision where they apply to NHWC batches; what differs is said in each class.

Random transforms split their work in two: ``params(shape, key)`` draws the random numbers of
every sample (crop boxes, flip decisions, factors) as arrays of length ``N``, and
``apply(images, params)`` does the work. ``t(images, key)`` is
``t.apply(images, t.params(images.shape, key))``, so the parameters a batch was made with can
always be reproduced.

Dtypes: geometric transforms (crops, flips, resizes, erasing with an integer value) keep the
dtype, so ``uint8`` batches stay small until :class:`ToTensor`; resampling transforms round back
to the integer dtype as torchvision does. Transforms that compute with colours
(:class:`Normalize`, :class:`ColorJitter`, :class:`MixUp`) need float images and raise a
``TypeError`` that says so when given integers.

The batch-level :class:`MixUp` and :class:`CutMix` take ``(images, labels, key)`` and return
``(images, soft_targets)``; :class:`BatchTransform` states the exact convention.

``Compose(..., compile=True)`` runs the whole chain through ``mx.compile``, fusing the
element-wise steps into fewer passes over the batch.

Example:
    >>> import mlx.core as mx
    >>> t = Compose([RandomCrop(8, padding=1), RandomHorizontalFlip(), ToTensor(),
    ...              Normalize([0.5], [0.5])])
    >>> batch = mx.zeros((4, 8, 8, 1), dtype=mx.uint8)
    >>> t(batch, key=mx.random.key(0)).shape
    (4, 8, 8, 1)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import mlx.core as mx
import numpy as np

# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.2989, 0.587, 0.114)
_RESAMPLE_TRIES = 10


def _check_batch(images: mx.array, who: str) -> None:
    if not isinstance(images, mx.array) or images.ndim != 4:
        shape = getattr(images, "shape", None)
        raise ValueError(
            f"{who}: expected a batch of images N×H×W×C as an mx.array, got "
            f"{type(images).__name__} of shape {shape}"
        )


def _require_float(images: mx.array, who: str) -> None:
    if not mx.issubdtype(images.dtype, mx.floating):
        raise TypeError(
            f"{who}: expected float images, got {images.dtype}; put ToTensor() before it to turn "
            "integer images in 0-255 into floats in [0, 1]"
        )


def _pair(size: int | Sequence[int], what: str) -> tuple[int, int]:
    if isinstance(size, int | np.integer):
        pair = (int(size), int(size))
    else:
        pair = tuple(int(s) for s in size)
        if len(pair) == 1:
            pair = (pair[0], pair[0])
    if len(pair) != 2 or min(pair) <= 0:
        raise ValueError(f"{what}: expected a positive int or (height, width), got {size!r}")
    return pair


def _range(value: Sequence[float], what: str, low: float = 0.0) -> tuple[float, float]:
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or not low <= pair[0] <= pair[1]:
        raise ValueError(f"{what}: expected (min, max) with {low} <= min <= max, got {value!r}")
    return pair


def _split(key: mx.array | None, n: int) -> list[mx.array | None]:
    """``n`` independent keys from ``key``, or ``n`` times ``None`` (global random state)."""
    if key is None:
        return [None] * n
    return list(mx.random.split(key, n))


def _first_true(ok: mx.array, *values: mx.array) -> tuple[mx.array, ...]:
    """Per row of ``ok`` (N×tries), whether any try is True and each value at the first one."""
    first = mx.argmax(ok, axis=1)[:, None]
    picked = tuple(mx.take_along_axis(v, first, axis=1)[:, 0] for v in values)
    return (ok.any(axis=1), *picked)


def _box_mask(
    shape: Sequence[int], top: mx.array, left: mx.array, height: mx.array, width: mx.array
) -> mx.array:
    """N×H×W×1 boolean mask of the per-sample boxes ``[top, top+height) × [left, left+width)``."""
    rows = mx.arange(shape[1])[None, :]
    cols = mx.arange(shape[2])[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :])[..., None]


def _cast_back(result: mx.array, dtype: mx.Dtype) -> mx.array:
    """Round and clip an interpolated float batch back to an integer ``dtype``."""
    if mx.issubdtype(dtype, mx.floating):
        return result.astype(dtype)
    info = np.iinfo(np.dtype(str(dtype).split(".")[-1]))
    return mx.clip(mx.round(result), info.min, info.max).astype(dtype)


class Transform:
    """Base class: ``transform(images, key=None) -> images``.

    A subclass implements ``__call__``; it then composes with the others in :class:`Compose`.

    Example:
        >>> class Invert(Transform):
        ...     def __call__(self, images, key=None):
        ...         return 1.0 - images
        >>> t = Compose([ToTensor(), Invert()])
        >>> t(mx.zeros((1, 2, 2, 1), dtype=mx.uint8)).tolist()
        [[[[1.0], [1.0]], [[1.0], [1.0]]]]
    """

    def __call__(self, images: mx.array, key: mx.array | None = None) -> mx.array:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class RandomTransform(Transform):
    """A transform whose randomness is drawn by :meth:`params` and used by :meth:`apply`.

    ``t(images, key)`` is ``t.apply(images, t.params(images.shape, key))``, so the parameters
    of a batch can be kept, inspected, or applied to a second batch (a mask, say).

    Example:
        >>> flip = RandomHorizontalFlip()
        >>> images = mx.random.uniform(shape=(4, 8, 8, 3))
        >>> params = flip.params(images.shape, key=mx.random.key(0))
        >>> mx.array_equal(flip(images, key=mx.random.key(0)), flip.apply(images, params)).item()
        True
    """

    def params(self, shape: Sequence[int], key: mx.array | None = None) -> NamedTuple:
        """Draw the random parameters of a batch of ``shape`` (N×H×W×C)."""
        raise NotImplementedError

    def apply(self, images: mx.array, params: NamedTuple) -> mx.array:
        """Transform ``images`` with the given parameters (one entry per sample)."""
        raise NotImplementedError

    def __call__(self, images: mx.array, key: mx.array | None = None) -> mx.array:
        _check_batch(images, type(self).__name__)
        return self.apply(images, self.params(images.shape, key))


# ----------------------------------------------------------------------------------------------
# Composition, dtype and normalization


class Compose(Transform):
    """Apply transforms in order, giving each its own part of the random key.

    With ``compile=True`` a call with a ``key`` runs through ``mx.compile``, which fuses the
    element-wise work of consecutive transforms (flip, float conversion, normalization) into
    one pass over the batch: about 1.5× faster for the CIFAR pipeline on a CPU. Every transform
    must then be traceable: MLX operations only, no ``.item()``, no NumPy on the images. A new
    batch shape (the last, smaller batch) traces once more. Calls without a key, which draw from
    MLX's global random state, are not compiled.

    Example:
        >>> Compose([ToTensor()])(mx.full((1, 2, 2, 1), 255, dtype=mx.uint8)).max().item()
        1.0
        >>> fast = Compose([RandomHorizontalFlip(), ToTensor()], compile=True)
        >>> fast(mx.zeros((2, 4, 4, 3), dtype=mx.uint8), key=mx.random.key(0)).dtype
        mlx.core.float32
    """

    def __init__(self, transforms: Sequence[Transform], compile: bool = False) -> None:
        self.transforms = list(transforms)
        self.compile = bool(compile)
        self._compiled = None

    def _apply(self, images: mx.array, key: mx.array | None) -> mx.array:
        for transform, k in zip(self.transforms, _split(key, len(self.transforms)), strict=True):
            images = transform(images, key=k)
        return images

    def __call__(self, images: mx.array, key: mx.array | None = None) -> mx.array:
        if not self.compile or key is None:
            return self._apply(images, key)
        if self._compiled is None:
            self._compiled = mx.compile(self._apply)
        try:
            return self._compiled(images, key)
        except ValueError as error:
            if "function transformations" not in str(error):
                raise
            raise ValueError(
                f"Compose(compile=True): a transform reads array values while being traced by "
                f"mx.compile ({error}); make it use MLX operations only, or pass compile=False"
            ) from error

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_compiled": None}  # compiled functions do not copy or pickle

    def __repr__(self) -> str:
        flag = ", compile=True" if self.compile else ""
        return f"Compose({self.transforms!r}{flag})"


@functools.partial(mx.compile, shapeless=True)
def _scale(images: mx.array, scale: mx.array) -> mx.array:
    return images.astype(scale.dtype) * scale


@functools.partial(mx.compile, shapeless=True)
def _normalize(images: mx.array, mean: mx.array, inv_std: mx.array) -> mx.array:
    return (images - mean) * inv_std


class ToFloat(Transform):
    """Convert integer images in 0–255 to floats in [0, 1]; float images only change dtype.

    Example:
        >>> ToFloat()(mx.array([[[[0], [255]]]], dtype=mx.uint8)).tolist()
        [[[[0.0], [1.0]]]]
    """

    def __init__(self, dtype: mx.Dtype = mx.float32) -> None:
        self.dtype = dtype

    def __getstate__(self) -> dict:
        return {"dtype": str(self.dtype).rsplit(".", 1)[-1]}  # mx.Dtype does not pickle

    def __setstate__(self, state: dict) -> None:
        self.dtype = getattr(mx, state["dtype"])

    def __call__(self, images: mx.array, key: mx.array | None = None) -> mx.array:
        if mx.issubdtype(images.dtype, mx.integer):
            return _scale(images, mx.array(1.0 / 255.0, dtype=self.dtype))
        return images.astype(self.dtype)


class ToTensor(ToFloat):
    """torchvision's name for :class:`ToFloat`; the layout stays NHWC.

    Example:
        >>> ToTensor()(mx.zeros((1, 2, 2, 3), dtype=mx.uint8)).dtype
        mlx.core.float32
    """


class Normalize(Transform):
    """``(images - mean) / std`` per channel (the last axis). Needs float images.

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
        _require_float(images, "Normalize")
        mean = mx.array(self.mean, dtype=images.dtype)
        inv_std = mx.array([1.0 / s for s in self.std], dtype=images.dtype)
        return _normalize(images, mean, inv_std)


# ----------------------------------------------------------------------------------------------
# Flips


class FlipParams(NamedTuple):
    """The draws of :class:`RandomHorizontalFlip` and :class:`RandomVerticalFlip`.

    Example:
        >>> RandomHorizontalFlip(p=1.0).params((3, 8, 8, 1)).flip.tolist()
        [True, True, True]
        >>> x = mx.array([[[[1], [2]]], [[[3], [4]]]])  # two 1×2 images
        >>> RandomHorizontalFlip().apply(x, FlipParams(mx.array([True, False]))).reshape(-1)
        array([2, 1, 3, 4], dtype=int32)
    """

    flip: mx.array  # (N,) bool: whether sample i is flipped


class RandomHorizontalFlip(RandomTransform):
    """Mirror each image left–right with probability ``p``, independently per sample.

    Example:
        >>> x = mx.array([[[[1], [2]]]])
        >>> RandomHorizontalFlip(p=1.0)(x).reshape(-1).tolist()
        [2, 1]
    """

    axis = 2

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p must be in [0, 1], got {p}")
        self.p = float(p)

    def params(self, shape: Sequence[int], key: mx.array | None = None) -> FlipParams:
        return FlipParams(mx.random.uniform(shape=(shape[0],), key=key) < self.p)

    def apply(self, images: mx.array, params: FlipParams) -> mx.array:
        mirrored = images[:, :, ::-1, :] if self.axis == 2 else images[:, ::-1, :, :]
        return mx.where(params.flip[:, None, None, None], mirrored, images)


class RandomVerticalFlip(RandomHorizontalFlip):
    """Mirror each image top–bottom with probability ``p``, independently per sample.

    Example:
        >>> x = mx.array([[[[1]], [[2]]]])
        >>> RandomVerticalFlip(p=1.0)(x).reshape(-1).tolist()
        [2, 1]
    """

    axis = 1


# ----------------------------------------------------------------------------------------------
# Crops and padding


def _padding(padding: int | Sequence[int] | None, who: str) -> tuple[int, int, int, int]:
    """torchvision's padding argument as ``(top, bottom, left, right)``."""
    if padding is None:
        return (0, 0, 0, 0)
    if isinstance(padding, int | np.integer):
        values = (int(padding),) * 4
    else:
        values = tuple(int(p) for p in padding)
        if len(values) == 1:
            values = values * 4
        elif len(values) == 2:  # (left/right, top/bottom)
            values = (values[1], values[1], values[0], values[0])
        elif len(values) == 4:  # (left, top, right, bottom)
            values = (values[1], values[3], values[0], values[2])
        else:
            values = ()
    if len(values) != 4 or min(values) < 0:
        raise ValueError(
            f"{who}: padding must be a non-negative int or a sequence of 2 or 4 of them, "
            f"got {padding!r}"
        )
    return values


_PAD_MODES = ("constant", "edge", "reflect", "symmetric")


def pad(
    images: mx.array,
    padding: tuple[int, int, int, int],
    mode: str = "constant",
    fill: float = 0,
) -> mx.array:
    """Pad a batch by ``(top, bottom, left, right)`` pixels, modes as torchvision's ``pad``.

    ``constant`` fills with ``fill``, ``edge`` repeats the border pixel, ``reflect`` mirrors
    without repeating it and ``symmetric`` mirrors repeating it.

    Example:
        >>> x = mx.array([1, 2, 3]).reshape(1, 1, 3, 1)
        >>> pad(x, (0, 0, 2, 0), mode="reflect").reshape(-1).tolist()
        [3, 2, 1, 2, 3]
    """
    if mode not in _PAD_MODES:
        raise ValueError(f"pad: mode must be one of {_PAD_MODES}, got {mode!r}")
    top, bottom, left, right = padding
    if not any(padding):
        return images
    if mode == "constant":
        widths = [(0, 0), (top, bottom), (left, right), (0, 0)]
        return mx.pad(images, widths, constant_values=mx.array(fill, dtype=images.dtype))
    _, height, width, _ = images.shape
    if mode == "reflect" and (max(top, bottom) >= height or max(left, right) >= width):
        raise ValueError(
            f"pad: reflect padding {padding} must be smaller than the images {height}×{width}"
        )
    # NumPy pads the index ranges with the same rule; gathering by them pads the images.
    rows = np.pad(np.arange(height), (top, bottom), mode=mode)
    cols = np.pad(np.arange(width), (left, right), mode=mode)
    return mx.take(mx.take(images, mx.array(rows), axis=1), mx.array(cols), axis=2)


def crop_at(images: mx.array, top: mx.array, left: mx.array, size: tuple[int, int]) -> mx.array:
    """Crop ``size`` out of each image at its own ``(top[i], left[i])``, in one gather.

    Each output row is one contiguous run of ``width × C`` values in the input, so the gather
    copies whole runs (a strided view of the flat batch, indexed by run start) instead of
    computing an index per value.

    Example:
        >>> x = mx.arange(16).reshape(1, 4, 4, 1)
        >>> crop_at(x, mx.array([1]), mx.array([2]), (2, 2)).reshape(-1).tolist()
        [6, 7, 10, 11]
    """
    crop_h, crop_w = size
    n, height, width, channels = images.shape
    if crop_h > height or crop_w > width:
        raise ValueError(f"crop_at: crop {size} is larger than the images {height}×{width}")
    runs = mx.as_strided(
        mx.contiguous(images).reshape(-1),
        (n * height * width - (crop_w - 1), crop_w * channels),
        (channels, 1),
    )
    rows = mx.arange(n)[:, None] * height + top[:, None] + mx.arange(crop_h)[None, :]
    starts = rows * width + left[:, None]
    return mx.take(runs, starts.reshape(-1), axis=0).reshape(n, crop_h, crop_w, channels)


class CropParams(NamedTuple):
    """Where :class:`RandomCrop` cuts each image: its top-left corner, in padded coordinates.

    Example:
        >>> crop = RandomCrop(4, padding=2)
        >>> params = crop.params((2, 4, 4, 1), key=mx.random.key(0))
        >>> bool(((params.top >= 0) & (params.top <= 4) & (params.left <= 4)).all())
        True
        >>> middle = CropParams(top=mx.array([2, 2]), left=mx.array([2, 2]))  # no shift
        >>> crop.apply(mx.ones((2, 4, 4, 1)), middle).sum().item()
        32.0
    """

    top: mx.array  # (N,) int: first row of each crop (in padded coordinates)
    left: mx.array  # (N,) int: first column of each crop (in padded coordinates)


class RandomCrop(RandomTransform):
    """Pad, then crop ``size`` at a random place per image, uniform over every place it fits.

    ``padding`` is as torchvision's: an int for every side, ``(left/right, top/bottom)`` or
    ``(left, top, right, bottom)``; ``padding_mode`` is ``constant`` (with ``fill``), ``edge``,
    ``reflect`` or ``symmetric``. With ``pad_if_needed`` images smaller than ``size`` are padded
    up to it first. The dtype is kept.

    Example:
        >>> RandomCrop(32, padding=4)(mx.zeros((2, 32, 32, 3))).shape
        (2, 32, 32, 3)
    """

    def __init__(
        self,
        size: int | Sequence[int],
        padding: int | Sequence[int] | None = None,
        pad_if_needed: bool = False,
        fill: float = 0,
        padding_mode: str = "constant",
    ) -> None:
        self.size = _pair(size, "RandomCrop size")
        self.padding = _padding(padding, "RandomCrop")
        if padding_mode not in _PAD_MODES:
            raise ValueError(
                f"RandomCrop: padding_mode must be one of {_PAD_MODES}, got {padding_mode!r}"
            )
        self.pad_if_needed = bool(pad_if_needed)
        self.fill = fill
        self.padding_mode = padding_mode

    def _padding_for(self, shape: Sequence[int]) -> tuple[int, int, int, int]:
        top, bottom, left, right = self.padding
        if self.pad_if_needed:
            extra_h = max(0, self.size[0] - (shape[1] + top + bottom))
            extra_w = max(0, self.size[1] - (shape[2] + left + right))
            top, bottom, left, right = (
                top + extra_h,
                bottom + extra_h,
                left + extra_w,
                right + extra_w,
            )
        return top, bottom, left, right

    def params(self, shape: Sequence[int], key: mx.array | None = None) -> CropParams:
        top, bottom, left, right = self._padding_for(shape)
        height, width = shape[1] + top + bottom, shape[2] + left + right
        crop_h, crop_w = self.size
        if crop_h > height or crop_w > width:
            raise ValueError(
                f"RandomCrop: crop {crop_h}×{crop_w} is larger than the (padded) images "
                f"{height}×{width}; pass a larger padding or pad_if_needed=True"
            )
        key_y, key_x = _split(key, 2)
        n = shape[0]
        return CropParams(
            mx.random.randint(0, height - crop_h + 1, shape=(n,), key=key_y),
            mx.random.randint(0, width - crop_w + 1, shape=(n,), key=key_x),
        )

    def apply(self, images: mx.array, params: CropParams) -> mx.array:
        padded = pad(images, self._padding_for(images.shape), self.padding_mode, self.fill)
        return crop_at(padded, params.top, params.left, self.size)


class CenterCrop(Transform):
    """Crop ``size`` out of the middle of every image, as torchvision's ``CenterCrop``.

    The offset is ``round((H - h) / 2)`` (Python's rounding, half to even); images smaller than
    ``size`` are first padded with zeros on both sides. The dtype is kept.

    Example:
        >>> x = mx.arange(16).reshape(1, 4, 4, 1)
        >>> CenterCrop(2)(x).reshape(-1).tolist()
        [5, 6, 9, 10]
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size, "CenterCrop size")

    def __call__(self, images: mx.array, key: mx.array | None = None) -> mx.array:
        _check_batch(images, "CenterCrop")
        crop_h, crop_w = self.size
        _, height, width, _ = images.shape
        if crop_h > height or crop_w > width:
            pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
            padding = (pad_h // 2, (pad_h + 1) // 2, pad_w // 2, (pad_w + 1) // 2)
            images = pad(images, padding)
            _, height, width, _ = images.shape
        top = int(round((height - crop_h) / 2.0))
        left = int(round((width - crop_w) / 2.0))
        return images[:, top : top + crop_h, left : left + crop_w, :]


# ----------------------------------------------------------------------------------------------
# Bilinear resampling


def _interpolation_matrix(
    start: mx.array, length: mx.array, out: int, size: int, dtype: mx.Dtype
) -> mx.array:
    """Per sample, the ``out × size`` matrix resampling ``[start, start + length)`` bilinearly.

    PyTorch's rule with ``align_corners=False``: output pixel ``o`` reads the source coordinate
    ``(o + 0.5) * length / out - 0.5`` of the segment, clamped at 0, split between its two
    neighbouring pixels (the last pixel is repeated past the end).
    """
    length = length.astype(mx.float32)[:, None]
    src = (mx.arange(out, dtype=mx.float32)[None, :] + 0.5) * (length / out) - 0.5
    src = mx.maximum(src, 0.0)
    low = mx.floor(src)
    weight = (src - low)[:, :, None]
    low = low.astype(mx.int32)
    high = mx.minimum(low + 1, length.astype(mx.int32) - 1)
    pixels = mx.arange(size)[None, None, :]
    first = pixels == (start[:, None] + low)[:, :, None]
    second = pixels == (start[:, None] + high)[:, :, None]
    return (first * (1.0 - weight) + second * weight).astype(dtype)


def resized_crop(
    images: mx.array,
    top: mx.array,
    left: mx.array,
    height: mx.array,
    width: mx.array,
    size: tuple[int, int],
) -> mx.array:
    """Crop each image's box ``(top, left, height, width)`` and resize it to ``size``, bilinearly.

    The sampling is PyTorch's ``interpolate(mode="bilinear", align_corners=False,
    antialias=False)`` of the cropped image. It runs as two batched matrix products with
    per-sample interpolation matrices (rows, then columns), which on a CPU is several times faster
    than gathering the four neighbours of every output pixel. The box arrays have one entry per
    image, or a single entry for all. Integer images are rounded back to their dtype.

    Example:
        >>> x = mx.array([[0.0, 2.0]]).reshape(1, 1, 2, 1)
        >>> one, zero = mx.array([1]), mx.array([0])
        >>> resized_crop(x, zero, zero, one, mx.array([2]), (1, 4)).reshape(-1).tolist()
        [0.0, 0.5, 1.5, 2.0]
    """
    out_h, out_w = size
    n, height_in, width_in, channels = images.shape
    dtype = images.dtype
    if not mx.issubdtype(dtype, mx.floating):
        images = images.astype(mx.float32)
    rows = _interpolation_matrix(top, height, out_h, height_in, images.dtype)
    cols = _interpolation_matrix(left, width, out_w, width_in, images.dtype)
    by_rows = rows @ images.reshape(n, height_in, width_in * channels)  # N × out_h × (W·C)
    by_rows = by_rows.reshape(n, out_h, width_in, channels).transpose(0, 1, 3, 2)
    result = by_rows.reshape(n, out_h * channels, width_in) @ cols.transpose(0, 2, 1)
    result = result.reshape(n, out_h, channels, out_w).transpose(0, 1, 3, 2)
    return _cast_back(result, dtype)


class Resize(Transform):
    """Resize every image bilinearly, as torchvision's ``Resize(antialias=False)``.

    ``size`` is ``(height, width)``, or an int: the shorter side becomes ``size`` and the longer
    keeps the aspect ratio (``int(size * long / short)``), capped at ``max_size`` if given.
    Sampling is ``align_corners=False`` without antialiasing, so downscaling by large factors
    aliases exactly as PyTorch's does. Integer images are rounded back to their dtype.

    Example:
        >>> Resize((4, 6))(mx.zeros((2, 8, 8, 3))).shape
        (2, 4, 6, 3)
        >>> Resize(16)(mx.zeros((1, 8, 12, 1))).shape
        (1, 16, 24, 1)
    """

    def __init__(self, size: int | Sequence[int], max_size: int | None = None) -> None:
        self.size = int(size) if isinstance(size, int | np.integer) else _pair(size, "Resize size")
        if isinstance(self.size, int) and self.size <= 0:
            raise ValueError(f"Resize: size must be positive, got {size!r}")
        if max_size is not None and not isinstance(self.size, int):
            raise ValueError("Resize: max_size applies only when size is an int (the shorter side)")
        if max_size is not None and max_size <= self.size:
            raise ValueError(f"Resize: max_size {max_size} must exceed size {self.size}")
        self.max_size = max_size

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(height, width)`` an image of ``height × width`` is resized to."""
        if not isinstance(self.size, int):
            return self.size
        short, long = min(height, width), max(height, width)
        new_short, new_long = self.size, int(self.size * long / short)
        if self.max_size is not None and new_long > self.max_size:
            new_short, new_long = int(self.max_size * new_short / new_long), self.max_size
        return (new_short, new_long) if height <= width else (new_long, new_short)

    def __call__(self, images: mx.array, key: mx.array | None = None) -> mx.array:
        _check_batch(images, "Resize")
        _, height, width, _ = images.shape
        out = self.output_size(height, width)
        if out == (height, width):
            return images
        zero = mx.zeros((1,), dtype=mx.int32)
        box = (zero, zero, mx.array([height]), mx.array([width]))
        return resized_crop(images, *box, out)


class BoxParams(NamedTuple):
    """The box of each image that :class:`RandomResizedCrop` resamples to its ``size``.

    Example:
        >>> params = RandomResizedCrop(16).params((2, 32, 24, 3), key=mx.random.key(0))
        >>> bool(((params.top + params.height <= 32) & (params.left + params.width <= 24)).all())
        True
        >>> x = mx.arange(64, dtype=mx.float32).reshape(1, 8, 8, 1)
        >>> quarter = BoxParams(*(mx.array([v]) for v in (0, 0, 4, 4)))  # the top-left 4×4
        >>> RandomResizedCrop(4).apply(x, quarter)[0, 0, :, 0].tolist()
        [0.0, 1.0, 2.0, 3.0]
    """

    top: mx.array  # (N,) int
    left: mx.array  # (N,) int
    height: mx.array  # (N,) int
    width: mx.array  # (N,) int


class RandomResizedCrop(RandomTransform):
    """Crop a random box of random area and aspect ratio per image, resized to ``size``.

    As torchvision: up to 10 tries per image draw an area fraction uniform in ``scale`` and an
    aspect ratio (width / height) log-uniform in ``ratio``; the first box that fits the image is
    placed uniformly at random. If none fits, the crop is the central one with the aspect ratio
    clamped to ``ratio``. The boxes are resampled as :func:`resized_crop` (bilinear,
    ``antialias=False``); integer images are rounded back to their dtype.

    Example:
        >>> RandomResizedCrop(16)(mx.zeros((2, 32, 24, 3)), key=mx.random.key(0)).shape
        (2, 16, 16, 3)
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
    ) -> None:
        self.size = _pair(size, "RandomResizedCrop size")
        self.scale = _range(scale, "RandomResizedCrop scale")
        self.ratio = _range(ratio, "RandomResizedCrop ratio")
        if self.scale[1] <= 0 or self.ratio[0] <= 0:
            raise ValueError(
                f"RandomResizedCrop: scale and ratio must be positive, got {scale!r}, {ratio!r}"
            )

    def _fallback(self, height: int, width: int) -> tuple[int, int]:
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            return int(round(width / self.ratio[0])), width
        if in_ratio > self.ratio[1]:
            return height, int(round(height * self.ratio[1]))
        return height, width

    def params(self, shape: Sequence[int], key: mx.array | None = None) -> BoxParams:
        n, height, width = shape[0], shape[1], shape[2]
        k_area, k_ratio, k_top, k_left = _split(key, 4)
        tries = (n, _RESAMPLE_TRIES)
        area = height * width * mx.random.uniform(*self.scale, shape=tries, key=k_area)
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        aspect = mx.exp(mx.random.uniform(*log_ratio, shape=tries, key=k_ratio))
        w = mx.round(mx.sqrt(area * aspect)).astype(mx.int32)
        h = mx.round(mx.sqrt(area / aspect)).astype(mx.int32)
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        found, h, w = _first_true(ok, h, w)
        fallback_h, fallback_w = self._fallback(height, width)
        h = mx.where(found, h, fallback_h)
        w = mx.where(found, w, fallback_w)
        top = mx.random.randint(0, height - h + 1, shape=(n,), key=k_top)
        left = mx.random.randint(0, width - w + 1, shape=(n,), key=k_left)
        top = mx.where(found, top, (height - fallback_h) // 2)
        left = mx.where(found, left, (width - fallback_w) // 2)
        return BoxParams(top, left, h, w)

    def apply(self, images: mx.array, params: BoxParams) -> mx.array:
        return resized_crop(images, *params, self.size)


# ----------------------------------------------------------------------------------------------
# Colour


def _grey(images: mx.array) -> mx.array:
    """ITU-R 601-2 luma of RGB images (N×H×W×1); single-channel images are returned as they are."""
    if images.shape[-1] == 1:
        return images
    r, g, b = _LUMA
    return r * images[..., 0:1] + g * images[..., 1:2] + b * images[..., 2:3]


@mx.compile
def _jitter_step(
    images: mx.array, factor: mx.array, is_contrast: mx.array, is_saturation: mx.array
) -> mx.array:
    """One adjustment of :class:`ColorJitter` per sample: a blend with black, mean grey or grey."""
    grey = _grey(images)
    mean = grey.mean(axis=(1, 2, 3), keepdims=True)
    target = mx.where(is_saturation, grey, mx.where(is_contrast, mean, 0.0))
    return mx.clip(factor * images + (1.0 - factor) * target, 0.0, 1.0)


def _jitter_range(value: float | Sequence[float] | None, what: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"ColorJitter {what}: expected a non-negative number, got {value}")
        return (max(0.0, 1.0 - value), 1.0 + value) if value > 0 else None
    return _range(value, f"ColorJitter {what}")


class JitterParams(NamedTuple):
    """The draws of :class:`ColorJitter`: per image, which adjustments run in which order
    (0 brightness, 1 contrast, 2 saturation) and with which factor.

    Example:
        >>> jitter = ColorJitter(brightness=0.5, contrast=0.5)
        >>> params = jitter.params((2, 4, 4, 3), key=mx.random.key(0))
        >>> params.order.shape, params.factors.shape
        ((2, 2), (2, 2))
        >>> halve = JitterParams(order=mx.array([[0]]), factors=mx.array([[0.5]]))
        >>> round(jitter.apply(mx.full((1, 2, 2, 3), 0.8), halve).max().item(), 4)
        0.4
    """

    order: mx.array  # (N, k) int: per sample, the enabled adjustments in the order applied
    factors: mx.array  # (N, k) float: per sample, the factor of each enabled adjustment


class ColorJitter(RandomTransform):
    """Randomly change brightness, contrast and saturation, with factors drawn per image.

    As torchvision: a value ``v`` means a factor uniform in ``[max(0, 1 - v), 1 + v]``, a pair
    ``(min, max)`` that range, 0 or ``None`` no change. Each image gets its own factors and its own
    random order of the adjustments, each being a blend clamped to [0, 1]:

    - brightness ``f``: ``f * x``
    - contrast ``f``: ``f * x + (1 - f) * mean(grey(x))`` (mean over the image)
    - saturation ``f``: ``f * x + (1 - f) * grey(x)``

    with ``grey`` the ITU-R 601-2 luma ``0.2989 R + 0.587 G + 0.114 B``. Needs float images in
    [0, 1] with 1 or 3 channels (saturation leaves a single channel as it is). torchvision's hue
    jitter is not implemented.

    Example:
        >>> x = mx.full((2, 4, 4, 3), 0.5)
        >>> ColorJitter(brightness=0.4)(x, key=mx.random.key(0)).shape
        (2, 4, 4, 3)
    """

    ADJUSTMENTS = ("brightness", "contrast", "saturation")

    def __init__(
        self,
        brightness: float | Sequence[float] | None = 0,
        contrast: float | Sequence[float] | None = 0,
        saturation: float | Sequence[float] | None = 0,
    ) -> None:
        self.brightness = _jitter_range(brightness, "brightness")
        self.contrast = _jitter_range(contrast, "contrast")
        self.saturation = _jitter_range(saturation, "saturation")
        self.enabled = [
            i for i, name in enumerate(self.ADJUSTMENTS) if getattr(self, name) is not None
        ]

    def params(self, shape: Sequence[int], key: mx.array | None = None) -> JitterParams:
        n, k = shape[0], len(self.enabled)
        k_order, k_factor = _split(key, 2)
        ranks = mx.argsort(mx.random.uniform(shape=(n, k), key=k_order), axis=1)
        order = mx.array(self.enabled, dtype=mx.int32)[ranks]
        ranges = [getattr(self, self.ADJUSTMENTS[i]) for i in self.enabled]
        low = mx.array([r[0] for r in ranges] or [1.0])[:k]
        high = mx.array([r[1] for r in ranges] or [1.0])[:k]
        factors = mx.random.uniform(low, high, shape=(n, k), key=k_factor)
        # factors[:, j] belongs to the adjustment enabled[j]; put them in the order applied.
        return JitterParams(order, mx.take_along_axis(factors, ranks, axis=1))

    def apply(self, images: mx.array, params: JitterParams) -> mx.array:
        _require_float(images, "ColorJitter")
        if images.shape[-1] not in (1, 3):
            raise ValueError(
                f"ColorJitter: expected 1 or 3 channels, got images of shape {images.shape}"
            )
        for step in range(params.order.shape[1]):
            which = params.order[:, step][:, None, None, None]
            factor = params.factors[:, step][:, None, None, None].astype(images.dtype)
            if images.shape[-1] == 1:  # saturation leaves grey images unchanged
                factor = mx.where(which == 2, 1.0, factor)
            images = _jitter_step(images, factor, which == 1, which == 2)
        return images


# ----------------------------------------------------------------------------------------------
# Erasing


class EraseParams(NamedTuple):
    """The rectangle :class:`RandomErasing` fills in each image (and the noise it fills with).

    Example:
        >>> params = RandomErasing(p=0.0).params((3, 8, 8, 1), key=mx.random.key(0))
        >>> params.height.tolist(), params.noise is None
        ([0, 0, 0], True)
        >>> corner = EraseParams(*(mx.array([v]) for v in (0, 0, 2, 2)), noise=None)
        >>> RandomErasing().apply(mx.ones((1, 4, 4, 1)), corner).sum().item()
        12.0
    """

    top: mx.array  # (N,) int
    left: mx.array  # (N,) int
    height: mx.array  # (N,) int, 0 where nothing is erased
    width: mx.array  # (N,) int, 0 where nothing is erased
    noise: mx.array | None  # N×H×W×C standard normal values when value="random", else None


def _erase(images: mx.array, params: EraseParams, value: float | Sequence[float] | str) -> mx.array:
    mask = _box_mask(images.shape, params.top, params.left, params.height, params.width)
    if params.noise is not None:
        fill = params.noise.astype(images.dtype)
    else:
        fill = mx.array(value, dtype=images.dtype)
    return mx.where(mask, fill, images)


def _check_value(value: float | Sequence[float] | str, images: mx.array, who: str) -> None:
    if isinstance(value, str):
        _require_float(images, f"{who} with value='random'")
        return
    values = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if values.size not in (1, images.shape[-1]):
        raise ValueError(
            f"{who}: value has {values.size} entries but the images have {images.shape[-1]} "
            "channels"
        )
    if mx.issubdtype(images.dtype, mx.integer):
        info = np.iinfo(np.dtype(str(images.dtype).split(".")[-1]))
        if np.any(values != np.round(values)) or values.min() < info.min or values.max() > info.max:
            raise TypeError(
                f"{who}: value {value!r} is not a {images.dtype} pixel; use an integer value in "
                f"[{info.min}, {info.max}] or float images (put ToTensor() before it)"
            )


class RandomErasing(RandomTransform):
    """Erase a random rectangle of each image with probability ``p``, as torchvision's.

    Per image, up to 10 tries draw an area fraction uniform in ``scale`` and an aspect ratio
    (height / width, as torchvision) log-uniform in ``ratio``; the first rectangle strictly
    smaller than the image is placed uniformly at random. If none fits the image is left as it
    is. ``value`` fills the rectangle: a number, one number per channel, or ``"random"`` for
    standard normal noise (float images only). Integer images keep their dtype and need an
    integer ``value``.

    Example:
        >>> x = mx.ones((2, 8, 8, 3))
        >>> out = RandomErasing(p=1.0)(x, key=mx.random.key(0))
        >>> bool((out == 0).any())
        True
    """

    def __init__(
        self,
        p: float = 0.5,
        scale: Sequence[float] = (0.02, 0.33),
        ratio: Sequence[float] = (0.3, 3.3),
        value: float | Sequence[float] | str = 0,
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomErasing: p must be in [0, 1], got {p}")
        if isinstance(value, str) and value != "random":
            raise ValueError(
                f"RandomErasing: value must be a number, numbers or 'random', got {value!r}"
            )
        self.p = float(p)
        self.scale = _range(scale, "RandomErasing scale")
        self.ratio = _range(ratio, "RandomErasing ratio")
        if self.ratio[0] <= 0:
            raise ValueError(f"RandomErasing: ratio must be positive, got {ratio!r}")
        self.value = value

    def params(self, shape: Sequence[int], key: mx.array | None = None) -> EraseParams:
        n, height, width = shape[0], shape[1], shape[2]
        k_apply, k_area, k_ratio, k_top, k_left, k_noise = _split(key, 6)
        tries = (n, _RESAMPLE_TRIES)
        area = height * width * mx.random.uniform(*self.scale, shape=tries, key=k_area)
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        aspect = mx.exp(mx.random.uniform(*log_ratio, shape=tries, key=k_ratio))
        h = mx.round(mx.sqrt(area * aspect)).astype(mx.int32)
        w = mx.round(mx.sqrt(area / aspect)).astype(mx.int32)
        ok = (h < height) & (w < width)
        found, h, w = _first_true(ok, h, w)
        erase = found & (mx.random.uniform(shape=(n,), key=k_apply) < self.p)
        h, w = mx.where(erase, h, 0), mx.where(erase, w, 0)
        top = mx.random.randint(0, height - h + 1, shape=(n,), key=k_top)
        left = mx.random.randint(0, width - w + 1, shape=(n,), key=k_left)
        noise = mx.random.normal(tuple(shape), key=k_noise) if isinstance(self.value, str) else None
        return EraseParams(top, left, h, w, noise)

    def apply(self, images: mx.array, params: EraseParams) -> mx.array:
        _check_value(self.value, images, "RandomErasing")
        return _erase(images, params, self.value)


class Cutout(RandomTransform):
    """Erase a ``size × size`` square centred at a uniformly random pixel of each image.

    Cutout as DeVries & Taylor (2017): the centre may lie anywhere in the image, so the square is
    clipped at the borders and may cover less than ``size²`` pixels. Its first row is
    ``centre - size // 2``. Applied with probability ``p``; ``value`` as :class:`RandomErasing`.
    Integer images keep their dtype.

    Example:
        >>> out = Cutout(4)(mx.ones((2, 8, 8, 1)), key=mx.random.key(0))
        >>> bool((out == 0).any())
        True
    """

    def __init__(self, size: int, p: float = 1.0, value: float | Sequence[float] | str = 0) -> None:
        if not isinstance(size, int | np.integer) or size <= 0:
            raise ValueError(f"Cutout: size must be a positive int, got {size!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Cutout: p must be in [0, 1], got {p}")
        if isinstance(value, str) and value != "random":
            raise ValueError(f"Cutout: value must be a number, numbers or 'random', got {value!r}")
        self.size = int(size)
        self.p = float(p)
        self.value = value

    def params(self, shape: Sequence[int], key: mx.array | None = None) -> EraseParams:
        n, height, width = shape[0], shape[1], shape[2]
        k_apply, k_y, k_x, k_noise = _split(key, 4)
        cy = mx.random.randint(0, height, shape=(n,), key=k_y)
        cx = mx.random.randint(0, width, shape=(n,), key=k_x)
        top = mx.maximum(cy - self.size // 2, 0)
        left = mx.maximum(cx - self.size // 2, 0)
        bottom = mx.minimum(cy - self.size // 2 + self.size, height)
        right = mx.minimum(cx - self.size // 2 + self.size, width)
        erase = mx.random.uniform(shape=(n,), key=k_apply) < self.p
        h = mx.where(erase, bottom - top, 0)
        w = mx.where(erase, right - left, 0)
        noise = mx.random.normal(tuple(shape), key=k_noise) if isinstance(self.value, str) else None
        return EraseParams(top, left, h, w, noise)

    def apply(self, images: mx.array, params: EraseParams) -> mx.array:
        _check_value(self.value, images, "Cutout")
        return _erase(images, params, self.value)


# ----------------------------------------------------------------------------------------------
# Batch-level mixing: (images, labels) -> (images, soft targets)


def _log_gamma_sample(alpha: float, shape: tuple[int, ...], key: mx.array | None) -> mx.array:
    """Logarithm of Gamma(alpha, 1) samples, by Marsaglia & Tsang (2000), on the device.

    The rejection step runs 8 tries side by side (each accepted with probability > 0.95) and keeps
    the first accepted; alpha < 1 is boosted: ``Gamma(a) = Gamma(a + 1) * U ** (1 / a)``.
    """
    tries = 8
    a = alpha + 1.0 if alpha < 1.0 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    k_z, k_u, k_boost = _split(key, 3)
    z = mx.random.normal((*shape, tries), key=k_z)
    u = mx.random.uniform(shape=(*shape, tries), key=k_u)
    v = (1.0 + c * z) ** 3
    log_v = mx.log(mx.maximum(v, 1e-30))
    ok = (v > 0) & (mx.log(u) < 0.5 * z * z + d - d * v + d * log_v)
    first = mx.argmax(ok, axis=-1, keepdims=True)
    log_v = mx.where(ok.any(axis=-1), mx.take_along_axis(log_v, first, axis=-1)[..., 0], 0.0)
    log_gamma = math.log(d) + log_v
    if alpha < 1.0:
        u_boost = mx.random.uniform(shape=shape, key=k_boost)
        log_gamma = log_gamma + mx.log(mx.maximum(u_boost, 1e-38)) / alpha
    return log_gamma


def sample_beta(
    alpha: float, beta: float, shape: tuple[int, ...], key: mx.array | None = None
) -> mx.array:
    """Beta(alpha, beta) samples drawn on the device (``X / (X + Y)`` of two Gamma samples).

    Example:
        >>> lam = sample_beta(1.0, 1.0, (1000,), key=mx.random.key(0))
        >>> bool((lam >= 0).all() and (lam <= 1).all()), abs(lam.mean().item() - 0.5) < 0.05
        (True, True)
    """
    if alpha <= 0 or beta <= 0:
        raise ValueError(f"sample_beta: alpha and beta must be positive, got {alpha}, {beta}")
    k_x, k_y = _split(key, 2)
    log_x = _log_gamma_sample(alpha, shape, k_x)
    log_y = _log_gamma_sample(beta, shape, k_y)
    return mx.sigmoid(log_x - log_y)


def _soft_targets(labels: mx.array, num_classes: int, who: str) -> mx.array:
    if labels.ndim == 1:
        if not mx.issubdtype(labels.dtype, mx.integer):
            raise TypeError(f"{who}: expected integer class labels, got {labels.dtype}")
        return (labels[:, None] == mx.arange(num_classes)[None, :]).astype(mx.float32)
    if labels.ndim == 2 and labels.shape[1] == num_classes:
        return labels.astype(mx.float32) if not mx.issubdtype(labels.dtype, mx.floating) else labels
    raise ValueError(
        f"{who}: expected labels of shape (N,) or soft targets (N, {num_classes}), got shape "
        f"{labels.shape}"
    )


class MixParams(NamedTuple):
    """The draws of :class:`MixUp` and :class:`CutMix`: each sample's weight, and the box
    CutMix pastes (zeros for MixUp).

    Example:
        >>> params = CutMix(num_classes=10).params((4, 32, 32, 3), key=mx.random.key(0))
        >>> params.lam.shape, params.height.shape
        ((4,), (4,))
        >>> zeros = mx.zeros((2,), dtype=mx.int32)
        >>> half = MixParams(mx.array([0.5, 0.5]), zeros, zeros, zeros, zeros)
        >>> images = mx.array([0.0, 1.0]).reshape(2, 1, 1, 1)
        >>> mixed, targets = MixUp(num_classes=2).apply(images, mx.array([0, 1]), half)
        >>> mixed.reshape(-1).tolist(), targets.tolist()
        ([0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]])
    """

    lam: mx.array  # (N,) float: weight of each sample's own image and label
    top: mx.array  # (N,) int: CutMix box (zeros for MixUp)
    left: mx.array
    height: mx.array
    width: mx.array


class BatchTransform:
    """Base class of ``(images, labels, key=None) -> (images, soft_targets)`` transforms.

    Sample ``i`` is mixed with sample ``i - 1`` (the batch rolled by one, sample 0 with the
    last), as torchvision's ``MixUp``/``CutMix``, so the batch should be shuffled. The result's
    ``soft_targets`` row ``i`` is ``lam[i] * onehot(labels[i]) + (1 - lam[i]) * onehot(labels[i -
    1])``; ``lam`` is available from :meth:`params`. ``labels`` may be integer classes ``(N,)`` or
    soft targets ``(N, num_classes)`` already (so two mixes can be chained). ``soft_targets`` are
    float32; ``mlx.nn.losses.cross_entropy`` accepts them in place of class indices.

    Example:
        >>> images, labels = mx.ones((4, 8, 8, 3)), mx.array([0, 1, 2, 3])
        >>> mixup = MixUp(alpha=1.0, num_classes=4)
        >>> params = mixup.params(images.shape, key=mx.random.key(0))
        >>> _, targets = mixup.apply(images, labels, params)
        >>> lam, onehot = params.lam[:, None], mx.eye(4)
        >>> expected = lam * onehot[labels] + (1 - lam) * onehot[mx.roll(labels, 1)]
        >>> mx.allclose(targets, expected).item()
        True
    """

    def __init__(self, alpha: float, num_classes: int, per_sample: bool) -> None:
        name = type(self).__name__
        if not alpha > 0:
            raise ValueError(f"{name}: alpha must be positive, got {alpha}")
        if not isinstance(num_classes, int | np.integer) or num_classes < 1:
            raise ValueError(f"{name}: num_classes must be a positive int, got {num_classes!r}")
        self.alpha = float(alpha)
        self.num_classes = int(num_classes)
        self.per_sample = bool(per_sample)

    def _lam(self, n: int, key: mx.array | None) -> mx.array:
        lam = sample_beta(self.alpha, self.alpha, (n if self.per_sample else 1,), key)
        return mx.broadcast_to(lam, (n,))

    def params(self, shape: Sequence[int], key: mx.array | None = None) -> MixParams:
        raise NotImplementedError

    def apply(
        self, images: mx.array, labels: mx.array, params: MixParams
    ) -> tuple[mx.array, mx.array]:
        raise NotImplementedError

    def __call__(
        self, images: mx.array, labels: mx.array, key: mx.array | None = None
    ) -> tuple[mx.array, mx.array]:
        name = type(self).__name__
        _check_batch(images, name)
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"{name}: {images.shape[0]} images but labels of shape {labels.shape}")
        return self.apply(images, labels, self.params(images.shape, key))

    def _mix_targets(self, labels: mx.array, lam: mx.array) -> mx.array:
        targets = _soft_targets(labels, self.num_classes, type(self).__name__)
        lam = lam[:, None].astype(targets.dtype)
        return lam * targets + (1 - lam) * mx.roll(targets, 1, axis=0)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class MixUp(BatchTransform):
    """MixUp (Zhang et al., 2018): ``x[i] = lam * x[i] + (1 - lam) * x[i - 1]``, labels alike.

    ``lam`` is drawn from Beta(``alpha``, ``alpha``), once per batch as torchvision (or per sample
    with ``per_sample=True``). Needs float images. See :class:`BatchTransform` for the pairing and
    the soft targets.

    Example:
        >>> images, labels = mx.ones((4, 8, 8, 3)), mx.array([0, 1, 2, 3])
        >>> mixed, targets = MixUp(alpha=1.0, num_classes=5)(images, labels, key=mx.random.key(0))
        >>> mixed.shape, targets.shape, bool(mx.allclose(targets.sum(axis=1), mx.ones(4)))
        ((4, 8, 8, 3), (4, 5), True)
    """

    def __init__(self, alpha: float = 1.0, num_classes: int = 10, per_sample: bool = False) -> None:
        super().__init__(alpha, num_classes, per_sample)

    def params(self, shape: Sequence[int], key: mx.array | None = None) -> MixParams:
        n = shape[0]
        zeros = mx.zeros((n,), dtype=mx.int32)
        return MixParams(self._lam(n, key), zeros, zeros, zeros, zeros)

    def apply(
        self, images: mx.array, labels: mx.array, params: MixParams
    ) -> tuple[mx.array, mx.array]:
        _require_float(images, "MixUp")
        lam = params.lam.astype(images.dtype)[:, None, None, None]
        mixed = lam * images + (1 - lam) * mx.roll(images, 1, axis=0)
        return mixed, self._mix_targets(labels, params.lam)


class CutMix(BatchTransform):
    """CutMix (Yun et al., 2019): paste a box of sample ``i - 1`` into sample ``i``.

    As torchvision: ``lam ~ Beta(alpha, alpha)``, a centre uniform over the pixels, a box of
    half-sides ``int(0.5 * sqrt(1 - lam) * H)`` and ``int(0.5 * sqrt(1 - lam) * W)`` clipped to
    the image; the label weight is then ``1 - box area / image area``. One box per batch as
    torchvision, or one per sample with ``per_sample=True``. Works on any dtype (it only copies
    pixels). See :class:`BatchTransform` for the pairing and the soft targets.

    Example:
        >>> images, labels = mx.ones((4, 8, 8, 3)), mx.array([0, 1, 2, 3])
        >>> mixed, targets = CutMix(alpha=1.0, num_classes=5)(images, labels, key=mx.random.key(0))
        >>> mixed.shape, targets.shape
        ((4, 8, 8, 3), (4, 5))
    """

    def __init__(self, alpha: float = 1.0, num_classes: int = 10, per_sample: bool = False) -> None:
        super().__init__(alpha, num_classes, per_sample)

    def params(self, shape: Sequence[int], key: mx.array | None = None) -> MixParams:
        n, height, width = shape[0], shape[1], shape[2]
        k_lam, k_y, k_x = _split(key, 3)
        boxes = n if self.per_sample else 1
        lam = self._lam(n, k_lam)[:boxes]
        cy = mx.random.randint(0, height, shape=(boxes,), key=k_y)
        cx = mx.random.randint(0, width, shape=(boxes,), key=k_x)
        r = 0.5 * mx.sqrt(1.0 - lam)
        half_h = mx.floor(r * height).astype(mx.int32)
        half_w = mx.floor(r * width).astype(mx.int32)
        top, left = mx.maximum(cy - half_h, 0), mx.maximum(cx - half_w, 0)
        bottom, right = mx.minimum(cy + half_h, height), mx.minimum(cx + half_w, width)
        h, w = bottom - top, right - left
        lam = 1.0 - (h * w).astype(mx.float32) / (height * width)
        return MixParams(*(mx.broadcast_to(a, (n,)) for a in (lam, top, left, h, w)))

    def apply(
        self, images: mx.array, labels: mx.array, params: MixParams
    ) -> tuple[mx.array, mx.array]:
        mask = _box_mask(images.shape, params.top, params.left, params.height, params.width)
        mixed = mx.where(mask, mx.roll(images, 1, axis=0), images)
        return mixed, self._mix_targets(labels, params.lam)
