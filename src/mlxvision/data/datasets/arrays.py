"""The in-memory dataset every other dataset converts to."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx
import numpy as np

Transform = Callable[..., mx.array]


class ArrayDataset:
    """Images and integer labels held in memory, images as ``N×H×W×C`` (NHWC).

    Images are usually ``uint8`` in 0–255; a ``transform`` (for example
    :class:`mlxvision.data.transforms.ToTensor`) turns a batch into float on the device.
    Grey images given as ``N×H×W`` get a channel axis.

    Example:
        >>> import numpy as np
        >>> ds = ArrayDataset(np.zeros((4, 8, 8), np.uint8), [0, 1, 1, 0], classes=["a", "b"])
        >>> len(ds), ds.image_shape, ds.num_classes
        (4, (8, 8, 1), 2)
    """

    def __init__(
        self,
        images: Any,
        labels: Any,
        classes: Sequence[str] | None = None,
        transform: Transform | None = None,
    ) -> None:
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise ValueError(
                f"images: expected an array of shape N×H×W×C (or N×H×W), got shape {images.shape}"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"labels: expected shape ({images.shape[0]},) to match {images.shape[0]} images, "
                f"got shape {labels.shape}"
            )
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels: expected integers, got dtype {labels.dtype}")
        labels = labels.astype(np.int32)
        if classes is None:
            classes = [str(c) for c in range(int(labels.max()) + 1 if labels.size else 0)]
        classes = list(classes)
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(
                f"labels: expected values in [0, {len(classes)}) for {len(classes)} classes, "
                f"got values from {labels.min()} to {labels.max()}"
            )
        self.images = images
        self.labels = labels
        self.classes = classes
        self.transform = transform

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[mx.array, int]:
        image = mx.array(self.images[index][None])
        if self.transform is not None:
            image = self.transform(image)
        return image[0], int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(height, width, channels)`` of every image."""
        return tuple(int(s) for s in self.images.shape[1:])

    def subset(self, indices: Sequence[int] | np.ndarray) -> ArrayDataset:
        """A new dataset holding the samples at ``indices`` (same classes and transform)."""
        indices = np.asarray(indices)
        images, labels = self.images[indices], self.labels[indices]
        return ArrayDataset(images, labels, self.classes, self.transform)

    def with_transform(self, transform: Transform | None) -> ArrayDataset:
        """The same samples (shared, not copied) with another transform."""
        copy = object.__new__(ArrayDataset)
        copy.__dict__.update(self.__dict__)
        copy.transform = transform
        return copy

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(samples={len(self)}, image_shape={self.image_shape}, "
            f"classes={self.num_classes}, transform={self.transform!r})"
        )
