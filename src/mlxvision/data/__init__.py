"""Data: datasets, batch transforms on the device, the loader, and safe downloads.

Example:
    >>> from mlxvision.data import DataLoader, Digits, transforms as T
    >>> train = Digits(train=True, transform=T.Compose([T.ToTensor(), T.Normalize([0.3], [0.4])]))
    >>> images, labels = next(iter(DataLoader(train, batch_size=32, shuffle=True)))
    >>> images.shape, labels.shape
    ((32, 8, 8, 1), (32,))
"""

from . import transforms
from .datasets import (
    CIFAR10,
    CIFAR100,
    KMNIST,
    MNIST,
    ArrayDataset,
    Digits,
    FashionMNIST,
    ImageFolder,
)
from .device import DeviceLoader, random_translate_flip, translate_flip
from .download import download, extract_archive
from .loader import DataLoader

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "KMNIST",
    "MNIST",
    "ArrayDataset",
    "DataLoader",
    "DeviceLoader",
    "Digits",
    "FashionMNIST",
    "ImageFolder",
    "download",
    "extract_archive",
    "random_translate_flip",
    "transforms",
    "translate_flip",
]
