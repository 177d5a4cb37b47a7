"""A registry of model builders by name, as in timm: ``create_model`` / ``list_models``."""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import mlx.nn as nn

from ..ops import use_fast_layers
from .base import ModelSpec


@dataclass(frozen=True)
class ModelCard:
    """What the registry knows about a model: builder, default input size, paper, and the
    parameters and multiply-adds of the default model (``num_classes`` and ``in_channels`` at
    the builder's defaults) at its default input size, counted on first use.

    Example:
        >>> card = model_card("resnet20")
        >>> card.params, card.macs, card.input_size
        (269722, 40551040, (32, 32))
        >>> str(card).splitlines()[0]
        'resnet20: 0.27 M parameters, 40.6 M multiply-adds at 32×32'
    """

    name: str
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int]
    paper: str
    description: str

    @cached_property
    def params(self) -> int:
        """Parameter count of the default model (BatchNorm running statistics excluded)."""
        from .base import count_parameters

        return count_parameters(self.builder())

    @cached_property
    def macs(self) -> int:
        """Multiply-adds of one image at ``input_size`` through the default model."""
        from .complexity import count_multiply_adds

        model = self.builder()
        channels = getattr(model, "in_channels", 3)
        return count_multiply_adds(model, (1, *self.input_size, channels))

    def __str__(self) -> str:
        height, width = self.input_size
        text = (
            f"{self.name}: {self.params / 1e6:.2f} M parameters, {self.macs / 1e6:.1f} M "
            f"multiply-adds at {height}×{width}"
        )
        return text + "".join(f"\n  {line}" for line in (self.description, self.paper) if line)


_REGISTRY: dict[str, ModelCard] = {}


def register_model(
    name: str | None = None, *, input_size: tuple[int, int] = (32, 32), paper: str = ""
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model builder under ``name`` (default: the builder's ``__name__``).

    Example:
        >>> @register_model("tiny_linear_example", input_size=(8, 8))
        ... def tiny_linear_example(num_classes=10, in_channels=1):
        ...     return nn.Linear(in_channels, num_classes)
        >>> "tiny_linear_example" in list_models()
        True
        >>> unregister_model("tiny_linear_example")
    """

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or builder.__name__
        if key in _REGISTRY and _REGISTRY[key].builder is not builder:
            raise ValueError(f"register_model: a model named {key!r} is already registered")
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[key] = ModelCard(key, builder, tuple(input_size), paper, doc[0] if doc else "")
        return builder

    return add


def unregister_model(name: str) -> None:
    """Remove a model from the registry (for example one registered by a test).

    Example:
        >>> unregister_model("no_such_model")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Unknown model 'no_such_model'...
    """
    model_card(name)
    del _REGISTRY[name]


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching a shell-style ``pattern``.

    Example:
        >>> "simple_cnn" in list_models("simple*")
        True
    """
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def model_card(name: str) -> ModelCard:
    """The :class:`ModelCard` of a registered model.

    Example:
        >>> card = model_card("simple_cnn")
        >>> card.name, card.input_size
        ('simple_cnn', (32, 32))
        >>> model_card("resnet2")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Unknown model 'resnet2'. Did you mean ...? Known models: ...
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} Known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(
    name: str, pretrained: str | os.PathLike | None = None, **kwargs: Any
) -> nn.Module:
    """Build a registered model; the model remembers ``name`` and ``kwargs`` as ``model.spec``.

    ``pretrained`` is a safetensors file of weights in mlxvision's layout (written by
    :func:`mlxvision.save`, or by ``mx.save_safetensors(path, dict(tree_flatten(
    model.parameters())))``); the weights must fit exactly and the model is returned in eval
    mode. Convert torchvision weights with :func:`mlxvision.models.convert_torch_state_dict`.
    Convolutions choose the fastest implementation for their shape and device
    (:mod:`mlxvision.ops`; ``MLXVISION_FAST_CONV=0`` keeps MLX's own everywhere).

    Example:
        >>> model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
        >>> model.spec.name, model.num_classes
        ('simple_cnn', 10)
    """
    card = model_card(name)
    model = use_fast_layers(card.builder(**kwargs))
    model.spec = ModelSpec(name, dict(kwargs))
    if pretrained is not None:
        from ..checkpoint import load

        model = load(pretrained, model=model)
    return model
