"""MNIST, Fashion-MNIST and KMNIST from synthetic IDX files; read_idx header checks."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest

from http_server import FileServer
from mlxvision.data import KMNIST, MNIST, ArrayDataset, FashionMNIST
from mlxvision.data.datasets.mnist import read_idx

RNG = np.random.default_rng(1)
TRAIN = (RNG.integers(0, 256, (7, 28, 28), dtype=np.uint8), RNG.integers(0, 10, 7, dtype=np.uint8))
TEST = (RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8), RNG.integers(0, 10, 3, dtype=np.uint8))


def idx_bytes(array: np.ndarray, code: int | None = None) -> bytes:
    """The IDX encoding written out by hand: 0, 0, type code, ndim, big-endian sizes, data."""
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    code = codes[array.dtype.str[1:]] if code is None else code
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_split(folder, split, images, labels, compress=True):
    folder.mkdir(parents=True, exist_ok=True)
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        data = idx_bytes(array)
        name = f"{split}-{kind}-ubyte"
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


def write_all(folder, compress=True):
    write_split(folder, "train", *TRAIN, compress=compress)
    write_split(folder, "t10k", *TEST, compress=compress)


def check(dataset, train=True):
    images, labels = TRAIN if train else TEST
    assert isinstance(dataset, ArrayDataset)
    assert dataset.images.dtype == np.uint8 and dataset.images.shape == (len(labels), 28, 28, 1)
    np.testing.assert_array_equal(dataset.images[..., 0], images)
    np.testing.assert_array_equal(dataset.labels, labels)
    assert dataset.train is train and len(dataset) == len(labels)


# --------------------------------------------------------------------------------------------
# read_idx


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_every_type(tmp_path, dtype):
    values = (RNG.standard_normal((2, 3, 4)) * 100).astype(dtype)
    (tmp_path / "a.idx").write_bytes(idx_bytes(values))
    array = read_idx(tmp_path / "a.idx")
    assert array.dtype.isnative and array.shape == (2, 3, 4)
    np.testing.assert_array_equal(array, values)


def test_read_idx_gzip_and_raw_agree(tmp_path):
    data = idx_bytes(TRAIN[0])
    (tmp_path / "raw").write_bytes(data)
    (tmp_path / "packed.gz").write_bytes(gzip.compress(data))
    np.testing.assert_array_equal(read_idx(tmp_path / "raw"), TRAIN[0])
    np.testing.assert_array_equal(read_idx(tmp_path / "packed.gz"), TRAIN[0])


def test_truncated_raw_file_names_file_and_byte_counts(tmp_path):
    data = idx_bytes(TRAIN[0])
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated") as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message and str(len(data)) in message and str(len(data) - 100) in message


def test_truncated_gzip_file_names_file_and_byte_counts(tmp_path):
    data = idx_bytes(TRAIN[0])
    packed = gzip.compress(data)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match="truncated") as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message and str(len(data)) in message and "gzip" in message


def test_gzip_missing_only_its_trailer_is_refused(tmp_path):
    packed = gzip.compress(idx_bytes(TEST[1]))
    (tmp_path / "labels.gz").write_bytes(packed[:-8])  # data complete, CRC and size gone
    with pytest.raises(ValueError, match="gzip"):
        read_idx(tmp_path / "labels.gz")


def test_header_checks(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="4-byte header"):
        read_idx(path)
    path.write_bytes(b"\x01\x00\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="magic number is 0x01000801"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="type code"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x01")
    with pytest.raises(ValueError, match="16-byte header"):
        read_idx(path)
    path.write_bytes(idx_bytes(TEST[1]) + b"\x00")
    with pytest.raises(ValueError, match="extra bytes"):
        read_idx(path)
    path.write_bytes(idx_bytes(TEST[1].astype(">i2")))
    with pytest.raises(ValueError, match="type uint8"):
        read_idx(path, np.uint8)
    with pytest.raises(ValueError, match="3 dimension"):
        read_idx(path, ndim=3)
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        read_idx(tmp_path / "nothing-here")


# --------------------------------------------------------------------------------------------
# datasets


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_mnist_files_in_root(tmp_path, compress, train):
    write_all(tmp_path, compress)
    dataset = MNIST(tmp_path, train=train)
    check(dataset, train)
    assert dataset.classes == [str(d) for d in range(10)]
    suffix = ".gz" if compress else ""
    assert dataset.source.name == f"{'train' if train else 't10k'}-images-idx3-ubyte{suffix}"


@pytest.mark.parametrize(
    ("cls", "first_class"), [(MNIST, "0"), (FashionMNIST, "T-shirt/top"), (KMNIST, "o")]
)
def test_torchvision_layout(tmp_path, cls, first_class):
    write_all(tmp_path / cls.__name__ / "raw", compress=False)
    dataset = cls(tmp_path, train=False)
    check(dataset, train=False)
    assert dataset.classes[0] == first_class and dataset.num_classes == 10
    assert dataset.source.parent == tmp_path / cls.__name__ / "raw"


def test_dotted_file_names(tmp_path):
    write_all(tmp_path)
    for path in tmp_path.iterdir():
        path.rename(tmp_path / path.name.replace("-idx", ".idx"))
    check(MNIST(tmp_path, train=True))


def test_dataset_checks_shapes_and_labels(tmp_path):
    write_split(tmp_path / "a", "t10k", TEST[0], TEST[1][:2])
    with pytest.raises(ValueError, match="2 labels.*3 images"):
        MNIST(tmp_path / "a", train=False)
    write_split(tmp_path / "b", "t10k", TEST[0], np.array([1, 2, 10], np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        MNIST(tmp_path / "b", train=False)
    write_split(tmp_path / "c", "t10k", np.zeros((3, 32, 32), np.uint8), TEST[1])
    with pytest.raises(ValueError, match="28×28"):
        MNIST(tmp_path / "c", train=False)
    write_split(tmp_path / "d", "t10k", TEST[0].astype(">f4"), TEST[1])
    with pytest.raises(ValueError, match="uint8"):
        MNIST(tmp_path / "d", train=False)


def test_missing_files_say_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        FashionMNIST(tmp_path)


def test_download_tries_mirrors_and_checks_md5(tmp_path, monkeypatch):
    served = {}
    for split, (images, labels) in (("train", TRAIN), ("t10k", TEST)):
        served[f"good/{split}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(images))
        served[f"good/{split}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels))
    md5s = {name.split("/")[1]: hashlib.md5(data).hexdigest() for name, data in served.items()}
    with FileServer(served) as server:
        monkeypatch.setattr(KMNIST, "mirrors", (f"{server.url}/gone/", f"{server.url}/good/"))
        monkeypatch.setattr(KMNIST, "resources", md5s)
        check(KMNIST(tmp_path, train=False, download=True), train=False)
        raw = tmp_path / "KMNIST" / "raw"
        assert sorted(p.name for p in raw.iterdir()) == [
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ]
        count = len(server.requests)
        check(KMNIST(tmp_path, train=False, download=True), train=False)
        assert len(server.requests) == count == 4  # one 404 and one fetch per file

        monkeypatch.setattr(KMNIST, "mirrors", (f"{server.url}/gone/",))
        with pytest.raises(OSError, match="(?s)any mirror.*404"):
            KMNIST(tmp_path, train=True, download=True)


def test_official_checksums():
    assert MNIST.resources["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert MNIST.resources["t10k-labels-idx1-ubyte.gz"] == "ec29112dd5afa0611ce80d1b7f02629c"
    assert FashionMNIST.resources["train-images-idx3-ubyte.gz"] == (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    )
    assert KMNIST.resources["train-images-idx3-ubyte.gz"] == "bdb82020997e1d708af4cf47b453dcf7"
    for cls in (MNIST, FashionMNIST, KMNIST):
        assert len(cls.resources) == 4 and all(m.startswith("http") for m in cls.mirrors)
