"""CIFAR-10/100 from synthetic files in the official python (pickle) and binary formats."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import struct
import tarfile

import mlx.core as mx
import numpy as np
import pytest

from http_server import FileServer
from mlxvision.data import CIFAR10, CIFAR100, ArrayDataset
from mlxvision.data.datasets import cifar

RNG = np.random.default_rng(0)
PER_BATCH = 3  # images per CIFAR-10 train batch file (the official files hold 10,000)


class Py2Pickler(pickle._Pickler):
    """Writes pickles as Python 2's cPickle did: every string as a byte string (BINSTRING)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_string(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(data)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string


def py2_pickle(obj, numpy_module="numpy.core.multiarray") -> bytes:
    """``obj`` pickled like the official files (protocol 2, NumPy's pre-2.0 module name)."""
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    data = buffer.getvalue()
    new = b"cnumpy._core.multiarray\n_reconstruct\n"
    assert new in data or b"_reconstruct" not in data
    return data.replace(new, f"c{numpy_module}\n_reconstruct\n".encode())


def official_rows(images: np.ndarray) -> np.ndarray:
    """N×32×32×3 images as the official N×3072 rows: the red plane, then green, then blue."""
    rows = []
    for image in images:
        rows.append(np.concatenate([image[:, :, c].reshape(-1) for c in range(3)]))
    return np.stack(rows).astype(np.uint8)


def split(count: int, classes: int, coarse: int | None = None):
    images = RNG.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    labels = RNG.integers(0, classes, count).astype(np.int64)
    coarse_labels = RNG.integers(0, coarse, count).astype(np.int64) if coarse else None
    return images, labels, coarse_labels


TRAIN10 = split(5 * PER_BATCH, 10)
TEST10 = split(4, 10)
TRAIN100 = split(6, 100, coarse=20)
TEST100 = split(5, 100, coarse=20)


def cifar10_python_files() -> dict[str, bytes]:
    files = {}
    for i in range(5):
        part = slice(i * PER_BATCH, (i + 1) * PER_BATCH)
        files[f"data_batch_{i + 1}"] = py2_pickle(
            {
                b"batch_label": f"training batch {i + 1} of 5".encode(),
                b"labels": [int(v) for v in TRAIN10[1][part]],
                b"data": official_rows(TRAIN10[0][part]),
                b"filenames": [f"img_{j}.png".encode() for j in range(PER_BATCH)],
            }
        )
    files["test_batch"] = py2_pickle(
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [int(v) for v in TEST10[1]],
            b"data": official_rows(TEST10[0]),
            b"filenames": [b"t.png"] * len(TEST10[1]),
        }
    )
    files["batches.meta"] = py2_pickle(
        {
            b"num_cases_per_batch": PER_BATCH,
            b"label_names": [name.encode() for name in cifar.CIFAR10_CLASSES],
            b"num_vis": 3072,
        }
    )
    return files


def cifar10_binary_files() -> dict[str, bytes]:
    def records(images, labels):
        rows = official_rows(images)
        return b"".join(
            bytes([label]) + row.tobytes() for label, row in zip(labels, rows, strict=True)
        )

    files = {}
    for i in range(5):
        part = slice(i * PER_BATCH, (i + 1) * PER_BATCH)
        files[f"data_batch_{i + 1}.bin"] = records(TRAIN10[0][part], TRAIN10[1][part])
    files["test_batch.bin"] = records(*TEST10[:2])
    files["batches.meta.txt"] = ("\n".join(cifar.CIFAR10_CLASSES) + "\n\n").encode()
    return files


