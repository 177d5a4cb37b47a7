"""The real MNIST files in the folder named by MLXVISION_DATA, read bit-exactly."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from mlxvision.data import MNIST

pytestmark = pytest.mark.realdata

# MD5 of each uncompressed official file, as published with the dataset.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


@pytest.fixture
def mnist_root(data_root: Path) -> Path:
    root = data_root / "mnist"
    if not root.is_dir():
        pytest.skip(f"{root} does not exist")
    return root


def test_mnist_files_match_published_md5(mnist_root):
    for name, md5 in MNIST_MD5.items():
        data = gzip.decompress((mnist_root / f"{name}.gz").read_bytes())
        assert hashlib.md5(data).hexdigest() == md5, name
    readme = mnist_root.parent / "README.md"
    if readme.is_file():
        text = readme.read_text()
        assert all(md5 in text for md5 in MNIST_MD5.values())


@pytest.mark.parametrize(
    ("train", "count", "prefix"), [(True, 60000, "train"), (False, 10000, "t10k")]
)
def test_mnist_real(mnist_root, train, count, prefix):
    dataset = MNIST(mnist_root, train=train)
    assert len(dataset) == count
    assert dataset.images.shape == (count, 28, 28, 1) and dataset.images.dtype == np.uint8
    assert dataset.image_shape == (28, 28, 1) and dataset.num_classes == 10
    if train:
        assert dataset.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(dataset.labels, minlength=10).min() > count // 20
    # Rebuilding each file from what was read gives back the published bytes.
    images = struct.pack(">IIII", 0x803, count, 28, 28) + dataset.images.tobytes()
    labels = struct.pack(">II", 0x801, count) + dataset.labels.astype(np.uint8).tobytes()
    assert hashlib.md5(images).hexdigest() == MNIST_MD5[f"{prefix}-images-idx3-ubyte"]
    assert hashlib.md5(labels).hexdigest() == MNIST_MD5[f"{prefix}-labels-idx1-ubyte"]
    if train:
        pixels = dataset.images.reshape(-1)
        mean = pixels.mean(dtype=np.float64) / 255
        square = (pixels.astype(np.uint16) ** 2).mean(dtype=np.float64) / 255**2
        std = np.sqrt(square - mean**2)
        assert abs(mean - MNIST.mean[0]) < 1e-4 and abs(std - MNIST.std[0]) < 1e-4
