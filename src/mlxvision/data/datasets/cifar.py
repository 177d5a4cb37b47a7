"""CIFAR-10 and CIFAR-100 from their official releases (python pickles or binary records).

The python release is unpickled with an allow-list (:class:`RestrictedUnpickler`): only the
NumPy array machinery that the official files use can be loaded, so a tampered file cannot run
code. The binary release needs no unpickling at all.
"""

from __future__ import annotations

import io
import os
import pickle
import posixpath
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..download import download as _download
from ..download import extract_archive
from .arrays import ArrayDataset, Transform

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy < 2
    from numpy.core.multiarray import _reconstruct

__all__ = [
    "CIFAR10",
    "CIFAR10_CLASSES",
    "CIFAR100",
    "CIFAR100_CLASSES",
    "CIFAR100_SUPERCLASSES",
    "RestrictedUnpickler",
]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip

CIFAR100_SUPERCLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)  # fmt: skip

_PIXELS = 3 * 32 * 32


# --------------------------------------------------------------------------------------------
# restricted unpickling


def _plain_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"refusing a NumPy dtype holding Python objects ({dtype})")
    return dtype


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, strings, numbers and plain NumPy arrays.

    The official CIFAR python files are Python 2 pickles of dicts whose values are lists and
    ``uint8`` arrays; the only globals they name are NumPy's array reconstructor,
    ``numpy.ndarray`` and ``numpy.dtype``. Any other global (``os.system``, ``builtins.eval``,
    ...) raises :class:`pickle.UnpicklingError` naming the file and the refused global, before
    it is called. Strings stay ``bytes`` (``encoding="bytes"``), as in the official loader.

    Example:
        >>> import io, pickle
        >>> RestrictedUnpickler(io.BytesIO(pickle.dumps({"a": [1, 2]}, 2)), "demo").load()
        {'a': [1, 2]}
        >>> try:
        ...     RestrictedUnpickler(io.BytesIO(pickle.dumps(print, 4)), "demo").load()
        ... except pickle.UnpicklingError as error:
        ...     print(str(error).split(":")[1])
         refusing to load the global builtins.print
    """

    ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _plain_dtype,
    }

    def __init__(self, file: io.BufferedIOBase | io.BytesIO, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in self.ALLOWED)
            raise pickle.UnpicklingError(
                f"{self.source}: refusing to load the global {module}.{name}: official CIFAR "
                f"files name only {allowed}. This file is not an official CIFAR file and may "
                f"be malicious; nothing from it was run."
            ) from None


def _unpickle(data: bytes, source: str) -> dict[bytes, Any]:
    try:
        result = RestrictedUnpickler(io.BytesIO(data), source).load()
    except pickle.UnpicklingError:
        raise
    except Exception as error:
        raise ValueError(f"{source}: not a readable CIFAR pickle ({error})") from None
    if not isinstance(result, dict):
        raise ValueError(f"{source}: expected a pickled dict, got {type(result).__name__}")
    return result


# --------------------------------------------------------------------------------------------
# the releases


@dataclass(frozen=True)
class _Release:
    url: str
    md5: str
    folder: str  # the top-level folder inside the archive
    train: tuple[str, ...]
    test: tuple[str, ...]
    labels: tuple[str, ...]  # label columns: keys of the pickled dicts, or bytes of a record
    meta: tuple[tuple[str, str | None, tuple[str, ...]], ...]  # (file, pickle key, classes)
    binary: bool

    @property
    def archive(self) -> str:
        return self.url.rsplit("/", 1)[1]


_BASE_URL = "https://www.cs.toronto.edu/~kriz/"
_LABEL_CLASSES = {
    "labels": CIFAR10_CLASSES,
    "fine_labels": CIFAR100_CLASSES,
    "coarse_labels": CIFAR100_SUPERCLASSES,
}

CIFAR10_PYTHON = _Release(
    url=_BASE_URL + "cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    folder="cifar-10-batches-py",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test=("test_batch",),
    labels=("labels",),
    meta=(("batches.meta", "label_names", CIFAR10_CLASSES),),
    binary=False,
)
CIFAR10_BINARY = _Release(
    url=_BASE_URL + "cifar-10-binary.tar.gz",
    md5="c32a1d4ab5d03f1284b67883e8d87530",
    folder="cifar-10-batches-bin",
    train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    test=("test_batch.bin",),
    labels=("labels",),
    meta=(("batches.meta.txt", None, CIFAR10_CLASSES),),
    binary=True,
)
CIFAR100_PYTHON = _Release(
    url=_BASE_URL + "cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    folder="cifar-100-python",
    train=("train",),
    test=("test",),
    labels=("fine_labels", "coarse_labels"),
    meta=(
        ("meta", "fine_label_names", CIFAR100_CLASSES),
        ("meta", "coarse_label_names", CIFAR100_SUPERCLASSES),
    ),
    binary=False,
)
CIFAR100_BINARY = _Release(
    url=_BASE_URL + "cifar-100-binary.tar.gz",
    md5="03b5dce01913d631647c71ecec9e9cb8",
    folder="cifar-100-binary",
    train=("train.bin",),
    test=("test.bin",),
    labels=("coarse_labels", "fine_labels"),  # each record: coarse byte, fine byte, pixels
    meta=(
        ("fine_label_names.txt", None, CIFAR100_CLASSES),
        ("coarse_label_names.txt", None, CIFAR100_SUPERCLASSES),
    ),
    binary=True,
)


class _Files:
    """The files of one release, read from an extracted folder or straight from its archive."""

    def __init__(
        self, release: _Release, folder: Path | None = None, archive: Path | None = None
    ) -> None:
        self.release, self.folder, self.archive = release, folder, archive

    @property
    def source(self) -> Path:
        return self.folder if self.folder is not None else self.archive  # type: ignore[return-value]

    def where(self, name: str) -> str:
        if self.folder is not None:
            return str(self.folder / name)
        return f"{self.archive}:{self.release.folder}/{name}"

    def read(self, names: Sequence[str], optional: Sequence[str] = ()) -> dict[str, bytes]:
        """The contents of ``names`` (all required) and of those ``optional`` files present."""
        if self.folder is None:
            return self._read_archive(names, optional)
        found = {}
        for name in [*names, *optional]:
            path = self.folder / name
            if path.is_file():
                found[name] = path.read_bytes()
            elif name in names:
                raise FileNotFoundError(
                    f"{path}: missing; expected the official {self.release.folder} files "
                    f"{', '.join(names)}"
                )
        return found

    def _read_archive(self, names: Sequence[str], optional: Sequence[str]) -> dict[str, bytes]:
        wanted = {f"{self.release.folder}/{name}": name for name in [*names, *optional]}
        found: dict[str, bytes] = {}
        try:
            with tarfile.open(self.archive, "r:*") as tar:
                for member in tar:  # one pass: gzip streams are slow to seek backwards
                    name = wanted.get(posixpath.normpath(member.name))
                    if name is not None and member.isfile():
                        found[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
                        if len(found) == len(wanted):
                            break
        except (tarfile.TarError, EOFError, OSError) as error:
            raise ValueError(f"{self.archive}: not a readable tar archive ({error})") from None
        missing = [name for name in names if name not in found]
        if missing:
            raise FileNotFoundError(
                f"{self.archive}: the archive lacks {', '.join(missing)} in "
                f"{self.release.folder}/; is it the official {self.release.archive}?"
            )
        return found


def _find(root: Path, releases: Sequence[_Release]) -> _Files | None:
    for release in releases:  # extracted folders first: they are the fastest to read
        folder = root / release.folder
        if (folder / release.train[0]).is_file() or (folder / release.test[0]).is_file():
            return _Files(release, folder=folder)
    for release in releases:
        if (root / release.archive).is_file():
            return _Files(release, archive=root / release.archive)
    for release in releases:  # ``root`` may be an extracted folder itself, renamed or not
        names = (*release.train, *release.test, *(meta[0] for meta in release.meta))
        if all((root / name).is_file() for name in names):
            return _Files(release, folder=root)
    return None


def _locate(root: Path, releases: Sequence[_Release], download: bool, name: str) -> _Files:
    files = _find(root, releases)
    if files is None and download:
        release = releases[0]
        archive = _download(release.url, root, md5=release.md5)
        extract_archive(archive, root)
        files = _find(root, releases)
    if files is None:
        looked = ", ".join(str(root / p) for r in releases for p in (r.folder + "/", r.archive))
        raise FileNotFoundError(
            f"{name}: no dataset files under {root} (looked for {looked}); pass download=True "
            f"to fetch {releases[0].url}"
        )
    return files


# --------------------------------------------------------------------------------------------
# parsing


def _python_batch(data: bytes, where: str, keys: Sequence[str]) -> tuple[np.ndarray, dict]:
    batch = _unpickle(data, where)
    pixels = batch.get(b"data")
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError(f"{where}: expected b'data' to be a uint8 array of shape N×{_PIXELS}")
    if pixels.shape[1] != _PIXELS:
        raise ValueError(f"{where}: expected b'data' of shape N×{_PIXELS}, got {pixels.shape}")
    columns = {}
    for key in keys:
        if key.encode() not in batch:
            raise ValueError(f"{where}: missing the key {key.encode()!r}")
        labels = np.asarray(batch[key.encode()])
        if labels.shape != (pixels.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"{where}: expected {key.encode()!r} to hold {pixels.shape[0]} integers, got "
                f"shape {labels.shape} of {labels.dtype}"
            )
        columns[key] = labels.astype(np.int32)
    return pixels, columns


def _binary_batch(data: bytes, where: str, keys: Sequence[str]) -> tuple[np.ndarray, dict]:
    record = len(keys) + _PIXELS
    if not data or len(data) % record:
        raise ValueError(
            f"{where}: expected a whole number of {record}-byte records, got {len(data)} bytes "
            f"({len(data) / record:.2f} records); the file is truncated or not a CIFAR binary file"
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, record)
    columns = {key: records[:, i].astype(np.int32) for i, key in enumerate(keys)}
    return records[:, len(keys) :], columns


def _class_names(data: bytes, where: str, key: str | None) -> list[str]:
    if key is None:
        return [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]
    names = _unpickle(data, where).get(key.encode())
    if not isinstance(names, list) or not all(isinstance(n, bytes | str) for n in names):
        raise ValueError(f"{where}: expected {key.encode()!r} to be a list of class names")
    return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]


def _load(files: _Files, train: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Images (N×32×32×3, uint8) and each label column of the train or test split."""
    release = files.release
    names = release.train if train else release.test
    meta_files = sorted({meta[0] for meta in release.meta})
    contents = files.read(names, optional=meta_files)
    for meta_file, key, classes in release.meta:
        if meta_file in contents:
            where = files.where(meta_file)
            found = _class_names(contents[meta_file], where, key)
            if found != list(classes):
                raise ValueError(
                    f"{where}: the class names {found[:3]}... ({len(found)} in all) differ from "
                    f"the official {list(classes[:3])}... ({len(classes)}); this is not the "
                    f"official release"
                )
    parts, columns = [], {key: [] for key in release.labels}
    for name in names:
        where = files.where(name)
        read = _binary_batch if release.binary else _python_batch
        pixels, labels = read(contents.pop(name), where, release.labels)
        for key, column in labels.items():
            count = len(_LABEL_CLASSES[key])
            if column.size and (column.min() < 0 or column.max() >= count):
                raise ValueError(
                    f"{where}: {key} must lie in [0, {count}), found values from "
                    f"{column.min()} to {column.max()}"
                )
            columns[key].append(column)
        parts.append(pixels)
    pixels = np.concatenate(parts)
    images = np.ascontiguousarray(pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, {key: np.concatenate(column) for key, column in columns.items()}


# --------------------------------------------------------------------------------------------
# datasets


class CIFAR10(ArrayDataset):
    """CIFAR-10: 60,000 colour 32×32 images in 10 classes (50,000 train, 10,000 test).

    Reads from ``root`` whichever official release is there, in this order: the extracted
    python release ``cifar-10-batches-py/``, the extracted binary release
    ``cifar-10-batches-bin/``, then the archives ``cifar-10-python.tar.gz`` or
    ``cifar-10-binary.tar.gz`` (read without extracting). ``root`` may also be one of those
    folders itself. With ``download=True`` and nothing found, the python release is downloaded
    (MD5-checked) and extracted into ``root``. Images are uint8 ``N×32×32×3`` (NHWC); ``classes``
    are in the official label order; ``source`` is the folder or archive that was read.

    Example:
        >>> train = CIFAR10("data", train=True, download=True)  # doctest: +SKIP
        >>> len(train), train.image_shape, train.classes[:3]  # doctest: +SKIP
        (50000, (32, 32, 3), ['airplane', 'automobile', 'bird'])
    """

    releases = (CIFAR10_PYTHON, CIFAR10_BINARY)
    # Per-channel mean and standard deviation of the train split, pixels scaled to [0, 1].
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool = True,
        download: bool = False,
        transform: Transform | None = None,
    ) -> None:
        files = _locate(Path(root), self.releases, download, type(self).__name__)
        images, labels = _load(files, train)
        super().__init__(images, labels["labels"], classes=CIFAR10_CLASSES, transform=transform)
        self.train = train
        self.source = files.source