def cifar100_python_files() -> dict[str, bytes]:
    def batch(images, fine, coarse, name):
        return py2_pickle(
            {
                b"filenames": [b"x.png"] * len(fine),
                b"batch_label": name,
                b"fine_labels": [int(v) for v in fine],
                b"coarse_labels": [int(v) for v in coarse],
                b"data": official_rows(images),
            }
        )

    return {
        "train": batch(*TRAIN100, b"training batch 1 of 1"),
        "test": batch(*TEST100, b"testing batch 1 of 1"),
        "meta": py2_pickle(
            {
                b"fine_label_names": [n.encode() for n in cifar.CIFAR100_CLASSES],
                b"coarse_label_names": [n.encode() for n in cifar.CIFAR100_SUPERCLASSES],
            }
        ),
    }


def cifar100_binary_files() -> dict[str, bytes]:
    def records(images, fine, coarse):
        rows = official_rows(images)
        return b"".join(
            bytes([c, f]) + r.tobytes() for f, c, r in zip(fine, coarse, rows, strict=True)
        )

    return {
        "train.bin": records(*TRAIN100),
        "test.bin": records(*TEST100),
        "fine_label_names.txt": "\n".join(cifar.CIFAR100_CLASSES).encode(),
        "coarse_label_names.txt": "\n".join(cifar.CIFAR100_SUPERCLASSES).encode(),
    }


def write_folder(root, folder, files):
    (root / folder).mkdir(parents=True)
    for name, data in files.items():
        (root / folder / name).write_bytes(data)


def tar_bytes(folder, files) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(folder)
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def check_cifar10(dataset, train=True):
    images, labels, _ = TRAIN10 if train else TEST10
    assert isinstance(dataset, ArrayDataset)
    assert dataset.images.dtype == np.uint8 and dataset.images.shape == images.shape
    np.testing.assert_array_equal(dataset.images, images)
    np.testing.assert_array_equal(dataset.labels, labels)
    assert dataset.classes == list(cifar.CIFAR10_CLASSES)
    assert dataset.train is train and len(dataset) == len(labels)
    image, label = dataset[1]
    assert isinstance(image, mx.array) and label == int(labels[1])
    np.testing.assert_array_equal(np.array(image), images[1])


# --------------------------------------------------------------------------------------------
# CIFAR-10


@pytest.mark.parametrize("train", [True, False])
def test_cifar10_python_folder(tmp_path, train):
    write_folder(tmp_path, "cifar-10-batches-py", cifar10_python_files())
    dataset = CIFAR10(tmp_path, train=train)
    check_cifar10(dataset, train)
    assert dataset.source == tmp_path / "cifar-10-batches-py"


def test_cifar10_python_written_by_numpy2_module_name(tmp_path):
    files = cifar10_python_files()
    files["test_batch"] = files["test_batch"].replace(
        b"cnumpy.core.multiarray\n", b"cnumpy._core.multiarray\n"
    )
    write_folder(tmp_path, "cifar-10-batches-py", files)
    check_cifar10(CIFAR10(tmp_path, train=False), train=False)


@pytest.mark.parametrize("train", [True, False])
def test_cifar10_binary_folder(tmp_path, train):
    write_folder(tmp_path, "cifar-10-batches-bin", cifar10_binary_files())
    check_cifar10(CIFAR10(tmp_path, train=train), train)


def test_cifar10_root_may_be_the_extracted_folder(tmp_path):
    write_folder(tmp_path, "cifar-10-batches-bin", cifar10_binary_files())
    check_cifar10(CIFAR10(tmp_path / "cifar-10-batches-bin", train=False), train=False)


@pytest.mark.parametrize(
    ("archive", "folder", "files"),
    [
        ("cifar-10-python.tar.gz", "cifar-10-batches-py", cifar10_python_files),
        ("cifar-10-binary.tar.gz", "cifar-10-batches-bin", cifar10_binary_files),
    ],
)
def test_cifar10_read_straight_from_archive(tmp_path, archive, folder, files):
    (tmp_path / archive).write_bytes(tar_bytes(folder, files()))
    dataset = CIFAR10(tmp_path, train=True)
    check_cifar10(dataset, train=True)
    assert dataset.source == tmp_path / archive
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive]  # nothing extracted


