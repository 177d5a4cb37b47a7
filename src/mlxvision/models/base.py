"""What every mlxvision model shares: input checks and the spec it was built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten


@dataclass(frozen=True)
class ModelSpec:
    """Registry name and keyword arguments: ``create_model(name, **kwargs)`` rebuilds the model."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


class ImageClassifier(nn.Module):
    """Base class of the zoo: NHWC images in, ``num_classes`` logits out.

    Subclasses call :meth:`check_input` first in ``__call__`` so a wrong input fails with a
    message that names the expected and received shapes, before any layer runs.
    """

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes}")
        if in_channels < 1:
            raise ValueError(f"in_channels: expected a positive int, got {in_channels}")
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)

    def check_input(self, x: mx.array) -> None:
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: expected images of shape (N, H, W, {self.in_channels}) "
                f"(NHWC, {self.in_channels} channels), received shape {tuple(x.shape)}"
            )
        if not mx.issubdtype(x.dtype, mx.floating):
            raise TypeError(
                f"{type(self).__name__}: expected float images, received {x.dtype}; convert "
                "integer images with mlxvision.data.transforms.ToTensor()"
            )


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalars in the model's parameters (BatchNorm running statistics excluded).

    Example:
        >>> import mlx.nn as nn
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    params = model.trainable_parameters() if trainable_only else model.parameters()
    stats = {"running_mean", "running_var"}
    return sum(v.size for k, v in tree_flatten(params) if k.rsplit(".", 1)[-1] not in stats)