class CIFAR100(ArrayDataset):
    """CIFAR-100: 60,000 colour 32×32 images in 100 classes grouped in 20 superclasses.

    Reads the official python release (``cifar-100-python/`` or ``cifar-100-python.tar.gz``)
    or the binary release (``cifar-100-binary/`` or ``cifar-100-binary.tar.gz``) from ``root``,
    as :class:`CIFAR10` does. Labels are the 100 fine classes, or with ``coarse=True`` the 20
    superclasses; both label sets are also kept as ``fine_labels`` and ``coarse_labels``.

    Example:
        >>> test = CIFAR100("data", train=False, download=True)  # doctest: +SKIP
        >>> len(test), test.num_classes, test.classes[:2]  # doctest: +SKIP
        (10000, 100, ['apple', 'aquarium_fish'])
    """

    releases = (CIFAR100_PYTHON, CIFAR100_BINARY)
    # Per-channel mean and standard deviation of the train split, pixels scaled to [0, 1].
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool = True,
        download: bool = False,
        transform: Transform | None = None,
        coarse: bool = False,
    ) -> None:
        files = _locate(Path(root), self.releases, download, type(self).__name__)
        images, labels = _load(files, train)
        classes = CIFAR100_SUPERCLASSES if coarse else CIFAR100_CLASSES
        chosen = labels["coarse_labels" if coarse else "fine_labels"]
        super().__init__(images, chosen, classes=classes, transform=transform)
        self.train = train
        self.coarse = coarse
        self.source = files.source
        self.fine_labels = labels["fine_labels"]
        self.coarse_labels = labels["coarse_labels"]
