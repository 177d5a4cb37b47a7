"""mlxvision: image classification on Apple MLX, from data to Core ML.

Example:
    >>> import mlxvision as mv
    >>> model = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    >>> model.num_classes
    10
"""

from .backend import import_mlx, info

import_mlx()

from . import checkpoint, data, engine, export, models  # noqa: E402
from ._version import __version__  # noqa: E402
from .checkpoint import load, save  # noqa: E402
from .engine import Trainer  # noqa: E402
from .models import create_model, list_models  # noqa: E402

__all__ = [
    "Trainer",
    "__version__",
    "checkpoint",
    "create_model",
    "data",
    "engine",
    "export",
    "info",
    "list_models",
    "load",
    "models",
    "save",
]
