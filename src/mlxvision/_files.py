"""Writing files so that a reader never sees half of one: temp file, fsync, rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it onto ``target`` atomically.

    Whatever the body writes at the yielded path (a file or a folder) replaces ``target`` only
    when the body returns; on an exception the temporary is removed and ``target`` is untouched.

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
        raise FileNotFoundError(f"{target}: the folder {folder} does not exist")
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()
    try:
        yield tmp
        _fsync_tree(tmp)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
        _fsync(folder)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


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
