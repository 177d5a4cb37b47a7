"""Datasets: in-memory arrays and the embedded digits."""

from .arrays import ArrayDataset
from .embedded import Digits

__all__ = ["ArrayDataset", "Digits"]
