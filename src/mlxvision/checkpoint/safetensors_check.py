"""Checking a safetensors file's header before MLX reads it, so bad files fail clearly."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

MAX_HEADER_BYTES = 100 * 1024 * 1024
ITEM_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2,
    "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "C64": 8, "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not fit the model; the message names it.

    Example:
        >>> import tempfile
        >>> from mlxvision.checkpoint import load
        >>> path = tempfile.mkdtemp() + "/broken.safetensors"
        >>> with open(path, "wb") as f:
        ...     _ = f.write(b"not a checkpoint")
        >>> load(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mlxvision.checkpoint.safetensors_check.CheckpointError: ...broken.safetensors: corrupt ...
        >>> issubclass(CheckpointError, ValueError)
        True
    """


def read_header(path: str | os.PathLike) -> dict:
    """Parse and check the header of a safetensors file; return it as a dict.

    Checks that the header length fits the file, that it is JSON, and that every tensor's
    dtype, shape and byte range agree with each other and with the file size.

    Example:
        >>> import tempfile, mlx.core as mx
        >>> path = tempfile.mkdtemp() + "/w.safetensors"
        >>> mx.save_safetensors(path, {"w": mx.zeros((2, 3))})
        >>> read_header(path)["w"]["shape"]
        [2, 3]
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes long)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(size - 8, MAX_HEADER_BYTES):
            raise CheckpointError(
                f"{path}: corrupt safetensors header (declares {header_len} header bytes in a "
                f"file of {size} bytes)"
            )
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt safetensors header ({err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_size = size - 8 - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        _check_entry(path, name, entry, data_size)
    return header


def _check_entry(path: Path, name: str, entry: object, data_size: int) -> None:
    try:
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        ok = dtype in ITEM_SIZES and all(isinstance(d, int) and d >= 0 for d in shape)
        expected = math.prod(shape) * ITEM_SIZES[dtype] if ok else -1
    except (TypeError, KeyError, ValueError):
        raise CheckpointError(f"{path}: corrupt entry for tensor {name!r}: {entry!r}") from None
    if not (ok and isinstance(begin, int) and isinstance(end, int)):
        raise CheckpointError(f"{path}: corrupt entry for tensor {name!r}: {entry!r}")
    if not 0 <= begin <= end <= data_size or end - begin != expected:
        raise CheckpointError(
            f"{path}: tensor {name!r} ({dtype}, shape {shape}) needs {expected} bytes but its "
            f"byte range [{begin}, {end}) does not fit the {data_size} bytes of data in the file "
            "(truncated or corrupt)"
        )
