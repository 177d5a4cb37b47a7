"""Models: the registry and the zoo.

Example:
    >>> from mlxvision.models import create_model, list_models
    >>> model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    >>> "simple_cnn" in list_models()
    True
"""

from . import cnn  # noqa: F401  (registers the models)
from .base import ImageClassifier, ModelSpec, count_parameters
from .cnn import SimpleCNN
from .registry import ModelCard, create_model, list_models, model_card, register_model

__all__ = [
    "ImageClassifier",
    "ModelCard",
    "ModelSpec",
    "SimpleCNN",
    "count_parameters",
    "create_model",
    "list_models",
    "model_card",
    "register_model",
]
