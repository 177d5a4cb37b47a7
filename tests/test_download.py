"""download(): caching, resuming, checksums, errors; extract_archive(): refusing unsafe members."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import socket
import stat
import tarfile
import zipfile

import pytest

from http_server import FileServer
from mlxvision.data import download, extract_archive
from mlxvision.data.download import ChecksumError, DownloadError, UnsafeArchiveError

PAYLOAD = bytes(range(256)) * 4099  # about 1 MiB, not a multiple of the read chunk


@pytest.fixture
def server():
    with FileServer({"data.bin": PAYLOAD, "small.txt": b"hello\n"}) as running:
        yield running


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------------------------
# download


def test_download_verifies_and_caches(server, tmp_path):
    url = f"{server.url}/data.bin"
    path = download(url, tmp_path / "cache", sha256=sha256(PAYLOAD), md5=md5(PAYLOAD))
    assert path == tmp_path / "cache" / "data.bin"
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.bin"]
    fetched = len(server.requests)
    again = download(url, tmp_path / "cache", sha256=sha256(PAYLOAD), progress=False)
    assert again == path
    assert len(server.requests) == fetched  # cache hit: no request at all


def test_download_without_checksum_uses_existing_file(server, tmp_path):
    (tmp_path / "small.txt").write_bytes(b"mine")
    path = download(f"{server.url}/small.txt", tmp_path, progress=False)
    assert path.read_bytes() == b"mine"
    assert server.requests == []


def test_download_replaces_a_cached_file_that_fails_its_checksum(server, tmp_path):
    (tmp_path / "small.txt").write_bytes(b"stale")
    path = download(f"{server.url}/small.txt", tmp_path, md5=md5(b"hello\n"), progress=False)
    assert path.read_bytes() == b"hello\n"
    assert len(server.requests) == 1


def test_download_custom_filename(server, tmp_path):
    path = download(f"{server.url}/small.txt", tmp_path, filename="other.txt", progress=False)
    assert path.name == "other.txt" and path.read_bytes() == b"hello\n"


def test_checksum_mismatch_names_both_hashes_and_deletes_the_file(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as info:
        download(f"{server.url}/data.bin", tmp_path, sha256=wrong, progress=False)
    message = str(info.value)
    assert wrong in message and sha256(PAYLOAD) in message and "data.bin" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code", [404, 500])
def test_http_errors_name_status_and_url(server, tmp_path, code):
    url = f"{server.url}/status/{code}"
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path, filename="x.bin", progress=False)
    assert str(code) in str(info.value) and url in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_is_404(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        download(f"{server.url}/nope.bin", tmp_path, progress=False)


def test_broken_connection_keeps_partial_file_and_resumes_with_range(server, tmp_path):
    url = f"{server.url}/drop/data.bin"
    with pytest.raises(DownloadError, match="resume") as info:
        download(url, tmp_path, md5=md5(PAYLOAD), progress=False, retries=0)
    assert url in str(info.value)
    part = tmp_path / "data.bin.part"
    assert part.read_bytes() == PAYLOAD[: len(PAYLOAD) // 2]
    assert not (tmp_path / "data.bin").exists()

    path = download(url, tmp_path, md5=md5(PAYLOAD), progress=False, retries=0)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/drop/data.bin", f"bytes={len(PAYLOAD) // 2}-")
    assert not part.exists()


def test_broken_connection_is_retried_within_one_call(server, tmp_path):
    path = download(f"{server.url}/drop/data.bin", tmp_path, sha256=sha256(PAYLOAD), progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [r[1] for r in server.requests] == [None, f"bytes={len(PAYLOAD) // 2}-"]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(b"garbage that is not a prefix")
    path = download(f"{server.url}/norange/data.bin", tmp_path, md5=md5(PAYLOAD), progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[0][1] == "bytes=28-"


def test_partial_file_longer_than_resource_restarts(server, tmp_path):
    (tmp_path / "small.txt.part").write_bytes(b"x" * 100)
    path = download(f"{server.url}/small.txt", tmp_path, md5=md5(b"hello\n"), progress=False)
    assert path.read_bytes() == b"hello\n"
    assert [r[1] for r in server.requests] == ["bytes=100-", None]


def test_connection_refused_is_a_clear_error(tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/file.bin"
    with pytest.raises(DownloadError, match="could not connect") as info:
        download(url, tmp_path, progress=False, timeout=5)
    assert url in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"url": "ftp://example.com/a.bin"}, "http"),
        ({"url": "file:///etc/passwd"}, "http"),
        ({"url": "http://example.com/"}, "filename"),
        ({"url": "http://example.com/a", "filename": "../a"}, "plain file name"),
        ({"url": "http://example.com/a", "md5": "abc"}, "md5"),
        ({"url": "http://example.com/a", "sha256": "z" * 64}, "sha256"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        download(root=tmp_path, progress=False, **kwargs)


# --------------------------------------------------------------------------------------------
# extract_archive


def make_tar(path, members, mode="w:gz"):
    """``members``: (name, bytes) for files, (name, TarInfo-type, linkname) for others."""
    with tarfile.open(path, mode) as tar:
        for member in members:
            info = tarfile.TarInfo(member[0])
            if len(member) == 2:
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
            else:
                info.type, info.linkname = member[1], member[2]
                tar.addfile(info)
    return path


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_extract_tar_gz_tgz_tar(tmp_path):
    members = [("top/a.txt", b"a"), ("top/sub/b.txt", b"bb"), ("./top/c.txt", b"c")]
    for name, mode in [("x.tar.gz", "w:gz"), ("x.tgz", "w:gz"), ("x.tar", "w")]:
        dest = tmp_path / name.replace(".", "_")
        out = extract_archive(make_tar(tmp_path / name, members, mode), dest)
        assert out == dest
        assert (dest / "top/sub/b.txt").read_bytes() == b"bb"
        assert tree(dest) == ["top", "top/a.txt", "top/c.txt", "top/sub", "top/sub/b.txt"]


def test_extract_merges_into_existing_folder(tmp_path):
    dest = tmp_path / "dest"
    (dest / "top").mkdir(parents=True)
    (dest / "top" / "keep.txt").write_text("keep")
    (dest / "top" / "a.txt").write_text("old")
    extract_archive(make_tar(tmp_path / "x.tar", [("top/a.txt", b"new")], "w"), dest)
    assert (dest / "top" / "keep.txt").read_text() == "keep"
    assert (dest / "top" / "a.txt").read_text() == "new"
    assert tree(dest) == ["top", "top/a.txt", "top/keep.txt"]


def test_extract_zip_and_gz(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as archive:
        archive.writestr("folder/one.txt", "1")
        archive.writestr("two.txt", "2")
    extract_archive(tmp_path / "x.zip", tmp_path / "z")
    assert tree(tmp_path / "z") == ["folder", "folder/one.txt", "two.txt"]
    assert (tmp_path / "z" / "folder" / "one.txt").read_text() == "1"

    (tmp_path / "file.idx.gz").write_bytes(gzip.compress(b"\x00\x01\x02"))
    extract_archive(tmp_path / "file.idx.gz", tmp_path / "g")
    assert (tmp_path / "g" / "file.idx").read_bytes() == b"\x00\x01\x02"


def test_extract_keeps_links_that_stay_inside(tmp_path):
    members = [
        ("top/real.txt", b"real"),
        ("top/link.txt", tarfile.SYMTYPE, "real.txt"),
        ("top/hard.txt", tarfile.LNKTYPE, "top/real.txt"),
    ]
    dest = extract_archive(make_tar(tmp_path / "x.tar", members, "w"), tmp_path / "d")
    assert (dest / "top/link.txt").is_symlink()
    assert (dest / "top/link.txt").read_text() == "real"
    assert (dest / "top/hard.txt").read_text() == "real"


UNSAFE = {
    "dotdot": [("ok.txt", b"fine"), ("../evil.txt", b"evil")],
    "nested_dotdot": [("ok.txt", b"fine"), ("a/b/../../../evil.txt", b"evil")],
    "absolute": [("ok.txt", b"fine"), ("/evil_absolute.txt", b"evil")],
    "symlink_out": [("ok.txt", b"fine"), ("link", tarfile.SYMTYPE, "../outside")],
    "symlink_abs": [("ok.txt", b"fine"), ("link", tarfile.SYMTYPE, "/etc")],
    "write_through_symlink": [
        ("ok.txt", b"fine"),
        ("link", tarfile.SYMTYPE, "."),
        ("link/evil.txt", b"evil"),
    ],
    "symlink_chain": [  # a -> x/.. looks inside until x turns out to be a link to "."
        ("ok.txt", b"fine"),
        ("a", tarfile.SYMTYPE, "x/.."),
        ("x", tarfile.SYMTYPE, "."),
    ],
    "hardlink_out": [("ok.txt", b"fine"), ("hard", tarfile.LNKTYPE, "../../etc/passwd")],
    "chardev": [("ok.txt", b"fine"), ("dev", tarfile.CHRTYPE, "")],
    "fifo": [("ok.txt", b"fine"), ("pipe", tarfile.FIFOTYPE, "")],
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_tar_is_refused_before_writing_anything(tmp_path, case):
    archive = make_tar(tmp_path / "bad.tar.gz", UNSAFE[case])
    bad_member = "a" if case == "symlink_chain" else UNSAFE[case][-1][0]
    dest = tmp_path / "inner" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(UnsafeArchiveError) as info:
        extract_archive(archive, dest)
    assert repr(bad_member) in str(info.value)
    assert str(archive) in str(info.value)
    assert list(dest.iterdir()) == []  # not even the harmless first member
    assert tree(tmp_path) == ["bad.tar.gz", "inner", "inner/dest"]


@pytest.mark.parametrize("name", ["../evil.txt", "/evil.txt"])
def test_unsafe_zip_is_refused(tmp_path, name):
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as archive:
        archive.writestr("ok.txt", "fine")
        archive.writestr(name, "evil")
    dest = tmp_path / "inner" / "dest"
    with pytest.raises(UnsafeArchiveError, match="evil.txt"):
        extract_archive(tmp_path / "bad.zip", dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "inner" / "evil.txt").exists()


def test_zip_symlink_member_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as archive:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "../outside")
    with pytest.raises(UnsafeArchiveError, match="'link'"):
        extract_archive(tmp_path / "bad.zip", tmp_path / "dest")


def test_extract_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tar"):
        extract_archive(tmp_path / "missing.tar", tmp_path)
    (tmp_path / "a.rar").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown archive type"):
        extract_archive(tmp_path / "a.rar", tmp_path)
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar at all")
    with pytest.raises(ValueError, match="broken.tar.gz"):
        extract_archive(tmp_path / "broken.tar.gz", tmp_path / "out")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(os.urandom(5000))[:-100])
    with pytest.raises(ValueError, match="cut.gz"):
        extract_archive(tmp_path / "cut.gz", tmp_path / "out")
    assert not (tmp_path / "out" / "cut").exists()
