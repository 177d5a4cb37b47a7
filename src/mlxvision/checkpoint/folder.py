"""A training checkpoint: one folder of safetensors and JSON files with a SHA-256 manifest.

Layout::

    model.safetensors       weights + the model's registry spec (loadable on its own)
    ema.safetensors         averaged weights, when training keeps an EMA
    optimizer.safetensors   optimizer state: step count, moments, learning rate
    arrays.safetensors      other state arrays: MLX random key, loss scale, ...
    state.json              epoch, batch index, seeds, metrics so far, library version
    manifest.json           SHA-256 and size of every file above

The folder is written under a hidden temporary name beside the target (``.NAME.tmp-XXXXXXXX``,
never taken for a checkpoint), fsynced, then renamed: a reader sees a whole checkpoint or none.
A failed write (disk full, ...) removes the temporary and raises an ``OSError`` naming the
target. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from .._files import atomic_path, save_safetensors, write_bytes
from .._version import __version__
from .model_file import check_weights, write_model_file
from .model_file import load as load_model_file
from .safetensors_check import CheckpointError, read_header

FORMAT = "mlxvision.checkpoint/1"
MANIFEST = "manifest.json"
STATE = "state.json"
MODEL = "model.safetensors"
EMA = "ema.safetensors"
OPTIMIZER = "optimizer.safetensors"
ARRAYS = "arrays.safetensors"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    optimizer_state: dict | None = None,
    ema_weights: dict | None = None,
    arrays: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint folder at ``path`` atomically; refuse to overwrite one unless
    ``overwrite=True`` (the old one then stays whole until the new one is complete).

    ``optimizer_state`` (``optimizer.state``), ``ema_weights`` and ``arrays`` are trees of
    arrays; ``state`` is JSON-serialisable training state; ``metadata`` travels with the model
    weights (class names, normalization, ...).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        OSError: writing failed (disk full, file too large, permission denied, ...): the
            subclass matching its ``errno``, a message naming ``path`` and the reason, the
            original error as ``__cause__``. Nothing is left at ``path`` but what was there.

    Example:
        >>> import tempfile, mlx.nn as nn
        >>> target = tempfile.mkdtemp() + "/ckpt"
        >>> folder = save_checkpoint(target, nn.Linear(2, 2), state={"epoch": 1})
        >>> sorted(p.name for p in folder.iterdir())
        ['manifest.json', 'model.safetensors', 'state.json']
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: a checkpoint is already there; choose a new folder")
    try:
        state_text = json.dumps(
            {"format": FORMAT, "mlxvision_version": __version__, **(state or {})}, indent=1
        )
    except TypeError as err:
        raise TypeError(f"save_checkpoint: state must be JSON ({err})") from None
    trees = {EMA: ema_weights, OPTIMIZER: optimizer_state, ARRAYS: arrays or None}
    flat = {name: _flat(tree, name) for name, tree in trees.items() if tree is not None}
    with atomic_path(path) as tmp:
        tmp.mkdir()
        write_model_file(model, tmp / MODEL, metadata=metadata)
        for name, weights in flat.items():
            save_safetensors(tmp / name, weights)
        write_bytes(tmp / STATE, state_text.encode())
        files = sorted(p.name for p in tmp.iterdir())
        manifest = {
            "format": FORMAT,
            "files": {
                name: {"sha256": sha256_of(tmp / name), "bytes": (tmp / name).stat().st_size}
                for name in files
            },
        }
        write_bytes(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
    return path


def _flat(tree: Any, name: str) -> dict[str, mx.array]:
    flat = tree_flatten(tree)
    bad = [k for k, v in flat if not isinstance(v, mx.array)]
    if bad:
        what = {EMA: "ema_weights", OPTIMIZER: "optimizer_state", ARRAYS: "arrays"}[name]
        raise TypeError(f"{what}: expected arrays only, found other values at {', '.join(bad)}")
    return dict(flat)


def is_checkpoint(path: str | os.PathLike) -> bool:
    """True if ``path`` is a checkpoint folder (it has a manifest); temporary folders are not.

    Example:
        >>> is_checkpoint("no/such/folder")
        False
    """
    path = Path(path)
    return path.is_dir() and not path.name.startswith(".") and (path / MANIFEST).is_file()


def verify_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Check every file against the manifest (presence, size, SHA-256); return the manifest.

    Raises :class:`CheckpointError` naming each file that is missing, extra or altered.

    Example:
        >>> verify_checkpoint("no/such/folder")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mlxvision.checkpoint.safetensors_check.CheckpointError: no/such/folder: not a checkpoint...
    """
    path = Path(path)
    if not is_checkpoint(path):
        raise CheckpointError(f"{path}: not a checkpoint folder (no {MANIFEST})")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError(f"unknown format {manifest.get('format')!r}")
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path / MANIFEST}: unreadable manifest ({err})") from None
    problems = []
    for name, entry in files.items():
        file = path / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif file.stat().st_size != entry.get("bytes"):
            problems.append(
                f"{name} has {file.stat().st_size} bytes, the manifest says {entry.get('bytes')}"
            )
        elif sha256_of(file) != entry.get("sha256"):
            problems.append(f"{name} does not match its SHA-256 in the manifest")
    extra = sorted(p.name for p in path.iterdir() if p.name not in files and p.name != MANIFEST)
    problems += [f"{name} is not in the manifest" for name in extra]
    if problems:
        raise CheckpointError(f"{path}: damaged checkpoint: " + "; ".join(problems))
    return manifest


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """The ``state.json`` of a checkpoint folder (not verified; see :func:`verify_checkpoint`).

    Example:
        >>> import tempfile, mlx.nn as nn
        >>> folder = save_checkpoint(tempfile.mkdtemp() + "/c", nn.Linear(2, 2), state={"epoch": 3})
        >>> read_state(folder)["epoch"]
        3
    """
    file = Path(path) / STATE
    try:
        state = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{file}: unreadable training state ({err})") from None
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{file}: unknown checkpoint format {state.get('format')!r}")
    return state


