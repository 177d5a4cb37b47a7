"""Checkpoints: a model in one safetensors file, or a whole training state in a folder.

Both are written atomically and checked before loading; no pickle anywhere.

Example:
    >>> from mlxvision.checkpoint import save, load, save_checkpoint, CheckpointManager
"""

from .folder import (
    is_checkpoint,
    load_checkpoint_model,
    read_arrays,
    read_state,
    save_checkpoint,
    verify_checkpoint,
)
from .loading import inspect, load
from .manager import CheckpointManager, resolve_checkpoint
from .model_file import load as load_model_file
from .model_file import read_metadata, save
from .safetensors_check import CheckpointError, read_header

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "inspect",
    "is_checkpoint",
    "load",
    "load_checkpoint_model",
    "load_model_file",
    "read_arrays",
    "read_header",
    "read_metadata",
    "read_state",
    "resolve_checkpoint",
    "save",
    "save_checkpoint",
    "verify_checkpoint",
]
