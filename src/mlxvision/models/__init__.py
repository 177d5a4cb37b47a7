"""Models: the registry and the zoo.

Every model takes NHWC float images and the keyword arguments ``num_classes`` and
``in_channels``. ``model_card(name)`` gives a model's parameters, multiply-adds at its default
input size, that size and its paper.

Example:
    >>> from mlxvision.models import create_model, list_models
    >>> model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    >>> "simple_cnn" in list_models()
    True
    >>> list_models("resnet1*")
    ['resnet101', 'resnet110', 'resnet152', 'resnet18']
"""

from . import cnn, convnext, efficientnet, fastnet, mobilenet, resnet, vgg, vit  # noqa: F401
from .base import ImageClassifier, ModelSpec, count_parameters
from .cnn import SimpleCNN
from .complexity import count_multiply_adds
from .convert import ConversionError, convert_torch_state_dict, map_torch_state_dict, torch_name
from .convnext import ConvNeXt
from .efficientnet import EfficientNet
from .fastnet import FastNet
from .mobilenet import MobileNetV2, MobileNetV3
from .registry import (
    ModelCard,
    create_model,
    list_models,
    model_card,
    register_model,
    unregister_model,
)
from .resnet import CifarResNet, PreActResNet, ResNet
from .vgg import VGG
from .vit import VisionTransformer

__all__ = [
    "VGG",
    "CifarResNet",
    "ConversionError",
    "ConvNeXt",
    "EfficientNet",
    "FastNet",
    "ImageClassifier",
    "MobileNetV2",
    "MobileNetV3",
    "ModelCard",
    "ModelSpec",
    "PreActResNet",
    "ResNet",
    "SimpleCNN",
    "VisionTransformer",
    "convert_torch_state_dict",
    "count_multiply_adds",
    "count_parameters",
    "create_model",
    "list_models",
    "map_torch_state_dict",
    "model_card",
    "register_model",
    "unregister_model",
    "torch_name",
]
