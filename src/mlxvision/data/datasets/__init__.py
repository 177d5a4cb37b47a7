"""Datasets: in-memory arrays, the embedded digits, CIFAR and the MNIST family."""

from .arrays import ArrayDataset
from .cifar import CIFAR10, CIFAR100
from .embedded import Digits
from .mnist import KMNIST, MNIST, FashionMNIST, read_idx

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "KMNIST",
    "MNIST",
    "ArrayDataset",
    "Digits",
    "FashionMNIST",
    "read_idx",
]
