"""What every mlxvision model shares: input checks and the spec it was built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten


@dataclass(frozen=True)
class ModelSpec:
    """Registry name and keyword arguments: ``create_model(name, **kwargs)`` rebuilds the model.

    :func:`~mlxvision.models.create_model` sets it as ``model.spec``; checkpoints store it, so
    :func:`mlxvision.load` rebuilds the model with no user code.

    Example:
        >>> from mlxvision.models import create_model
        >>> model = create_model("simple_cnn", num_classes=3, in_channels=1, input_size=8)
        >>> model.spec
        ModelSpec(name='simple_cnn', kwargs={'num_classes': 3, 'in_channels': 1, 'input_size': 8})
        >>> create_model(model.spec.name, **model.spec.kwargs).num_classes
        3
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


class ImageClassifier(nn.Module):
    """Base class of the zoo: NHWC images in, ``num_classes`` logits out.

    Subclasses call :meth:`check_input` first in ``__call__`` so a wrong input fails with a
    message that names the expected and received shapes, before any layer runs.

    Subclasses name their final ``nn.Linear`` in ``classifier_name`` (a dotted path as in
    ``tree_flatten(model.parameters())``, e.g. ``"fc"`` or ``"classifier.layers.6"``); the
    fine-tuning helpers :meth:`get_classifier`, :meth:`reset_classifier`,
    :meth:`freeze_backbone`, :meth:`classifier_parameters` and :meth:`is_classifier_parameter`
    build on it.

    Example:
        >>> class Tiny(ImageClassifier):
        ...     classifier_name = "fc"
        ...
        ...     def __init__(self, num_classes=10, in_channels=3):
        ...         super().__init__(num_classes, in_channels)
        ...         self.fc = nn.Linear(in_channels, num_classes)
        ...
        ...     def __call__(self, x):
        ...         self.check_input(x)
        ...         return self.fc(x.mean(axis=(1, 2)))
        >>> model = Tiny(num_classes=4)
        >>> model(mx.zeros((2, 8, 8, 3))).shape
        (2, 4)
        >>> model(mx.zeros((2, 8, 8, 1)))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Tiny: expected images of shape (N, H, W, 3) (NHWC, 3 channels), received ...
        >>> model.reset_classifier(2).num_classes
        2
    """

    classifier_name: str | None = None

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes}")
        if in_channels < 1:
            raise ValueError(f"in_channels: expected a positive int, got {in_channels}")
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)

    def check_input(self, x: mx.array) -> None:
        """Raise a clear error unless ``x`` is a float NHWC batch with ``in_channels`` channels."""
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

    def get_classifier(self) -> nn.Module:
        """The final layer that maps features to logits.

        Example:
            >>> from mlxvision.models import create_model
            >>> type(create_model("resnet20").get_classifier()).__name__
            'Linear'
        """
        parent, key = self._classifier_slot()
        return parent[key]

    def reset_classifier(self, num_classes: int) -> ImageClassifier:
        """Replace the classifier by a new, freshly initialised one with ``num_classes`` outputs.

        The model's ``spec`` (when made by ``create_model``) is updated too, so a saved
        checkpoint rebuilds the new head. Returns the model.

        Example:
            >>> from mlxvision.models import create_model
            >>> model = create_model("resnet20", num_classes=10).reset_classifier(3)
            >>> model.num_classes, model.spec.kwargs["num_classes"]
            (3, 3)
        """
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        parent, key = self._classifier_slot()
        old = parent[key]
        if not isinstance(old, nn.Linear):
            raise TypeError(
                f"{type(self).__name__}.reset_classifier: expected {self.classifier_name!r} to "
                f"be an nn.Linear, found {type(old).__name__}"
            )
        head = nn.Linear(old.weight.shape[1], num_classes, bias="bias" in old)
        head.set_dtype(old.weight.dtype)
        parent[key] = head
        self.num_classes = num_classes
        spec = getattr(self, "spec", None)
        if isinstance(spec, ModelSpec):
            self.spec = ModelSpec(spec.name, {**spec.kwargs, "num_classes": num_classes})
        return self

    def freeze_backbone(self) -> ImageClassifier:
        """Freeze every parameter except the classifier's (undo with ``unfreeze()``).

        BatchNorm running statistics still update in training mode; call ``eval()`` on the
        backbone's modules too if they should stay fixed. Returns the model.

        Example:
            >>> from mlxvision.models import create_model
            >>> model = create_model("resnet20", num_classes=10).freeze_backbone()
            >>> count_parameters(model, trainable_only=True)
            650
        """
        self.freeze()
        self.get_classifier().unfreeze()
        return self

    def classifier_parameters(self) -> dict:
        """The classifier's parameters, as a nested dict (like ``parameters()``)."""
        return self.get_classifier().parameters()

    def is_classifier_parameter(self, path: str, value: Any = None) -> bool:
        """Whether the parameter at dotted ``path`` belongs to the classifier.

        Its signature fits ``mlx.optimizers.MultiOptimizer`` filters, for a separate learning
        rate on the head.

        Example:
            >>> import mlx.optimizers as optim
            >>> from mlxvision.models import create_model
            >>> model = create_model("resnet20")
            >>> opt = optim.MultiOptimizer(
            ...     [optim.SGD(learning_rate=0.1), optim.SGD(learning_rate=0.001)],
            ...     [model.is_classifier_parameter],
            ... )
            >>> [model.is_classifier_parameter(p) for p in ("linear.weight", "conv1.weight")]
            [True, False]
        """
        prefix = self._checked_classifier_name()
        return path == prefix or path.startswith(prefix + ".")

    def _checked_classifier_name(self) -> str:
        if not self.classifier_name:
            raise NotImplementedError(
                f"{type(self).__name__} does not name its classifier: set the class attribute "
                "classifier_name to the dotted path of its final nn.Linear"
            )
        return self.classifier_name

    def _classifier_slot(self) -> tuple[Any, Any]:
        parts: list[Any] = [
            int(p) if p.isdigit() else p for p in self._checked_classifier_name().split(".")
        ]
        parent: Any = self
        for part in parts[:-1]:
            parent = parent[part]
        return parent, parts[-1]


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