def test_cifar10_download_extracts_and_then_reads_offline(tmp_path, monkeypatch):
    archive = tar_bytes("cifar-10-batches-py", cifar10_python_files())
    with FileServer({"cifar-10-python.tar.gz": archive}) as server:
        release = dataclasses.replace(
            cifar.CIFAR10_PYTHON,
            url=f"{server.url}/cifar-10-python.tar.gz",
            md5=hashlib.md5(archive).hexdigest(),
        )
        monkeypatch.setattr(CIFAR10, "releases", (release, cifar.CIFAR10_BINARY))
        check_cifar10(CIFAR10(tmp_path / "data", train=True, download=True))
        assert (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_5").is_file()
        requests = len(server.requests)
        check_cifar10(CIFAR10(tmp_path / "data", train=False, download=True), train=False)
        assert len(server.requests) == requests == 1


def test_cifar10_download_with_wrong_md5_leaves_nothing(tmp_path, monkeypatch):
    archive = tar_bytes("cifar-10-batches-py", cifar10_python_files())
    with FileServer({"cifar-10-python.tar.gz": archive}) as server:
        release = dataclasses.replace(
            cifar.CIFAR10_PYTHON, url=f"{server.url}/cifar-10-python.tar.gz", md5="0" * 32
        )
        monkeypatch.setattr(CIFAR10, "releases", (release,))
        with pytest.raises(OSError, match="0{32}"):
            CIFAR10(tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def test_cifar10_download_refuses_an_archive_that_escapes_root(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/../../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    archive = buffer.getvalue()
    with FileServer({"cifar-10-python.tar.gz": archive}) as server:
        release = dataclasses.replace(
            cifar.CIFAR10_PYTHON,
            url=f"{server.url}/cifar-10-python.tar.gz",
            md5=hashlib.md5(archive).hexdigest(),
        )
        monkeypatch.setattr(CIFAR10, "releases", (release,))
        with pytest.raises(ValueError, match="escaped.txt"):
            CIFAR10(tmp_path / "data", download=True)
    assert not (tmp_path / "escaped.txt").exists()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cifar-10-python.tar.gz"]


def test_cifar10_missing_files_say_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        CIFAR10(tmp_path)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="data_batch_2"):
        CIFAR10(tmp_path)


def test_official_urls_and_checksums():
    expected = {
        cifar.CIFAR10_PYTHON: ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
        cifar.CIFAR10_BINARY: ("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"),
        cifar.CIFAR100_PYTHON: ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
        cifar.CIFAR100_BINARY: ("cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8"),
    }
    for release, (name, md5) in expected.items():
        assert release.url == f"https://www.cs.toronto.edu/~kriz/{name}"
        assert release.md5 == md5
    assert len(cifar.CIFAR100_CLASSES) == len(set(cifar.CIFAR100_CLASSES)) == 100
    assert list(cifar.CIFAR100_CLASSES) == sorted(cifar.CIFAR100_CLASSES)
    assert len(cifar.CIFAR100_SUPERCLASSES) == 20


# --------------------------------------------------------------------------------------------
# CIFAR-100


@pytest.mark.parametrize("release", ["python", "binary"])
@pytest.mark.parametrize("train", [True, False])
def test_cifar100_fine_and_coarse(tmp_path, release, train):
    if release == "python":
        write_folder(tmp_path, "cifar-100-python", cifar100_python_files())
    else:
        write_folder(tmp_path, "cifar-100-binary", cifar100_binary_files())
    images, fine, coarse = TRAIN100 if train else TEST100
    dataset = CIFAR100(tmp_path, train=train)
    np.testing.assert_array_equal(dataset.images, images)
    np.testing.assert_array_equal(dataset.labels, fine)
    np.testing.assert_array_equal(dataset.coarse_labels, coarse)
    assert dataset.classes == list(cifar.CIFAR100_CLASSES) and dataset.train is train
    superclasses = CIFAR100(tmp_path, train=train, coarse=True)
    np.testing.assert_array_equal(superclasses.labels, coarse)
    np.testing.assert_array_equal(superclasses.fine_labels, fine)
    assert superclasses.num_classes == 20 and superclasses.classes[9].startswith("large_man")


def test_cifar100_from_archive(tmp_path):
    (tmp_path / "cifar-100-binary.tar.gz").write_bytes(
        tar_bytes("cifar-100-binary", cifar100_binary_files())
    )
    np.testing.assert_array_equal(CIFAR100(tmp_path, train=False).images, TEST100[0])


# --------------------------------------------------------------------------------------------
# hostile and damaged files


class WritesMarker:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


class Evaluates:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


@pytest.mark.parametrize("where", ["folder", "archive"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, where):
    marker = tmp_path / "pwned"
    files = cifar10_python_files()
    files["data_batch_1"] = py2_pickle({b"data": WritesMarker(f"touch {marker}"), b"labels": [0]})
    if where == "folder":
        write_folder(tmp_path, "cifar-10-batches-py", files)
    else:
        archive = tmp_path / "cifar-10-python.tar.gz"
        archive.write_bytes(tar_bytes("cifar-10-batches-py", files))
    with pytest.raises(pickle.UnpicklingError) as info:
        CIFAR10(tmp_path, train=True)
    message = str(info.value)
    assert "data_batch_1" in message and "system" in message and "refusing" in message
    assert not marker.exists()


@pytest.mark.parametrize("writer", ["python2", "protocol4"])
def test_eval_payload_is_refused(tmp_path, writer):
    marker = tmp_path / "pwned"
    files = cifar10_python_files()
    payload = Evaluates(f"open({str(marker)!r}, 'w').write('x')")
    if writer == "python2":
        files["test_batch"] = py2_pickle({b"data": payload})
    else:
        files["test_batch"] = pickle.dumps(payload, protocol=4)
    write_folder(tmp_path, "cifar-10-batches-py", files)
    with pytest.raises(pickle.UnpicklingError, match=r"global (__builtin__|builtins)\.eval"):
        CIFAR10(tmp_path, train=False)
    assert not marker.exists()


def test_object_arrays_are_refused(tmp_path):
    files = cifar10_python_files()
    files["test_batch"] = py2_pickle({b"data": np.array([1, "x"], dtype=object), b"labels": []})
    write_folder(tmp_path, "cifar-10-batches-py", files)
    with pytest.raises(pickle.UnpicklingError, match="object"):
        CIFAR10(tmp_path, train=False)


def test_truncated_binary_file(tmp_path):
    files = cifar10_binary_files()
    files["test_batch.bin"] = files["test_batch.bin"][:-10]
    write_folder(tmp_path, "cifar-10-batches-bin", files)
    with pytest.raises(ValueError, match=r"test_batch\.bin.*3073-byte records") as info:
        CIFAR10(tmp_path, train=False)
    assert str(4 * 3073 - 10) in str(info.value)


def test_wrong_shapes_and_labels_are_reported(tmp_path):
    files = cifar10_python_files()
    files["test_batch"] = py2_pickle({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    write_folder(tmp_path, "a/cifar-10-batches-py", files)
    with pytest.raises(ValueError, match=r"test_batch.*3072"):
        CIFAR10(tmp_path / "a", train=False)

    files["test_batch"] = py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})
    write_folder(tmp_path, "b/cifar-10-batches-py", files)
    with pytest.raises(ValueError, match=r"test_batch.*\[0, 10\)"):
        CIFAR10(tmp_path / "b", train=False)


def test_class_names_that_differ_from_the_official_ones(tmp_path):
    files = cifar10_binary_files()
    files["batches.meta.txt"] = b"cat\ndog\n"
    write_folder(tmp_path, "cifar-10-batches-bin", files)
    with pytest.raises(ValueError, match=r"batches\.meta\.txt.*official"):
        CIFAR10(tmp_path)
