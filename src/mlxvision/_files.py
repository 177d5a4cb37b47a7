"""Writing files so that a reader never sees half of one: temp file, fsync, rename.

When writing fails (disk full, file too large, permission denied, read-only file system, ...)
the error is an ``OSError`` of the subclass that matches its ``errno`` (``PermissionError``,
...), whose message names the target and says what happened in words; the operating system's
own error is its ``__cause__``. The target is then untouched and the temporary is removed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REASONS = {
    errno.ENOSPC: "no space left on the device (the disk is full)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "file too large (the file size limit of this process, `ulimit -f`, or of the "
    "file system was reached)",
    errno.EACCES: "permission denied (the folder is not writable by this user)",
    errno.EPERM: "operation not permitted (the folder or file is protected)",
    errno.EROFS: "the file system is read-only",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EIO: "input/output error from the device",
    errno.ENAMETOOLONG: "the file name is too long",
}


def reason(err: OSError) -> str:
    """What an ``OSError`` means, in words.

    Example:
        >>> import errno
        >>> reason(OSError(errno.ENOSPC, "No space left on device"))
        'no space left on the device (the disk is full)'
    """
    return REASONS.get(err.errno or -1) or err.strerror or str(err)


def write_error(target: str | os.PathLike, err: OSError, what: str, then: str = "") -> OSError:
    """An ``OSError`` (same errno, so the same subclass) whose message names ``target``:
    ``"TARGET: WHAT: REASON; THEN"``; raise it ``from err``.

    Example:
        >>> import errno
        >>> err = write_error("m.safetensors", OSError(errno.ENOSPC, "full"), "could not save")
        >>> print(err)
        [Errno 28] m.safetensors: could not save: no space left on the device (the disk is full)
        >>> type(write_error("m", OSError(errno.EACCES, "denied"), "could not save")).__name__
        'PermissionError'
    """
    message = f"{target}: {what}: {reason(err)}" + (f"; {then}" if then else "")
    return OSError(err.errno, message) if err.errno is not None else OSError(message)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it onto ``target`` atomically.

    Whatever the body writes at the yielded path (a file or a folder) replaces ``target`` only
    when the body returns; on an exception the temporary is removed and ``target`` is untouched.
    The temporary is named ``.NAME.tmp-XXXXXXXX`` (hidden; never taken for ``NAME``). A folder
    target is moved aside (``.NAME.old-XXXXXXXX``) for the instant of the swap, then deleted.

    Raises:
        OSError: when creating, writing, syncing or renaming fails, of the subclass matching
            its ``errno`` (``PermissionError``, ``NotADirectoryError``, ...); the message names
            ``target`` and the reason, ``__cause__`` is the original error.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "hello.txt"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_text("hi")
        >>> out.read_text()
        'hi'
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        blocking = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise NotADirectoryError(
                errno.ENOTDIR, f"{target}: cannot write there: {blocking} is a file, not a folder"
            )
        raise FileNotFoundError(
            errno.ENOENT, f"{target}: cannot write there: the folder {folder} does not exist"
        )
    unchanged = "what was there before, if anything, is unchanged"
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", suffix=suffix, dir=folder)
        os.close(fd)
    except OSError as err:
        raise write_error(target, err, f"could not create a file in {folder}", unchanged) from err
    tmp = Path(name)
    tmp.unlink()
    try:
        try:
            yield tmp
            _fsync_tree(tmp)
        except OSError as err:
            raise write_error(target, err, "could not save", unchanged) from err
        try:
            move_into_place(tmp, target)
        except OSError as err:
            raise write_error(
                target, err, "could not move the new version in place", unchanged
            ) from err
        try:
            _fsync(folder)
        except OSError as err:
            raise write_error(
                target,
                err,
                f"saved, but syncing {folder} failed",
                "it may not survive a power loss",
            ) from err
    finally:
        remove(tmp)


def move_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` onto ``target``; a folder ``target`` is moved aside first, then deleted."""
    if not (target.is_dir() and not target.is_symlink()):
        os.replace(tmp, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, aside)  # a folder cannot be replaced by a rename: move the old one aside
    try:
        os.replace(tmp, target)
    except OSError:
        os.replace(aside, target)
        raise
    remove(aside)


def remove(path: Path) -> None:
    """Delete a file or folder if it is there; ignore errors (for cleaning up after a failure)."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a new file ``path`` with ``os.write`` (errors keep their ``errno``).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> write_bytes(path, b"{}")
        >>> path.read_text()
        '{}'
    """
    with open_writer(path) as out:
        out.write(data)


def save_safetensors(
    path: str | os.PathLike, arrays: dict[str, Any], metadata: dict[str, str] | None = None
) -> None:
    """``mx.save_safetensors`` into a new file ``path``, with the OS's errors kept.

    MLX writing to a path reports a failed write as a ``RuntimeError`` without its cause;
    writing through :func:`open_writer` raises the ``OSError`` itself (``ENOSPC``, ``EFBIG``,
    ...).

    Example:
        >>> import tempfile, mlx.core as mx
        >>> path = tempfile.mkdtemp() + "/w.safetensors"
        >>> save_safetensors(path, {"w": mx.ones((2,))})
        >>> mx.load(path)["w"].tolist()
        [1.0, 1.0]
    """
    import mlx.core as mx

    with open_writer(path) as out:
        mx.save_safetensors(out, arrays, metadata=metadata)


@contextlib.contextmanager
def open_writer(path: str | os.PathLike) -> Iterator[io.RawIOBase]:
    """A new file opened for writing whose ``write`` writes every byte or raises ``OSError``.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
        >>> with open_writer(path) as out:
        ...     out.write(b"abc")
        3
        >>> path.read_bytes()
        b'abc'
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    writer = _Writer(fd)
    try:
        yield writer
    finally:
        os.close(fd)


class _Writer(io.RawIOBase):
    """A file object MLX can save into; short writes are continued, errors are raised."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._position = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        while view:
            view = view[os.write(self._fd, view) :]
        self._position += size
        return size


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                _fsync(child)
    _fsync(path)
