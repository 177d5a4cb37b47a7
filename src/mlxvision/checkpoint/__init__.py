"""Checkpoints: a model in one safetensors file, written atomically, loaded with checks.

Example:
    >>> from mlxvision.checkpoint import save, load, read_metadata, CheckpointError
"""

from .model_file import load, read_metadata, save
from .safetensors_check import CheckpointError, read_header

__all__ = ["CheckpointError", "load", "read_header", "read_metadata", "save"]
