"""Datasets by name, for recipes and the command line: ``(train, test)`` in memory."""

from __future__ import annotations

import os
from pathlib import Path

from ..data import ArrayDataset

DATASETS = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "kmnist", "folder")


def load_datasets(
    name: str, root: str | os.PathLike | None = None
) -> tuple[ArrayDataset, ArrayDataset]:
    """The train and test splits of a dataset, as in-memory datasets with ``mean``/``std``.

    - ``digits``: embedded, no ``root``.
    - ``cifar10``/``cifar100``: ``root`` holds the official python or binary release, or
      ``train.tar`` and ``test.tar`` of JPEG files in ``<split>/<class>/<file>`` folders.
    - ``mnist``, ``fashion_mnist``, ``kmnist``: ``root`` holds the IDX files.
    - ``folder``: ``root`` holds ``train`` and ``test`` (folders or ``.tar`` archives) of
      ``<class>/<image>`` files.

    Example:
        >>> train, test = load_datasets("digits")
        >>> len(train), len(test), train.mean
        (1437, 360, (0.3054,))
    """
    from ..data import datasets as ds

    if name == "digits":
        return ds.Digits(train=True), ds.Digits(train=False)
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if root is None:
        raise ValueError(f"dataset {name!r} needs a data folder (--data PATH)")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such data folder for dataset {name!r}")
    if name in ("cifar10", "cifar100"):
        official = ds.CIFAR10 if name == "cifar10" else ds.CIFAR100
        if (root / "train.tar").is_file() and (root / "test.tar").is_file():
            return _from_folders(root / "train.tar", root / "test.tar", official)
        return official(root, train=True), official(root, train=False)
    if name == "folder":
        return _from_folders(_split(root, "train"), _split(root, "test"), None)
    family = {"mnist": ds.MNIST, "fashion_mnist": ds.FashionMNIST, "kmnist": ds.KMNIST}[name]
    return family(root, train=True), family(root, train=False)


def _split(root: Path, split: str) -> Path:
    for candidate in (root / split, root / f"{split}.tar"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{root}: expected a {split}/ folder or {split}.tar inside")


def _from_folders(train_root: Path, test_root: Path, like) -> tuple[ArrayDataset, ArrayDataset]:
    from ..data.datasets.folder import ImageFolder

    train = ImageFolder(train_root, cache=True).to_arrays()
    test = ImageFolder(test_root, cache=True).to_arrays()
    mean, std = (like.mean, like.std) if like is not None else _stats(train)
    for split in (train, test):
        split.mean, split.std = mean, std
    return train, test


def _stats(data: ArrayDataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    sample = data.images[:: max(1, len(data) // 5000)].astype("float64") / 255.0
    mean = tuple(round(float(m), 4) for m in sample.mean(axis=(0, 1, 2)))
    std = tuple(round(float(s), 4) for s in sample.std(axis=(0, 1, 2)))
    return mean, std
