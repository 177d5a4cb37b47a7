"""MNIST, Fashion-MNIST and Kuzushiji-MNIST from their IDX files (gzip-compressed or raw)."""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..download import DownloadError
from ..download import download as _download
from .arrays import ArrayDataset, Transform

__all__ = ["KMNIST", "MNIST", "FashionMNIST", "read_idx"]

# IDX type codes (third byte of the magic number) and the big-endian dtypes they stand for.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _file_bytes(path: Path) -> tuple[bytes, str]:
    """The file's (decompressed) content and a note for errors when a gzip stream ends early."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw, ""
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(raw)
    except zlib.error as error:
        raise ValueError(f"{path}: corrupt gzip data ({error})") from None
    if not decompressor.eof:
        return data, " (its gzip stream also ends early: the download was probably cut short)"
    return data, ""


def read_idx(
    path: str | os.PathLike, dtype: np.dtype | str | None = None, ndim: int | None = None
) -> np.ndarray:
    """Read an IDX file (the MNIST format), raw or gzip-compressed, into a NumPy array.

    The header is checked before the data is used: two zero bytes, a known type code, the
    number of dimensions and each size; then the data must hold exactly
    ``prod(sizes) * itemsize`` bytes, so a truncated or padded file raises :class:`ValueError`
    naming the file and both byte counts. ``dtype`` and ``ndim``, when given, must match the
    header. Values come back in native byte order.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> _ = path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 5, 0, 4]))
        >>> read_idx(path, dtype="uint8", ndim=1)
        array([5, 0, 4], dtype=uint8)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such IDX file")
    data, gzip_note = _file_bytes(path)
    if len(data) < 4:
        raise ValueError(
            f"{path}: truncated IDX file: expected at least a 4-byte header, found {len(data)} "
            f"bytes{gzip_note}"
        )
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES or data[3] == 0:
        raise ValueError(
            f"{path}: not an IDX file: its magic number is 0x{magic:08x}; expected two zero "
            f"bytes, a type code among {', '.join(f'0x{c:02x}' for c in IDX_DTYPES)} and a "
            f"dimension count >= 1 (0x00000803 for MNIST images, 0x00000801 for labels)"
        )
    file_dtype, file_ndim = IDX_DTYPES[data[2]], data[3]
    if dtype is not None and file_dtype.newbyteorder("=") != np.dtype(dtype).newbyteorder("="):
        raise ValueError(
            f"{path}: expected IDX data of type {np.dtype(dtype)}, the header (magic number "
            f"0x{magic:08x}) says {file_dtype.newbyteorder('=')}"
        )
    if ndim is not None and file_ndim != ndim:
        raise ValueError(
            f"{path}: expected an IDX file with {ndim} dimension(s), the header (magic number "
            f"0x{magic:08x}) says {file_ndim}"
        )
    header = 4 + 4 * file_ndim
    if len(data) < header:
        raise ValueError(
            f"{path}: truncated IDX file: expected a {header}-byte header, found {len(data)} "
            f"bytes{gzip_note}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(file_ndim))
    expected = header + int(np.prod(shape, dtype=np.int64)) * file_dtype.itemsize
    if len(data) != expected:
        problem = "truncated IDX file" if len(data) < expected else "IDX file with extra bytes"
        raise ValueError(
            f"{path}: {problem}: the header promises shape {shape} of {file_dtype.name}, that is "
            f"{expected} bytes in all, found {len(data)} bytes{gzip_note}"
        )
    if gzip_note:
        raise ValueError(f"{path}: the IDX data is complete but the file is damaged{gzip_note}")
    array = np.frombuffer(data, file_dtype, offset=header).reshape(shape)
    return array.astype(file_dtype.newbyteorder("="), copy=False)


class MNIST(ArrayDataset):
    """MNIST handwritten digits: 70,000 grey 28×28 images (60,000 train, 10,000 test).

    Reads the four official IDX files, gzip-compressed (``train-images-idx3-ubyte.gz``) or raw
    (``train-images-idx3-ubyte``), from ``root`` or from ``root/MNIST/raw/`` (torchvision's
    layout). With ``download=True``, missing files of the split are downloaded into
    ``root/MNIST/raw/`` from the first mirror that answers, each checked against its published
    MD5. Images are uint8 ``N×28×28×1``; ``source`` is the images file that was read.

    Example:
        >>> train = MNIST("data", train=True, download=True)  # doctest: +SKIP
        >>> len(train), train.image_shape, train.labels[:5].tolist()  # doctest: +SKIP
        (60000, (28, 28, 1), [5, 0, 4, 1, 9])
    """

    folder = "MNIST"
    mirrors: Sequence[str] = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    # MD5 of each published .gz file.
    resources: dict[str, str] = {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    class_names: Sequence[str] = tuple(str(d) for d in range(10))
    # Mean and standard deviation of the train split, pixels scaled to [0, 1].
    mean = (0.1307,)
    std = (0.3081,)

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool = True,
        download: bool = False,
        transform: Transform | None = None,
    ) -> None:
        root = Path(root)
        split = "train" if train else "t10k"
        stems = (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte")
        paths = [self._find(root, stem) for stem in stems]
        if download and None in paths:
            self._download(root, [s for s, p in zip(stems, paths, strict=True) if p is None])
            paths = [self._find(root, stem) for stem in stems]
        for stem, path in zip(stems, paths, strict=True):
            if path is None:
                raise FileNotFoundError(
                    f"{type(self).__name__}: no {stem} or {stem}.gz in {root} or "
                    f"{root / self.folder / 'raw'}; pass download=True to fetch it"
                )
        images_path, labels_path = paths
        images = read_idx(images_path, np.uint8, ndim=3)
        labels = read_idx(labels_path, np.uint8, ndim=1)
        if images.shape[1:] != (28, 28):
            raise ValueError(f"{images_path}: expected 28×28 images, got shape {images.shape}")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{labels_path}: holds {labels.shape[0]} labels, but {images_path} holds "
                f"{images.shape[0]} images"
            )
        if labels.size and labels.max() >= len(self.class_names):
            raise ValueError(
                f"{labels_path}: labels must lie in [0, {len(self.class_names)}), found "
                f"{int(labels.max())}"
            )
        super().__init__(images[..., None], labels, self.class_names, transform=transform)
        self.train = train
        self.source = images_path

    @classmethod
    def _find(cls, root: Path, stem: str) -> Path | None:
        dotted = stem.replace("-idx", ".idx")  # the name some unzip tools give these files
        for folder in (root, root / cls.folder / "raw", root / cls.folder):
            for name in (stem, f"{stem}.gz", dotted, f"{dotted}.gz"):
                if (folder / name).is_file():
                    return folder / name
        return None

    @classmethod
    def _download(cls, root: Path, stems: Sequence[str]) -> None:
        for stem in stems:
            filename = f"{stem}.gz"
            errors = []
            for mirror in cls.mirrors:
                try:
                    _download(
                        mirror + filename, root / cls.folder / "raw", md5=cls.resources[filename]
                    )
                    break
                except DownloadError as error:
                    errors.append(str(error))
            else:
                raise DownloadError(
                    f"{cls.__name__}: could not download {filename} from any mirror:\n  "
                    + "\n  ".join(errors)
                )


class FashionMNIST(MNIST):
    """Fashion-MNIST: 70,000 grey 28×28 images of 10 kinds of clothing, a drop-in for MNIST.

    Same files, layout and options as :class:`MNIST`, in ``root`` or ``root/FashionMNIST/raw/``.

    Example:
        >>> test = FashionMNIST("data", train=False, download=True)  # doctest: +SKIP
        >>> len(test), test.classes[:2]  # doctest: +SKIP
        (10000, ['T-shirt/top', 'Trouser'])
    """

    folder = "FashionMNIST"
    mirrors = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
    resources = {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
    class_names = (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )  # fmt: skip
    mean = (0.2860,)
    std = (0.3530,)


class KMNIST(MNIST):
    """Kuzushiji-MNIST: 70,000 grey 28×28 images of 10 cursive Japanese characters.

    Same files, layout and options as :class:`MNIST`, in ``root`` or ``root/KMNIST/raw/``.
    Classes are the romanized hiragana ``o, ki, su, tsu, na, ha, ma, ya, re, wo``.

    Example:
        >>> test = KMNIST("data", train=False, download=True)  # doctest: +SKIP
        >>> len(test), test.classes[:3]  # doctest: +SKIP
        (10000, ['o', 'ki', 'su'])
    """

    folder = "KMNIST"
    mirrors = ("https://codh.rois.ac.jp/kmnist/dataset/kmnist/",)
    resources = {
        "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
        "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
        "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
        "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
    }
    class_names = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    mean = (0.1918,)
    std = (0.3483,)
