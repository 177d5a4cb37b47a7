"""One entry point to load any mlxvision checkpoint, and a summary of what one holds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlx.nn as nn

from .folder import MODEL, load_checkpoint_model, read_state, verify_checkpoint
from .manager import resolve_checkpoint
from .model_file import load as load_model_file
from .model_file import read_metadata
from .safetensors_check import CheckpointError, read_header


def load(
    path: str | os.PathLike, *, ema: bool = False, model: nn.Module | None = None
) -> nn.Module:
    """Load a model, in eval mode, from a ``.safetensors`` file, a checkpoint folder or a run
    folder (its newest checkpoint); ``ema=True`` takes the averaged weights.

    The model is rebuilt from the registry name and arguments stored with the weights; pass
    ``model`` to load into a model of your own instead.

    Example:
        >>> import tempfile
        >>> from mlxvision import create_model, save
        >>> m = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
        >>> type(load(save(m, tempfile.mkdtemp() + "/m"))).__name__
        'SimpleCNN'
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint (neither a file nor a folder)")
    if path.is_file():
        if ema:
            raise CheckpointError(f"{path}: a single model file holds no EMA weights")
        return load_model_file(path, model=model)
    return load_checkpoint_model(resolve_checkpoint(path), ema=ema, model=model)


def inspect(path: str | os.PathLike) -> dict[str, Any]:
    """What a checkpoint holds: model spec, files and tensors, training position and metrics.

    Example:
        >>> import tempfile
        >>> from mlxvision import create_model, save
        >>> m = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
        >>> inspect(save(m, tempfile.mkdtemp() + "/m"))["model"]["name"]
        'simple_cnn'
    """
    path = Path(path)
    if path.is_file():
        header = read_header(path)
        info = read_metadata(path)
        return {
            "path": str(path),
            "kind": "model file",
            "model": info.get("model"),
            "metadata": info.get("metadata"),
            "mlxvision_version": info.get("mlxvision_version"),
            "tensors": _tensors(header),
        }
    folder = resolve_checkpoint(path)
    manifest = verify_checkpoint(folder)
    state = read_state(folder)
    info = read_metadata(folder / MODEL)
    return {
        "path": str(folder),
        "kind": "checkpoint folder",
        "model": info.get("model"),
        "metadata": info.get("metadata"),
        "mlxvision_version": state.get("mlxvision_version"),
        "files": {name: entry["bytes"] for name, entry in manifest["files"].items()},
        "position": {k: state.get(k) for k in ("epoch", "batch", "global_step")},
        "metrics": state.get("metrics", {}),
        "tensors": _tensors(read_header(folder / MODEL)),
    }


def _tensors(header: dict) -> dict[str, str]:
    return {
        name: f"{entry['dtype']} {list(entry['shape'])}"
        for name, entry in header.items()
        if name != "__metadata__"
    }
