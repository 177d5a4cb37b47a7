"""Export a model's eval-mode forward pass to an ``.mlxfn`` file with ``mx.export_function``.

An ``.mlxfn`` file is loaded back with ``mx.import_function`` in Python, or with
``mlx::core::import_function`` in C++ (and from Swift through MLX's C API), with no Python
model code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .._files import atomic_path
from ..ops import fast_conv_disabled
from . import shapeless as shapeless_check

SUFFIX = ".mlxfn"


def export_mlxfn(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: Sequence[int],
    *,
    shapeless: bool = False,
    metadata: dict[str, Any] | None = None,
    dtype: mx.Dtype = mx.float32,
) -> Path:
    """Write ``model`` in eval mode as an ``.mlxfn`` function ``logits = f(images)``.

    ``input_shape`` is an example NHWC shape, for example ``(1, 32, 32, 3)``. With
    ``shapeless=True`` the function is meant to accept other batch sizes; the graph and the
    written file are checked on a batch of another size (see :mod:`.shapeless`), and the export
    is refused with a ``ValueError`` (nothing written) where MLX bakes the batch size into the
    graph: its pooling layers, ``nn.Linear`` with a bias and reshapes to fixed shapes do.
    ``metadata`` is stored as JSON inside the file. Returns the path written.

    Example:
        >>> import tempfile
        >>> from mlxvision import create_model
        >>> model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
        >>> path = export_mlxfn(model, tempfile.mkdtemp() + "/digits", (1, 8, 8, 1))
        >>> load_mlxfn(path)(mx.zeros((1, 8, 8, 1))).shape
        (1, 10)
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        path = path.with_name(path.name + SUFFIX)
    if len(input_shape) != 4:
        raise ValueError(f"input_shape: expected (N, H, W, C), got {tuple(input_shape)}")
    was_training = model.training
    model.eval()
    mx.eval(model.parameters())  # lazily initialised weights would be traced as random ops
    example = mx.zeros(tuple(int(s) for s in input_shape), dtype=dtype)

    def forward(images: mx.array) -> mx.array:
        with fast_conv_disabled():  # a portable file holds MLX's own primitives only
            return model(images)

    try:
        forward(example)  # fail here, with the model's own message, before writing anything
        if shapeless:
            shapeless_check.check_graph(type(model).__name__, forward, example)
        with atomic_path(path, suffix=SUFFIX) as tmp:
            mx.export_function(
                str(tmp),
                forward,
                example,
                shapeless=shapeless,
                metadata=json.dumps(metadata or {}),
            )
            if shapeless:
                other = mx.random.normal((example.shape[0] + 1, *example.shape[1:]))
                other = other.astype(example.dtype)
                shapeless_check.check_file(
                    type(model).__name__, tmp, other, model(other), rtol=1e-4, atol=1e-5
                )
    finally:
        model.train(was_training)
    return path


def load_mlxfn(path: str | os.PathLike) -> Callable[[mx.array], mx.array]:
    """Load an ``.mlxfn`` written by :func:`export_mlxfn` as ``logits = f(images)``.

    Example:
        >>> f = load_mlxfn("model.mlxfn")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such .mlxfn file")
    try:
        imported = mx.import_function(str(path))
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{path}: not a readable .mlxfn file ({err})") from None

    def forward(images: mx.array) -> mx.array:
        (logits,) = imported(images)
        return logits

    return forward


def read_mlxfn_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata dict stored by :func:`export_mlxfn` in an ``.mlxfn`` file.

    Example:
        >>> read_mlxfn_metadata("model.mlxfn")["classes"]  # doctest: +SKIP
        ['0', '1', ...]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such .mlxfn file")
    try:
        _, text = mx.import_function(str(path), return_metadata=True)
        return json.loads(text) if text else {}
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{path}: not a readable .mlxfn file ({err})") from None