def read_arrays(path: str | os.PathLike, name: str) -> dict | None:
    """A tree of arrays stored in a checkpoint folder (``optimizer``, ``ema``, ``arrays``), or None.

    Example:
        >>> import tempfile, mlx.nn as nn
        >>> folder = save_checkpoint(tempfile.mkdtemp() + "/c", nn.Linear(2, 2))
        >>> read_arrays(folder, "optimizer") is None
        True
    """
    files = {"optimizer": OPTIMIZER, "ema": EMA, "arrays": ARRAYS, "model": MODEL}
    if name not in files:
        raise ValueError(f"name: expected one of {', '.join(files)}, got {name!r}")
    file = Path(path) / files[name]
    if not file.exists():
        return None
    read_header(file)
    try:
        flat = mx.load(str(file))
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(f"{file}: could not read the arrays ({err})") from None
    return tree_unflatten(list(flat.items()))


def load_checkpoint_model(
    path: str | os.PathLike, *, ema: bool = False, model: nn.Module | None = None
) -> nn.Module:
    """The model of a checkpoint folder (its EMA weights with ``ema=True``), in eval mode.

    Example:
        >>> import tempfile
        >>> from mlxvision import create_model
        >>> m = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
        >>> folder = save_checkpoint(tempfile.mkdtemp() + "/c", m)
        >>> type(load_checkpoint_model(folder)).__name__
        'SimpleCNN'
    """
    path = Path(path)
    verify_checkpoint(path)
    model = load_model_file(path / MODEL, model=model)
    if ema:
        weights = read_arrays(path, "ema")
        if weights is None:
            raise CheckpointError(f"{path}: holds no EMA weights (trained without EMA)")
        check_weights(path / EMA, model, dict(tree_flatten(weights)))
        model.update(weights)
        mx.eval(model.parameters())
    return model
