"""Datasets: in-memory arrays, the embedded digits, CIFAR, the MNIST family and image folders."""

from .arrays import ArrayDataset
from .cifar import CIFAR10, CIFAR100
from .embedded import Digits
from .folder import DECODABLE_EXTENSIONS, ImageFolder
from .mnist import KMNIST, MNIST, FashionMNIST, read_idx

__all__ = [
    "DECODABLE_EXTENSIONS",
    "ImageFolder",
    "CIFAR10",
    "CIFAR100",
    "KMNIST",
    "MNIST",
    "ArrayDataset",
    "Digits",
    "FashionMNIST",
    "read_idx",
]
