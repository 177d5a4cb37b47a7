"""Loading PyTorch (torchvision, timm) weights into the zoo's models.

The zoo names its layers as torchvision does; our containers are ``nn.Sequential``, whose
children sit under ``layers``, so a parameter's torchvision name is ours with each ``layers``
segment dropped: ``features.layers.0.layers.1.weight`` ↔ ``features.0.1.weight``. Values change
layout only where MLX differs: convolution weights go from PyTorch's (O, I, kh, kw) to MLX's
(O, kh, kw, I), and size-1 axes are dropped where our parameter has none (ConvNeXt's layer
scale). BatchNorm's ``num_batches_tracked`` counters are ignored. No torch import is needed:
values may be NumPy arrays, MLX arrays or torch tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from .base import ImageClassifier
from .registry import create_model

IGNORED_SUFFIXES = ("num_batches_tracked",)


class ConversionError(ValueError):
    """A state dict does not fit the model; the message names every key that does not fit.

    Example:
        >>> import numpy as np
        >>> layer = nn.Sequential(nn.Linear(3, 2))
        >>> map_torch_state_dict(layer, {"0.weight": np.zeros((2, 4))})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mlxvision.models.convert.ConversionError: ... missing (1): 0.bias (2,); misshaped (1): ...
    """


def torch_name(name: str) -> str:
    """The PyTorch name of one of our parameters: ``nn.Sequential``'s ``layers`` dropped.

    Example:
        >>> torch_name("features.layers.0.layers.1.running_var")
        'features.0.1.running_var'
    """
    parts = name.split(".")
    kept = [
        part
        for i, part in enumerate(parts)
        if not (part == "layers" and i + 1 < len(parts) and parts[i + 1].isdigit())
    ]
    return ".".join(kept)


def map_torch_state_dict(model: nn.Module, state_dict: Mapping[str, Any]) -> dict[str, mx.array]:
    """``state_dict`` renamed and re-laid-out for ``model``: ``{our name: array}``, in the dtype
    of the model's parameters. Raises :class:`ConversionError` naming every missing,
    unexpected or misshaped key.

    Example:
        >>> import numpy as np
        >>> layer = nn.Sequential(nn.Conv2d(3, 4, 3))
        >>> weights = map_torch_state_dict(
        ...     layer, {"0.weight": np.zeros((4, 3, 3, 3)), "0.bias": np.zeros(4)}
        ... )
        >>> weights["layers.0.weight"].shape
        (4, 3, 3, 3)
    """
    ours = dict(tree_flatten(model.parameters()))
    by_torch_name = {torch_name(name): name for name in ours}
    if len(by_torch_name) != len(ours):
        raise ValueError(f"{type(model).__name__}: parameter names collide once mapped to torch's")
    source = _strip_prefix(state_dict)
    weights: dict[str, mx.array] = {}
    unexpected, misshaped = [], []
    for key, value in source.items():
        if key.rsplit(".", 1)[-1] in IGNORED_SUFFIXES:
            continue
        if key not in by_torch_name:
            unexpected.append(f"{key} {_shape(value)}")
            continue
        name = by_torch_name[key]
        target = ours[name]
        array = _to_numpy(value)
        if array.ndim == 4 and target.ndim == 4:
            array = array.transpose(0, 2, 3, 1)
        elif array.shape != target.shape and _squeezed(array.shape) == _squeezed(target.shape):
            array = array.reshape(target.shape)
        if array.shape != tuple(target.shape):
            misshaped.append(
                f"{key}: state dict has {_shape(value)}, model's {name} needs "
                f"{_torch_layout(target)}"
            )
            continue
        weights[name] = mx.array(array).astype(target.dtype)
    missing = [
        f"{key} {_torch_layout(ours[name])}"
        for key, name in by_torch_name.items()
        if key not in source
    ]
    if missing or unexpected or misshaped:
        problems = [
            f"{label} ({len(items)}): " + ", ".join(items)
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("misshaped", misshaped),
            )
            if items
        ]
        raise ConversionError(
            f"state dict does not fit {type(model).__name__} (shapes in PyTorch layout): "
            + "; ".join(problems)
        )
    return weights


def convert_torch_state_dict(
    name_or_model: str | nn.Module, state_dict: Mapping[str, Any], **create_kwargs: Any
) -> nn.Module:
    """A zoo model holding the weights of a PyTorch ``state_dict``, in eval mode.

    ``name_or_model`` is a registered name (built with ``create_kwargs``) or a model. With a
    name and no ``num_classes``, the class count is read from the state dict's classifier.

    Example:
        >>> import torchvision  # doctest: +SKIP
        >>> tv = torchvision.models.resnet18(weights="DEFAULT")  # doctest: +SKIP
        >>> model = convert_torch_state_dict("resnet18", tv.state_dict())  # doctest: +SKIP
        >>> import mlxvision  # doctest: +SKIP
        >>> mlxvision.save(model, "resnet18_imagenet")  # doctest: +SKIP
    """
    if isinstance(name_or_model, str):
        model = create_model(name_or_model, **create_kwargs)
        if "num_classes" not in create_kwargs and isinstance(model, ImageClassifier):
            _match_class_count(model, state_dict)
    elif create_kwargs:
        raise TypeError("convert_torch_state_dict: create_kwargs need a model name, not a model")
    else:
        model = name_or_model
    weights = map_torch_state_dict(model, state_dict)
    model.load_weights(list(weights.items()), strict=True)
    mx.eval(model.parameters())
    model.eval()
    return model


def _match_class_count(model: ImageClassifier, state_dict: Mapping[str, Any]) -> None:
    if not model.classifier_name:
        return
    key = torch_name(model.classifier_name) + ".weight"
    source = _strip_prefix(state_dict)
    if key in source:
        shape = _shape(source[key])
        if len(shape) == 2 and shape[0] != model.num_classes:
            model.reset_classifier(shape[0])


def _strip_prefix(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    """Keys saved from ``nn.DataParallel`` start with ``module.``; drop it."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return state_dict


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; bfloat16 has no NumPy dtype
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    if isinstance(value, mx.array) and value.dtype == mx.bfloat16:
        value = value.astype(mx.float32)
    return np.asarray(value)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in getattr(value, "shape", np.shape(value)))


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _torch_layout(param: mx.array) -> tuple[int, ...]:
    shape = tuple(param.shape)
    return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape
