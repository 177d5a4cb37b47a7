"""One safetensors file holding a model: weights plus the spec that rebuilds it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .._files import atomic_path, save_safetensors
from .._version import __version__
from .safetensors_check import CheckpointError, read_header

FORMAT = "mlxvision.model/1"
SUFFIX = ".safetensors"


def model_path(path: str | os.PathLike) -> Path:
    """``path`` with the ``.safetensors`` suffix added where it is missing."""
    path = Path(path)
    return path if path.suffix == SUFFIX else path.with_name(path.name + SUFFIX)


def save(model: nn.Module, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Save a model's weights and spec to one safetensors file, atomically; return its path.

    Models made by :func:`mlxvision.create_model` carry their registry name and arguments, so
    :func:`load` can rebuild them with no user code. ``metadata`` (JSON-serialisable: class
    names, normalization, ...) travels in the file too. No pickle is involved.

    The file is written under a hidden temporary name beside ``path``, fsynced, then renamed: a
    file already at ``path`` stays whole until the new one is complete.

    Raises:
        OSError: writing failed (disk full, file too large, permission denied, ...): the
            subclass matching its ``errno``, a message naming ``path`` and the reason, the
            original error as ``__cause__``; a previous file at ``path`` is unchanged.

    Example:
        >>> import tempfile
        >>> from mlxvision import create_model
        >>> model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
        >>> save(model, tempfile.mkdtemp() + "/digits").name
        'digits.safetensors'
    """
    path = model_path(path)
    weights, header = _contents(model, metadata)
    with atomic_path(path) as tmp:
        save_safetensors(tmp, weights, metadata=header)
    return path


def write_model_file(
    model: nn.Module, path: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> None:
    """Write what :func:`save` writes, to a new file ``path``, not atomically (for a file
    inside a folder that is itself written atomically)."""
    weights, header = _contents(model, metadata)
    save_safetensors(path, weights, metadata=header)


def _contents(
    model: nn.Module, metadata: dict[str, Any] | None
) -> tuple[dict[str, mx.array], dict[str, str]]:
    spec = getattr(model, "spec", None)
    header = {
        "format": FORMAT,
        "mlxvision_version": __version__,
        "model": None if spec is None else {"name": spec.name, "kwargs": spec.kwargs},
        "metadata": metadata or {},
    }
    try:
        text = json.dumps(header)
    except TypeError as err:
        raise TypeError(f"save: metadata and model arguments must be JSON ({err})") from None
    return dict(tree_flatten(model.parameters())), {"mlxvision": text}


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """What :func:`save` stored beside the weights: ``format``, ``model`` spec, ``metadata``.

    Example:
        >>> import tempfile
        >>> from mlxvision import create_model
        >>> model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
        >>> read_metadata(save(model, tempfile.mkdtemp() + "/m", {"classes": ["a"]}))["metadata"]
        {'classes': ['a']}
    """
    path = Path(path)
    meta = read_header(path).get("__metadata__") or {}
    if "mlxvision" not in meta:
        return {"format": None, "model": None, "metadata": {}}
    try:
        info = json.loads(meta["mlxvision"])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: corrupt mlxvision metadata ({err})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {info.get('format')!r}")
    return info


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Load a model saved by :func:`save`, rebuilt from its spec, in eval mode.

    Give ``model`` to load the weights into a model of your own instead (for files without a
    spec). Shapes and names must match exactly; every mismatch is named in the error.

    Example:
        >>> import tempfile
        >>> from mlxvision import create_model
        >>> model = create_model("simple_cnn", in_channels=1, input_size=8)
        >>> path = save(model, tempfile.mkdtemp() + "/m")
        >>> type(load(path)).__name__
        'SimpleCNN'
    """
    path = Path(path)
    info = read_metadata(path)
    if model is None:
        if not info.get("model"):
            raise CheckpointError(
                f"{path}: holds weights only (no model spec); pass the model to load into: "
                "load(path, model=...)"
            )
        from ..models import create_model

        spec = info["model"]
        model = create_model(spec["name"], **spec["kwargs"])
    try:
        weights = mx.load(str(path))
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path}: could not read the weights ({err})") from None
    check_weights(path, model, weights)
    model.load_weights(list(weights.items()), strict=True)
    mx.eval(model.parameters())
    model.eval()
    return model


def check_weights(path: Path, model: nn.Module, weights: dict[str, mx.array]) -> None:
    expected = dict(tree_flatten(model.parameters()))
    problems = [f"missing {k} {tuple(v.shape)}" for k, v in expected.items() if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in expected]
    problems += [
        f"{k}: file has shape {tuple(weights[k].shape)}, model expects {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if problems:
        raise CheckpointError(
            f"{path}: weights do not fit {type(model).__name__}: " + "; ".join(problems)
        )
