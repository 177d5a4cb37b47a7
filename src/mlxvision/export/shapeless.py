"""Checks that a shapeless ``.mlxfn`` export really accepts other batch sizes.

``mx.export_function(..., shapeless=True)`` records the graph once and lets MLX infer every
shape again when the function is called with another batch size. Where a primitive keeps a
shape recorded at export time, MLX raises an error at best and at worst reads and writes past
its buffers (MLX 0.32: ``nn.Linear`` with a bias broadcasts the bias to a fixed ``(N, out)``;
a reduction over axes that all have size 1, as a global pool of a 1×1 feature map, corrupts
memory). So the graph is first read for these patterns, without running anything, and the
written file is then run on another batch size in a child process, where a crash refuses the
export instead of ending the caller's process.

Example:
    >>> import mlx.nn as nn
    >>> check_graph("Linear", nn.Linear(4, 2, bias=False), mx.zeros((1, 4)))
    >>> check_graph("Linear", nn.Linear(4, 2), mx.zeros((1, 4)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: shapeless export of Linear does not work: it broadcasts to the fixed shape ...
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

_CHILD = """\
import sys
import numpy as np
import mlx.core as mx
(out,) = mx.import_function(sys.argv[1])(mx.array(np.load(sys.argv[2])))
np.save(sys.argv[3], np.array(out.astype(mx.float32)))
"""
CHILD_TIMEOUT_S = 600


def _refuse(name: str, reason: str) -> ValueError:
    return ValueError(
        f"shapeless export of {name} does not work: {reason}; export with a fixed input_shape "
        "instead"
    )


def _primitives(fn: Callable[[mx.array], mx.array], example: mx.array) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    mx.export_function(events.append, fn, example, shapeless=True)
    return [e for e in events if e["type"] == "primitive"]


def check_graph(name: str, fn: Callable[[mx.array], mx.array], example: mx.array) -> None:
    """Raise ``ValueError`` if the shapeless graph of ``fn`` holds a batch-dependent shape.

    The graph is traced at the example's batch size and at one more; they must consist of the
    same primitives, and no single-input broadcast may change its target shape between them.
    """
    other = mx.zeros((example.shape[0] + 1, *example.shape[1:]), dtype=example.dtype)
    try:
        first, second = _primitives(fn, example), _primitives(fn, other)
    except (RuntimeError, ValueError) as err:
        raise _refuse(
            name, f"it cannot be traced for a batch of {other.shape[0]} ({err})"
        ) from None
    if [e["name"] for e in first] != [e["name"] for e in second]:
        raise _refuse(name, "its graph changes with the batch size")
    for a, b in zip(first, second, strict=True):
        if a["name"] == "Reduce":
            shape, axes = tuple(a["inputs"][0][1]), list(a["arguments"][1])
            if axes and all(shape[axis] == 1 for axis in axes):
                raise _refuse(
                    name,
                    f"it reduces an array of shape {shape} over axes {axes}, all of size 1 (a "
                    "pool of a 1×1 feature map), which MLX cannot evaluate in a shapeless "
                    "function (export larger images, or a fixed batch size)",
                )
        elif (
            a["name"] == "Broadcast" and len(a["inputs"]) == 1 and a["arguments"] != b["arguments"]
        ):
            raise _refuse(
                name,
                f"it broadcasts to the fixed shape {tuple(a['outputs'][0][1])}, which holds the "
                "batch size (MLX's nn.Linear with a bias does, and so does broadcast_to with a "
                "shape read from the input)",
            )


def check_file(
    name: str, path: Path, images: mx.array, expected: mx.array, rtol: float, atol: float
) -> None:
    """Run the ``.mlxfn`` at ``path`` on ``images`` in a child process; raise ``ValueError``
    unless it returns ``expected`` (within ``rtol``, ``atol``)."""
    batch = images.shape[0]
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "images.npy", Path(tmp) / "logits.npy"
        np.save(inputs, np.array(images.astype(mx.float32)))
        try:
            run = subprocess.run(
                [sys.executable, "-c", _CHILD, os.fspath(path), str(inputs), str(outputs)],
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT_S,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise _refuse(name, f"it could not be run for a batch of {batch} ({err})") from None
        if run.returncode != 0:
            lines = run.stderr.strip().splitlines()
            detail = lines[-1] if lines else f"the process ended with status {run.returncode}"
            if run.returncode < 0:
                detail = f"MLX crashed running it: {detail}"
            raise _refuse(name, f"it fails for a batch of {batch} ({detail})")
        got = np.load(outputs)
    reference = np.array(expected.astype(mx.float32))
    if got.shape != reference.shape or not np.allclose(got, reference, rtol=rtol, atol=atol):
        raise _refuse(name, f"for a batch of {batch} its outputs differ from the model's")
