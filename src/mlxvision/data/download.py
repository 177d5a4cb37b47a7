"""Fetching dataset files: resumable, checksum-verified, atomic downloads and safe extraction.

Example:
    >>> import io, tarfile, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with tarfile.open(folder / "hello.tar.gz", "w:gz") as tar:
    ...     info = tarfile.TarInfo("hello/world.txt")
    ...     info.size = 2
    ...     tar.addfile(info, io.BytesIO(b"hi"))
    >>> out = extract_archive(folder / "hello.tar.gz", folder / "out")
    >>> (out / "hello" / "world.txt").read_text()
    'hi'
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from .._files import atomic_path
from .._version import __version__

__all__ = ["ChecksumError", "DownloadError", "UnsafeArchiveError", "download", "extract_archive"]

_CHUNK = 1 << 20
_USER_AGENT = f"mlxvision/{__version__}"


class DownloadError(OSError):
    """A download failed: the server answered with an error or the connection broke.

    Example:
        >>> import tempfile
        >>> url, root = "http://127.0.0.1:9/data.tar.gz", tempfile.mkdtemp()  # nothing listens
        >>> download(url, root, progress=False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mlxvision.data.download.DownloadError: http://127.0.0.1:9/data.tar.gz: ...
    """


class ChecksumError(DownloadError):
    """A downloaded file does not match its published checksum (the file has been deleted).

    Example:
        >>> import functools, http.server, pathlib, tempfile, threading
        >>> served = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (served / "data.bin").write_bytes(b"not the published file")
        >>> handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=served)
        >>> server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        >>> threading.Thread(target=server.serve_forever, daemon=True).start()
        >>> url = f"http://127.0.0.1:{server.server_port}/data.bin"
        >>> root = tempfile.mkdtemp()
        >>> download(url, root, sha256="0" * 64, progress=False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mlxvision.data.download.ChecksumError: ...: the downloaded file does not match ...
        >>> server.shutdown()
    """


class UnsafeArchiveError(ValueError):
    """An archive holds a member that would land outside the destination folder.

    Nothing of such an archive is extracted.

    Example:
        >>> import io, pathlib, tarfile, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> with tarfile.open(folder / "evil.tar", "w") as tar:
        ...     member = tarfile.TarInfo("../outside.txt")
        ...     member.size = 2
        ...     tar.addfile(member, io.BytesIO(b"hi"))
        >>> extract_archive(folder / "evil.tar", folder / "out")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mlxvision.data.download.UnsafeArchiveError: ...: its path climbs out of the destination
        >>> (folder / "outside.txt").exists()
        False
    """


# --------------------------------------------------------------------------------------------
# download


def download(
    url: str,
    root: str | os.PathLike,
    filename: str | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    *,
    retries: int = 3,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` into ``root/filename`` and return that path.

    * **Cache:** when the file is already there and matches the given checksums (or no checksum
      is given), nothing is fetched.
    * **Resume:** bytes arrive in ``root/filename.part``; a later call (or an automatic retry,
      up to ``retries`` times, after a connection that breaks mid-file) asks the server for the
      rest with an HTTP ``Range`` request, and starts over when the server ignores it.
    * **Atomic:** the ``.part`` file becomes ``root/filename`` only once every checksum matches;
      on a mismatch it is deleted and :class:`ChecksumError` names both hashes.

    Args:
        url: an ``http://`` or ``https://`` address.
        root: the folder to download into (created if missing).
        filename: the name to save as; defaults to the last part of the URL's path.
        sha256: expected SHA-256 hex digest, or ``None``.
        md5: expected MD5 hex digest, or ``None``.
        progress: show a progress bar.
        retries: how many times to resume after the connection breaks mid-file.
        timeout: seconds to wait for the server before giving up on a connection.

    Raises:
        DownloadError: the server answered with an HTTP error, could not be reached, or the
            transfer broke more than ``retries`` times (the ``.part`` file is kept for resuming).
        ChecksumError: the finished file does not match ``sha256`` / ``md5``.

    Example:
        >>> path = download(  # doctest: +SKIP
        ...     "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "data",
        ...     md5="c58f30108f718f92721af3b95e74349a")
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"url: expected an http:// or https:// address, got {url!r}")
    if filename is None:
        filename = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
        if not filename:
            raise ValueError(f"url: {url!r} does not end in a file name; pass filename=")
    if filename in (".", "..") or "/" in filename or os.sep in filename:
        raise ValueError(f"filename: expected a plain file name, got {filename!r}")
    expected = _expected_hashes(sha256=sha256, md5=md5)
    if retries < 0:
        raise ValueError(f"retries: expected a count >= 0, got {retries}")

    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / filename
    if target.is_file() and (not expected or _matches(target, expected)):
        return target

    part = folder / f"{filename}.part"
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, progress=progress, timeout=timeout)
            break
        except _Interrupted as error:
            if attempt == retries:
                raise DownloadError(
                    f"{url}: the connection broke {retries + 1} time(s); {error}. The partial "
                    f"file {part} is kept: call download() again to resume."
                ) from error.__cause__

    if expected:
        actual = _file_hashes(part, expected)
        wrong = {name: digest for name, digest in expected.items() if actual[name] != digest}
        if wrong:
            part.unlink()
            details = "; ".join(
                f"expected {name} {digest}, got {actual[name]}" for name, digest in wrong.items()
            )
            raise ChecksumError(
                f"{url}: the downloaded file does not match its checksum ({details}); the "
                f"corrupt file was deleted."
            )
    _fsync(part)
    os.replace(part, target)
    _fsync(folder)
    return target


class _Interrupted(Exception):
    """The connection broke after some bytes arrived; the caller may resume."""


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Bring ``part`` to the full content of ``url``, resuming from its current size."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            # The partial file is as long as (or longer than) the resource: start over.
            part.unlink()
            return _fetch(url, part, progress, timeout)
        raise DownloadError(
            f"{url}: the server answered HTTP {error.code} {error.reason}"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"{url}: could not connect ({reason})") from None

    with response:
        status = response.status
        if status == 206 and offset:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise DownloadError(
                    f"{url}: asked for bytes from {offset}, the server sent a range starting at "
                    f"{start} (Content-Range: {response.headers.get('Content-Range')!r}); the "
                    f"partial file was deleted, so the next call starts over"
                )
            mode = "ab"
        elif status == 200:
            offset, mode = 0, "wb"  # the server ignored Range (or none was sent): start over
        else:
            raise DownloadError(f"{url}: unexpected HTTP status {status} {response.reason}")

        length = response.headers.get("Content-Length")
        remaining = int(length) if length is not None and length.isdigit() else None
        total = offset + remaining if remaining is not None else None
        received = 0
        bar = tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name[: -len(".part")],
            disable=not progress,
            leave=False,
        )
        with bar, part.open(mode) as out:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (http.client.IncompleteRead, ConnectionError, TimeoutError) as error:
                    out.write(getattr(error, "partial", b""))
                    out.flush()
                    have = offset + received + len(getattr(error, "partial", b""))
                    raise _Interrupted(_progress_note(have, total)) from error
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if remaining is not None and received < remaining:
            raise _Interrupted(_progress_note(offset + received, total))
    return None


def _progress_note(have: int, total: int | None) -> str:
    of = f" of {total}" if total is not None else ""
    return f"{have}{of} bytes arrived"


def _content_range_start(value: str | None) -> int | None:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    return int(match.group(1)) if match else None


def _expected_hashes(sha256: str | None, md5: str | None) -> dict[str, str]:
    expected = {}
    for name, digest, size in (("sha256", sha256, 64), ("md5", md5, 32)):
        if digest is None:
            continue
        digest = digest.strip().lower()
        if not re.fullmatch(rf"[0-9a-f]{{{size}}}", digest):
            raise ValueError(f"{name}: expected {size} hexadecimal digits, got {digest!r}")
        expected[name] = digest
    return expected


def _file_hashes(path: Path, names: dict[str, str] | tuple[str, ...]) -> dict[str, str]:
    hashers = {name: hashlib.new(name, usedforsecurity=False) for name in names}
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def _matches(path: Path, expected: dict[str, str]) -> bool:
    return _file_hashes(path, expected) == expected


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# extraction


def extract_archive(path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack a ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``, ``.zip`` or ``.gz``
    file into the folder ``dest`` (created if missing) and return ``dest``.

    Every member is checked before anything is written: absolute paths, ``..`` that climbs out
    of ``dest``, symbolic or hard links that point outside it (or that later members would be
    written through), and device files or pipes raise :class:`UnsafeArchiveError` naming the
    member. Members are unpacked into a temporary folder inside ``dest`` and moved into place
    only once all of them are out, so an interrupted extraction leaves no half-written folder.
    A plain ``.gz`` file becomes ``dest/<name without .gz>``.

    Example:
        >>> import gzip, tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "numbers.txt.gz").write_bytes(gzip.compress(b"1 2 3"))
        >>> (extract_archive(folder / "numbers.txt.gz", folder) / "numbers.txt").read_bytes()
        b'1 2 3'
    """
    path = Path(path)
    dest = Path(dest)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such archive")
    name = path.name.lower()
    dest.mkdir(parents=True, exist_ok=True)
    if name.endswith(".zip"):
        _extract_zip(path, dest)
    elif name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")):
        _extract_tar(path, dest)
    elif name.endswith(".gz"):
        _extract_gzip(path, dest)
    else:
        raise ValueError(
            f"{path}: unknown archive type; expected .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz, "
            f".zip or .gz"
        )
    return dest


def _extract_gzip(path: Path, dest: Path) -> None:
    with atomic_path(dest / path.name[: -len(".gz")]) as tmp:
        try:
            with gzip.open(path, "rb") as source, tmp.open("wb") as out:
                shutil.copyfileobj(source, out, _CHUNK)
        except (OSError, EOFError) as error:
            raise ValueError(f"{path}: not a complete gzip file ({error})") from None


def _extract_tar(path: Path, dest: Path) -> None:
    try:
        with tarfile.open(path, "r:*") as tar:
            members = tar.getmembers()
            _check_tar_members(path, members)
            with _staging(dest) as staging:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tar.extractall(staging, members=members)
                _move_into(staging, dest)
    except (tarfile.TarError, EOFError) as error:
        raise ValueError(f"{path}: not a readable tar archive ({error})") from None


def _extract_zip(path: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            for info in infos:
                mode = info.external_attr >> 16
                if mode and (mode & 0o170000) not in (0, 0o100000, 0o040000):
                    raise UnsafeArchiveError(
                        f"{path}: refusing member {info.filename!r}: only regular files and "
                        f"folders may be extracted (it is a link or special file)"
                    )
                _normalize(path, info.filename, allow_root=info.is_dir())
            with _staging(dest) as staging:
                archive.extractall(staging, members=infos)
                _move_into(staging, dest)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path}: not a readable zip archive ({error})") from None


def _check_tar_members(path: Path, members: list[tarfile.TarInfo]) -> None:
    kinds: dict[str, str] = {}  # normalized member path -> "dir" | "file" | "link:<target>"
    names: list[tuple[tarfile.TarInfo, str]] = []
    for member in members:
        if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
            raise UnsafeArchiveError(
                f"{path}: refusing member {member.name!r}: device files and pipes are not extracted"
            )
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise UnsafeArchiveError(
                f"{path}: refusing member {member.name!r}: unsupported member type {member.type!r}"
            )
        if (member.issym() or member.islnk()) and (
            member.linkname.startswith("/") or _has_drive(member.linkname)
        ):
            raise UnsafeArchiveError(
                f"{path}: refusing member {member.name!r}: link to the absolute path "
                f"{member.linkname!r}"
            )
        own = _normalize(path, member.name, allow_root=member.isdir())
        if member.issym():
            parent = posixpath.dirname(own)
            kinds[own] = "link:" + (f"{parent}/{member.linkname}" if parent else member.linkname)
        elif own:
            kinds[own] = "dir" if member.isdir() else "file"
        names.append((member, own))
    # With every member known, nothing may be written through a link, and every link must
    # resolve inside the destination, however links chain through each other.
    for member, own in names:
        parts = own.split("/")
        for end in range(1, len(parts)):
            prefix = "/".join(parts[:end])
            if kinds.get(prefix, "").startswith("link:"):
                raise UnsafeArchiveError(
                    f"{path}: refusing member {member.name!r}: it would be written through the "
                    f"link {prefix!r}"
                )
        if member.issym():
            what = f"symbolic link to {member.linkname!r}"
            _resolve_inside(path, member.name, kinds[own][len("link:") :], kinds, what)
        elif member.islnk():
            what = f"hard link to {member.linkname!r}"
            _resolve_inside(path, member.name, member.linkname, kinds, what)


def _has_drive(name: str) -> bool:
    return bool(re.match(r"^[A-Za-z]:", name)) or name.startswith("\\")


def _normalize(path: Path, name: str, allow_root: bool = False) -> str:
    """A member name as a clean relative path; refuses absolute paths and climbs out of it."""
    if name.startswith("/") or _has_drive(name):
        raise UnsafeArchiveError(f"{path}: refusing member {name!r}: absolute path")
    parts: list[str] = []
    for part in name.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise UnsafeArchiveError(
                    f"{path}: refusing member {name!r}: its path climbs out of the destination"
                )
            parts.pop()
        else:
            parts.append(part)
    if not parts and not allow_root:
        raise UnsafeArchiveError(f"{path}: refusing member {name!r}: it names the destination")
    return "/".join(parts)


def _resolve_inside(
    path: Path, name: str, target: str, kinds: dict[str, str], what: str, depth: int = 0
) -> str:
    """Follow ``target`` (relative to the destination) through the archive's links."""
    if depth > 40:
        raise UnsafeArchiveError(f"{path}: refusing member {name!r}: too many levels of links")
    parts: list[str] = []
    pieces = target.replace("\\", "/").split("/")
    for index, part in enumerate(pieces):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise UnsafeArchiveError(
                    f"{path}: refusing member {name!r}: its {what} points outside the destination"
                )
            parts.pop()
            continue
        parts.append(part)
        kind = kinds.get("/".join(parts), "")
        if kind.startswith("link:"):
            resolved = _resolve_inside(path, name, kind[len("link:") :], kinds, what, depth + 1)
            rest = "/".join(pieces[index + 1 :])
            joined = f"{resolved}/{rest}" if resolved and rest else resolved or rest
            return _resolve_inside(path, name, joined, kinds, what, depth + 1)
    return "/".join(parts)


class _staging:
    """A temporary folder inside ``dest``, removed on exit whatever happens."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix=".extract-", dir=self.dest))
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _move_into(staging: Path, dest: Path) -> None:
    """Move what ``staging`` holds into ``dest``, merging folders that exist in both."""
    for entry in sorted(staging.iterdir()):
        target = dest / entry.name
        entry_is_dir = entry.is_dir() and not entry.is_symlink()
        target_is_dir = target.is_dir() and not target.is_symlink()
        if entry_is_dir and target_is_dir:
            _move_into(entry, target)
        else:
            if target_is_dir:
                shutil.rmtree(target)
            elif target.is_symlink() or target.exists():
                target.unlink()
            os.replace(entry, target)
