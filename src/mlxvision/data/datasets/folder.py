"""Photos in class folders (``root/<class>/<image>``), as a folder or a ``.tar`` archive.

Images are decoded by mlx-data in background C++ threads, so decoding runs in parallel without
the GIL. Two ways to use a folder:

- :meth:`ImageFolder.to_arrays` decodes everything once into an in-memory
  :class:`~mlxvision.data.datasets.arrays.ArrayDataset` (``uint8`` N×H×W×3) for the
  :class:`~mlxvision.data.DataLoader`; with ``cache`` the arrays are kept as ``.npy`` files and
  the next run loads them instead of decoding.
- :meth:`ImageFolder.batches` streams ``(images, labels)`` batches from disk with bounded memory,
  for data sets too large to hold in memory.

A ``.tar`` archive is read in place, never extracted. Its members are found by a quick scan of
the tar headers, which also refuses what mlx-data's tar reader would get wrong: compressed
archives, names stored in PAX extended headers (long or non-ASCII names written by Python's
``tarfile`` or bsdtar; GNU long names are fine) and JPEG members cut short inside their headers
(mlx-data would hang on those).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..._files import atomic_path
from .arrays import ArrayDataset

__all__ = ["DECODABLE_EXTENSIONS", "ImageFolder"]

DECODABLE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tga", ".ppm", ".pgm")
"""File extensions whose formats mlx-data decodes (libjpeg for JPEG, stb_image for the rest)."""

_CACHE_FORMAT = 1
_COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}

Transform = Callable[..., Any]


def _pillow() -> ModuleType:
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError(
            "ImageFolder needs an image decoder: install mlx-data (`pip install mlx-data`; "
            "wheels for macOS arm64 with Python 3.11-3.13 and Linux x86_64 with Python 3.11) "
            "or Pillow (`pip install pillow`)."
        ) from error
    return Image


def _has_mlx_data() -> bool:
    try:
        import mlx.data  # noqa: F401
    except ImportError:
        return False
    return True


def _mlx_data() -> ModuleType:
    try:
        import mlx.data as dx
    except ImportError as error:
        raise ImportError(
            "ImageFolder decodes images with mlx-data, which is not installed. Install it with "
            "`pip install mlx-data` (wheels exist for macOS arm64 with Python 3.11-3.13 and for "
            "Linux x86_64 with Python 3.11), or decode the images yourself and use ArrayDataset."
        ) from error
    return dx


# --------------------------------------------------------------------------------------------
# finding the images


@dataclass(frozen=True)
class _Layout:
    """Where the images are: sorted classes and ``(key, label)`` samples."""

    classes: list[str]
    samples: list[tuple[str, int]]
    keys: list[bytes]  # what mlx-data reads: a file path or a tar member name
    spans: list[tuple[int, int]] | None = None  # for an archive: each member's (offset, size)


def _is_hidden(relative: str) -> bool:
    return relative.startswith(".") or "/." in relative


def _class_level(relatives: list[str], root: Path, extensions: Sequence[str]) -> str:
    """The folder, relative to ``root``, whose subfolders are the classes ("" for ``root``)."""
    kinds = ", ".join(extensions)
    if not relatives:
        raise ValueError(f"{root}: found no images with the extensions {kinds}")
    depths = [r.count("/") + 1 for r in relatives]
    shallow, deep = int(np.argmin(depths)), int(np.argmax(depths))
    if depths[deep] == 1:
        raise ValueError(
            f"{root}: found no class folders; expected images at <root>/<class>/<image> "
            f"(for example {relatives[0]!r} should be in a folder named after its class)"
        )
    if depths[shallow] != depths[deep]:
        raise ValueError(
            f"{root}: images lie at different depths ({relatives[shallow]!r} and "
            f"{relatives[deep]!r}); expected every image at <root>/[<folder>/]<class>/<image>"
        )
    prefixes = {r.rsplit("/", 2)[0] if r.count("/") > 1 else "" for r in relatives}
    if len(prefixes) > 1:
        a, b = sorted(prefixes)[:2]
        raise ValueError(
            f"{root}: the class folders lie in more than one folder ({a!r} and {b!r}); expected "
            f"one folder of class folders. Point ImageFolder at one of them."
        )
    return prefixes.pop()


def _arrange(
    relatives: list[str], root: Path, extensions: Sequence[str]
) -> tuple[str, list[str], list[int], list[int]]:
    """The class folder level, the classes, the sorted order of ``relatives`` and its labels."""
    prefix = _class_level(relatives, root, extensions)
    class_of = [r.rsplit("/", 2)[-2] for r in relatives]
    classes = sorted(set(class_of))
    index = {c: i for i, c in enumerate(classes)}
    order = sorted(range(len(relatives)), key=lambda i: (index[class_of[i]], relatives[i]))
    return prefix, classes, order, [index[class_of[i]] for i in order]


def _scan_folder(root: Path, extensions: Sequence[str]) -> _Layout:
    relatives: list[str] = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        subfolders[:] = [s for s in subfolders if not s.startswith(".")]
        base = Path(folder).relative_to(root).as_posix()
        for name in files:
            if not name.startswith(".") and name.lower().endswith(tuple(extensions)):
                relatives.append(name if base == "." else f"{base}/{name}")
    keys = [os.fsencode(root / r) for r in relatives]
    prefix, classes, order, labels = _arrange(relatives, root, extensions)
    class_folder = root / prefix
    empty = sorted(
        entry.name
        for entry in os.scandir(class_folder)
        if entry.is_dir() and not entry.name.startswith(".") and entry.name not in classes
    )
    if empty:
        raise ValueError(
            f"{class_folder}: the class folder(s) {', '.join(map(repr, empty))} hold no images "
            f"with the extensions {', '.join(extensions)}; remove them or add images (an empty "
            f"class would shift the labels of the classes after it)"
        )
    samples = [(str(root / relatives[i]), label) for i, label in zip(order, labels, strict=True)]
    return _Layout(classes, samples, [keys[i] for i in order])


def _tar_number(field: bytes) -> int | None:
    """A numeric tar header field: octal text, or GNU base-256; ``None`` if neither."""
    if field[0] & 0x80:
        return int.from_bytes(field, "big") & ~(0x80 << (8 * (len(field) - 1)))
    digits = field.split(b"\0", 1)[0].strip()
    try:
        return int(digits or b"0", 8)
    except ValueError:
        return None


def _check_tar_start(archive: Path, head: bytes) -> None:
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            raise ValueError(
                f"{archive}: a {kind}-compressed archive; ImageFolder reads plain .tar archives "
                f"in place. Decompress it first (the .tar it holds can be used as is), or "
                f"extract it with mlxvision.data.extract_archive and pass the folder."
            )
    if len(head) < 512:
        raise ValueError(f"{archive}: not a tar archive (shorter than one 512-byte header)")
    computed = sum(head[:148]) + 8 * ord(" ") + sum(head[156:512])
    if head.count(0) != 512 and _tar_number(head[148:156]) != computed:
        raise ValueError(f"{archive}: not a tar archive (its first header's checksum is wrong)")


def _jpeg_header_fits(fd: int, start: int, end: int, chunk: bytes) -> bool:
    """Whether the JPEG marker segments up to the first scan lie within bytes ``[start, end)``.

    ``chunk`` holds the first bytes of the file; more are read from ``fd`` when needed.
    """
    pos, chunk_start = start + 2, start
    while pos + 1 < end:
        if pos + 4 > chunk_start + len(chunk):
            chunk_start, chunk = pos, os.pread(fd, min(4096, end - pos), pos)
        i = pos - chunk_start
        if chunk[i] != 0xFF:  # a stray byte between segments: libjpeg skips those too
            pos += 1
            continue
        marker = chunk[i + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # end of image before any scan: the decoder reports it
            return True
        if marker == 0 or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length follows
            pos += 2
            continue
        if pos + 4 > end:
            return False
        pos += 2 + ((chunk[i + 2] << 8) | chunk[i + 3])
        if pos > end:
            return False
        if marker == 0xDA:  # start of scan: what follows is image data
            return True
    return False


def _relative(name: bytes) -> str:
    return posixpath.normpath(name.decode("utf-8", "surrogateescape")).lstrip("/")


def _scan_tar(archive: Path, extensions: Sequence[str]) -> _Layout:
    """Index the regular files of ``archive`` as mlx-data's tar reader names them.

    Reads each header together with the first bytes of its member (``os.pread``; no memory
    map, so the archive's pages never count as this process's memory).
    """
    members: dict[bytes, tuple[str, bool, int, int]] = {}  # name: (path, JPEG cut, offset, size)
    suffixes = tuple(extensions)
    with open(archive, "rb") as file:
        fd = file.fileno()
        end = os.fstat(fd).st_size
        _check_tar_start(archive, os.pread(fd, 512, 0))
        pos, long_name = 0, b""
        while pos + 512 <= end:
            block = os.pread(fd, 512 + 2048, pos)
            header = block[:512]
            if header.count(0) == 512:
                break
            size, kind = _tar_number(header[124:136]), header[156:157]
            if size is None:
                raise ValueError(f"{archive}: corrupt tar header at byte {pos}")
            start = pos + 512
            pos = start + (size + 511) // 512 * 512
            if pos > end:
                raise ValueError(f"{archive}: truncated tar archive (a member ends past its end)")
            payload = block[512 : 512 + size] if size <= 2048 else os.pread(fd, size, start)
            if kind in (b"x", b"g"):
                fields = b"\n" + payload
                if b" path=" in fields or b" linkpath=" in fields:
                    raise ValueError(
                        f"{archive}: member names are stored in PAX extended headers (long or "
                        f"non-ASCII names), which mlx-data's tar reader cannot read. Re-create "
                        f"the archive in GNU format (`tar --format=gnu -cf ...`, or "
                        f"tarfile.open(..., format=tarfile.GNU_FORMAT)), or extract it and pass "
                        f"the folder."
                    )
                continue
            if kind == b"L":
                long_name = payload.split(b"\0", 1)[0]
                continue
            if kind in (b"0", b"\0"):
                name = header[0:100].split(b"\0", 1)[0]
                prefix = header[345:500].split(b"\0", 1)[0]
                if long_name:
                    name = long_name
                elif prefix:
                    name = prefix + b"/" + name
                relative = _relative(name)
                if not _is_hidden(relative) and relative.lower().endswith(suffixes):
                    head = block[512 : 512 + size]
                    cut = head[:3] == b"\xff\xd8\xff" and not _jpeg_header_fits(
                        fd, start, start + size, head
                    )
                    members[name] = (relative, cut, start, size)  # a later same name wins
            long_name = b""
    for relative, cut, _, _ in members.values():
        if cut:
            raise ValueError(
                f"{archive}:{relative}: corrupt JPEG (the file ends inside its headers; truncated?)"
            )
    keys = list(members)
    relatives = [entry[0] for entry in members.values()]
    spans = [(entry[2], entry[3]) for entry in members.values()]
    _, classes, order, labels = _arrange(relatives, archive, extensions)
    samples = [(relatives[i], label) for i, label in zip(order, labels, strict=True)]
    return _Layout(classes, samples, [keys[i] for i in order], [spans[i] for i in order])


# --------------------------------------------------------------------------------------------
# arguments


def _image_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    size = tuple(image_size) if isinstance(image_size, Sequence) else ()
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in size):
        raise ValueError(f"image_size: expected an int or (height, width), got {image_size!r}")
    if min(size) <= 0:
        raise ValueError(f"image_size: expected positive sizes, got {image_size!r}")
    return size  # type: ignore[return-value]


def _extensions(extensions: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = (extensions,)
    result = tuple(str(e).lower() for e in extensions)
    if not result:
        raise ValueError("extensions: expected at least one extension such as '.jpg'")
    for given, ext in zip(extensions, result, strict=True):
        if not isinstance(given, str) or not ext.startswith(".") or len(ext) < 2:
            raise ValueError(f"extensions: expected strings such as '.jpg', got {given!r}")
        if ext not in DECODABLE_EXTENSIONS:
            raise ValueError(
                f"extensions: mlx-data cannot decode {given!r} files; it decodes "
                f"{', '.join(DECODABLE_EXTENSIONS)}"
            )
    return result


def _threads(num_threads: int | None) -> int:
    if num_threads is None:
        affinity = getattr(os, "sched_getaffinity", None)
        return len(affinity(0)) if affinity else (os.cpu_count() or 1)
    if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
        raise ValueError(f"num_threads: expected a positive int or None, got {num_threads!r}")
    return num_threads


def _default_cache_folder() -> Path:
    if "MLXVISION_CACHE" in os.environ:
        return Path(os.environ["MLXVISION_CACHE"]) / "imagefolder"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlxvision" / "imagefolder"


# --------------------------------------------------------------------------------------------
# the dataset


class ImageFolder:
    """Images in class folders, from a folder or a plain ``.tar`` archive, decoded by mlx-data.

    ``root`` is a folder laid out as ``root/<class>/<image>``, or a ``.tar`` archive of that
    layout, possibly under top folders (``train/<class>/0001.jpg`` inside ``train.tar``): the
    classes are the folders just above the images, which must all lie at the same depth under one
    common folder. Labels number the class names in sorted order; samples are sorted by class,
    then path. Files and folders whose names start with ``.`` are skipped, as are files with other
    extensions; a class folder without images is an error (it would shift the labels).

    Every image becomes RGB ``uint8``: grey images are repeated over three channels and alpha is
    dropped, as Pillow's ``convert("RGB")``. With ``image_size`` (an int for squares, or
    ``(height, width)``) each image is first resized so that its shorter side is
    ``max(height, width)`` (bilinear with antialiasing, as Pillow's; the longer side rounded to
    the nearest pixel) and then center-cropped (offsets rounded down), like torchvision's
    ``Resize`` + ``CenterCrop``. Without it all images must share one size.

    Decoding: JPEG by libjpeg, the other formats (:data:`DECODABLE_EXTENSIONS`) by stb_image. A
    JPEG whose image data is cut short decodes with its missing part filled in (libjpeg's
    behaviour; it prints a warning); CMYK JPEGs are not converted to RGB correctly.

    Args:
        root: the folder or ``.tar`` archive.
        image_size: resize and center-crop every image to this size; ``None`` keeps sizes.
        transform: a batch transform on the device (see :mod:`mlxvision.data.transforms`),
            given to the :class:`ArrayDataset` of :meth:`to_arrays` and used by :meth:`batches`.
        extensions: which files are images (case-insensitive).
        num_threads: decoding threads; ``None`` uses every CPU core available.
        cache: ``False``, ``True`` (cache in ``$MLXVISION_CACHE/imagefolder``, by default
            ``~/.cache/mlxvision/imagefolder``) or a folder: :meth:`to_arrays` then stores the
            decoded arrays there and reuses them while the files (for an archive: its size and
            modification time) and ``image_size`` stay the same.
        decoder: ``"mlx-data"`` (C++ threads, no GIL), ``"pillow"`` (a thread pool; for
            platforms without mlx-data wheels, such as Linux with Python 3.12), or ``"auto"``:
            mlx-data where installed, else Pillow. Both give the same pixels for PNG, and JPEG
            pixels within a few levels (the decoders differ).

    Example:
        >>> import pathlib, tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ["cat", "dog"]:
        ...     (root / name).mkdir()
        ...     for i in range(3):  # 6×8 binary PPM files, the simplest image format
        ...         ppm = b"P6 6 8 255 " + bytes([40 * i]) * (8 * 6 * 3)
        ...         _ = (root / name / f"{i}.ppm").write_bytes(ppm)
        >>> folder = ImageFolder(root, extensions=".ppm")
        >>> folder.classes, len(folder), folder.samples[3][1]
        (['cat', 'dog'], 6, 1)
        >>> data = folder.to_arrays()
        >>> data.images.shape, data.images.dtype, data.labels.tolist()
        ((6, 8, 6, 3), dtype('uint8'), [0, 0, 0, 1, 1, 1])
        >>> [tuple(x.shape) for x, y in folder.batches(4, shuffle=True, seed=0)]
        [(4, 8, 6, 3), (2, 8, 6, 3)]
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int | Sequence[int] | None = None,
        transform: Transform | None = None,
        extensions: str | Sequence[str] = (".jpg", ".jpeg", ".png"),
        num_threads: int | None = None,
        cache: bool | str | os.PathLike = False,
        decoder: str = "auto",
    ) -> None:
        self.root = Path(root)
        self.image_size = _image_size(image_size)
        self.transform = transform
        self.extensions = _extensions(extensions)
        self.num_threads = _threads(num_threads)
        if cache is True:
            self.cache: Path | None = _default_cache_folder()
        elif cache is False or cache is None:
            self.cache = None
        elif isinstance(cache, str | os.PathLike):
            self.cache = Path(cache)
        else:
            raise ValueError(f"cache: expected True, False or a folder, got {cache!r}")
        if not self.root.exists():
            raise FileNotFoundError(f"{self.root}: no such folder or .tar archive")
        if decoder == "auto":
            decoder = "mlx-data" if _has_mlx_data() else "pillow"
        if decoder == "mlx-data":
            _mlx_data()
        elif decoder == "pillow":
            _pillow()
        else:
            raise ValueError(f"decoder: expected 'auto', 'mlx-data' or 'pillow', got {decoder!r}")
        self.decoder = decoder
        self.is_archive = self.root.is_file()
        layout = (_scan_tar if self.is_archive else _scan_folder)(self.root, self.extensions)
        self.classes: list[str] = layout.classes
        self.class_to_idx: dict[str, int] = {c: i for i, c in enumerate(layout.classes)}
        self.samples: list[tuple[str, int]] = layout.samples
        self.labels = np.array([label for _, label in layout.samples], dtype=np.int32)
        self._keys = layout.keys
        self._spans = layout.spans

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def where(self, index: int) -> str:
        """Where sample ``index`` comes from: its path, or ``archive:member``."""
        key = self.samples[index][0]
        return f"{self.root}:{key}" if self.is_archive else key

    # ---------------------------------------------------------------------------- decoding

    def _buffer(self, indices: Sequence[int] | np.ndarray) -> Any:
        """A lazy mlx-data buffer decoding the samples at ``indices`` into ``image``/``shape``."""
        dx = _mlx_data()
        buffer = dx.buffer_from_vector([{"file": self._keys[i]} for i in indices])
        if self.is_archive:
            # JPEG bytes ending without an end-of-image marker make mlx-data's in-memory
            # decoder loop forever; appending one is harmless for complete files.
            buffer = (
                buffer.read_from_tar(os.fspath(self.root), "file", "data")
                .pad("data", 0, 0, 1, 0xFF)
                .pad("data", 0, 0, 1, 0xD9)
                .load_image("data", from_memory=True, output_key="image")
                .filter_key("data", remove=True)
            )
        else:
            buffer = buffer.load_image("file", output_key="image")
        if self.image_size is not None:
            height, width = self.image_size
            buffer = buffer.image_resize_smallest_side("image", max(height, width))
            buffer = buffer.image_center_crop("image", width, height)
        return buffer.shape("image", "shape").filter_key("file", remove=True)

    def _decode_error(self, indices: np.ndarray, error: Exception) -> ValueError:
        buffer = self._buffer(indices)
        for position, index in enumerate(indices):
            try:
                buffer[position]
            except RuntimeError as reason:
                return ValueError(f"{self.where(int(index))}: cannot decode the image ({reason})")
        return ValueError(f"{self.root}: decoding failed ({error})")

    def _decoded(
        self, order: np.ndarray, batch_size: int, prefetch: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(indices, images)`` for consecutive batches of ``order``, images RGB uint8 NHWC."""
        if self.decoder == "pillow":
            yield from self._decoded_by_pillow(order, batch_size)
            return
        stream = iter(
            self._buffer(order).batch(batch_size).ordered_prefetch(prefetch, self.num_threads)
        )
        size: tuple[int, int] | None = None
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            try:
                batch = next(stream)
            except RuntimeError as error:
                raise self._decode_error(indices, error) from None
            shapes = batch["shape"]
            if size is None:
                size = (int(shapes[0, 0]), int(shapes[0, 1]))
            wrong = np.flatnonzero((shapes[:, 0] != size[0]) | (shapes[:, 1] != size[1]))
            if wrong.size:
                odd = int(wrong[0])
                raise ValueError(
                    f"{self.where(int(indices[odd]))}: this image is "
                    f"{shapes[odd, 0]}×{shapes[odd, 1]} but {self.where(int(order[0]))} is "
                    f"{size[0]}×{size[1]}; images of different sizes need "
                    f"ImageFolder(..., image_size=...)"
                )
            yield indices, _rgb(batch["image"], shapes[:, 2])

    def _decoded_by_pillow(
        self, order: np.ndarray, batch_size: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        from concurrent.futures import ThreadPoolExecutor

        image_module = _pillow()
        with contextlib.ExitStack() as stack:
            fd = None
            if self.is_archive:
                fd = os.open(self.root, os.O_RDONLY)
                stack.callback(os.close, fd)
            pool = stack.enter_context(ThreadPoolExecutor(self.num_threads))

            def decode(index: int) -> np.ndarray:
                if fd is None:
                    data = Path(os.fsdecode(self._keys[index])).read_bytes()
                else:
                    start, size = self._spans[index]
                    data = os.pread(fd, size, start)
                try:
                    return _pillow_image(image_module, data, self.image_size)
                except (OSError, ValueError) as reason:
                    raise ValueError(
                        f"{self.where(index)}: cannot decode the image ({reason})"
                    ) from None

            size = None
            for start in range(0, len(order), batch_size):
                indices = order[start : start + batch_size]
                images = list(pool.map(decode, indices.tolist()))
                for index, image in zip(indices.tolist(), images, strict=True):
                    size = size or image.shape[:2]
                    if image.shape[:2] != size:
                        raise ValueError(
                            f"{self.where(index)}: this image is {image.shape[0]}×"
                            f"{image.shape[1]} but {self.where(int(order[0]))} is "
                            f"{size[0]}×{size[1]}; images of different sizes need "
                            f"ImageFolder(..., image_size=...)"
                        )
                yield indices, np.stack(images)

    # ---------------------------------------------------------------------------- in memory

    def to_arrays(self, batch_size: int = 256) -> ArrayDataset:
        """Decode every image into memory: an :class:`ArrayDataset` of ``uint8`` N×H×W×3.

        With ``cache``, arrays decoded before (for the same files and ``image_size``) are loaded
        from the cache folder, and freshly decoded ones are written there atomically.
        """
        _positive(batch_size, "batch_size")
        entry = self._cache_entry() if self.cache is not None else None
        if entry is not None:
            cached = self._read_cache(entry)
            if cached is not None:
                return ArrayDataset(cached, self.labels, self.classes, self.transform)
        images: np.ndarray | None = None
        order = np.arange(len(self))
        for indices, batch in self._decoded(order, batch_size, 2 * self.num_threads):
            if images is None:
                images = np.empty((len(self), *batch.shape[1:]), np.uint8)
            images[indices] = batch
        assert images is not None
        if entry is not None:
            self._write_cache(entry, images)
        return ArrayDataset(images, self.labels, self.classes, self.transform)

    load = to_arrays

    # ---------------------------------------------------------------------------- streaming

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """How many batches :meth:`batches` yields."""
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def batches(
        self,
        batch_size: int = 64,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        transform: Transform | None = None,
        epoch: int = 0,
        prefetch: int = 4,
    ) -> Iterator[tuple[Any, Any]]:
        """Stream ``(images, labels)`` batches as ``mx.array`` from disk, decoding ahead.

        At most ``prefetch`` decoded batches wait in memory. The order of epoch ``epoch`` is the
        :class:`~mlxvision.data.DataLoader`'s (a permutation seeded by ``(seed, epoch)``), and
        ``transform`` (default: the folder's) gets the key ``batch_key(seed, epoch, b)`` for
        batch ``b``, so a stream is reproducible. Images are ``uint8`` NHWC unless the transform
        changes them; labels are ``int32``.
        """
        import mlx.core as mx

        from ..loader import batch_key

        _positive(batch_size, "batch_size")
        _positive(prefetch, "prefetch")
        transform = self.transform if transform is None else transform
        if shuffle:
            order = np.random.default_rng([int(seed), int(epoch)]).permutation(len(self))
        else:
            order = np.arange(len(self))
        order = order[: self.num_batches(batch_size, drop_last) * batch_size]
        for b, (indices, batch) in enumerate(self._decoded(order, batch_size, prefetch)):
            images, labels = mx.array(batch), mx.array(self.labels[indices])
            if transform is not None:
                images = transform(images, key=batch_key(int(seed), int(epoch), b))
            yield images, labels

    # ---------------------------------------------------------------------------- cache

    def _cache_entry(self) -> Path:
        source = self.root.resolve()
        if self.is_archive:
            stat = source.stat()
            files: Any = [stat.st_size, stat.st_mtime_ns]
        else:
            digest = hashlib.sha256()
            for key in self._keys:
                stat = os.stat(key)
                digest.update(b"%s\0%d\0%d\n" % (key, stat.st_size, stat.st_mtime_ns))
            files = digest.hexdigest()
        description = {
            "format": _CACHE_FORMAT,
            "source": str(source),
            "files": files,
            "image_size": self.image_size,
            "extensions": self.extensions,
            "classes": self.classes,
            "samples": len(self),
            "decoder": self.decoder,
        }
        key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
        assert self.cache is not None
        return self.cache / f"{source.name}-{key[:20]}"

    def _read_cache(self, entry: Path) -> np.ndarray | None:
        with contextlib.suppress(OSError, ValueError):
            labels = np.load(entry / "labels.npy")
            if np.array_equal(labels, self.labels):
                images = np.load(entry / "images.npy")
                if images.dtype == np.uint8 and images.ndim == 4 and len(images) == len(self):
                    return images
        return None

    def _write_cache(self, entry: Path, images: np.ndarray) -> None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(entry) as folder:
            folder.mkdir()
            np.save(folder / "images.npy", images)
            np.save(folder / "labels.npy", self.labels)
            meta = {"source": str(self.root.resolve()), "classes": self.classes}
            (folder / "meta.json").write_text(json.dumps(meta, indent=1))

    def __repr__(self) -> str:
        return (
            f"ImageFolder(root={str(self.root)!r}, samples={len(self)}, "
            f"classes={self.num_classes}, image_size={self.image_size})"
        )


def _positive(value: int, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


def _pillow_image(image_module, data: bytes, image_size: tuple[int, int] | None) -> np.ndarray:
    """Decode with Pillow to RGB uint8, resized and center-cropped as the mlx-data path does."""
    import io

    with image_module.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    if image_size is not None:
        height, width = image_size
        side = max(height, width)
        scale = side / min(image.width, image.height)
        new_w = side if image.width <= image.height else round(image.width * scale)
        new_h = side if image.height <= image.width else round(image.height * scale)
        image = image.resize((new_w, new_h), image_module.BILINEAR)
        left, top = (new_w - width) // 2, (new_h - height) // 2
        image = image.crop((left, top, left + width, top + height))
    return np.asarray(image, dtype=np.uint8)


def _rgb(images: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """Three channels for every image of a batch whose images had ``channels`` channels.

    Batching pads images with fewer channels with zeros; grey (and grey + alpha) images get
    their grey channel repeated instead, and a fourth channel is dropped.
    """
    if images.shape[-1] == 3 and bool((channels == 3).all()):
        return images
    rgb = np.empty((*images.shape[:-1], 3), np.uint8)
    rgb[...] = images[..., :3] if images.shape[-1] >= 3 else images[..., :1]
    grey = np.flatnonzero(channels < 3)
    rgb[grey] = images[grey, ..., :1]
    return rgb
