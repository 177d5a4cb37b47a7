"""Datasets shipped inside the package, so the whole workflow runs offline."""

from __future__ import annotations

import functools
import gzip
from importlib import resources

import numpy as np

from .arrays import ArrayDataset, Transform

DIGITS_TRAIN_SIZE = 1437


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    raw = resources.files(__package__).joinpath("digits").joinpath("digits.csv.gz").read_bytes()
    table = np.loadtxt(gzip.decompress(raw).decode("ascii").splitlines(), delimiter=",")
    table = table.astype(np.int64)
    pixels, labels = table[:, :64], table[:, 64]
    images = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 8, 8, 1)
    images.setflags(write=False)
    return images, labels.astype(np.int32)


class Digits(ArrayDataset):
    """UCI handwritten digits: 1,797 grey 8×8 images of the digits 0–9, embedded (CC BY 4.0).

    The first 1,437 images are the ``train`` split, the last 360 the ``test`` split. Pixels are
    uint8 in 0–255. Source and license: ``mlxvision/data/datasets/digits/README.md``.

    Example:
        >>> train = Digits(train=True)
        >>> len(train), train.image_shape, train.classes[:3]
        (1437, (8, 8, 1), ['0', '1', '2'])
    """

    # Per-channel mean and standard deviation of the train split, pixels scaled to [0, 1].
    mean = (0.3054,)
    std = (0.3753,)

    def __init__(self, train: bool = True, transform: Transform | None = None) -> None:
        images, labels = _digits_arrays()
        part = slice(0, DIGITS_TRAIN_SIZE) if train else slice(DIGITS_TRAIN_SIZE, None)
        super().__init__(
            images[part], labels[part], classes=[str(d) for d in range(10)], transform=transform
        )
        self.train = train
