"""The small CNN of the classic CIFAR-10 tutorial."""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn

from .base import ImageClassifier
from .registry import register_model


class SimpleCNN(ImageClassifier):
    """conv3×3(64) → ReLU → max-pool → conv3×3(128) → ReLU → max-pool → fc(1024) → ReLU → fc.

    ``input_size`` (an int or ``(height, width)``, each divisible by 4) sets the size of the first
    fully connected layer: ``128 · H/4 · W/4`` inputs.

    Example:
        >>> import mlx.core as mx
        >>> SimpleCNN(num_classes=10, in_channels=3, input_size=32)(mx.zeros((2, 32, 32, 3))).shape
        (2, 10)
    """

    classifier_name = "fc2"

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int | Sequence[int] = 32,
        hidden: int = 1024,
    ) -> None:
        super().__init__(num_classes, in_channels)
        height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
        if height % 4 or width % 4:
            raise ValueError(
                f"SimpleCNN: input_size must be divisible by 4 (two 2×2 pools), got {input_size}"
            )
        self.input_height, self.input_width = int(height), int(width)
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(64, 128, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.fc1 = nn.Linear(128 * (height // 4) * (width // 4), hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def __call__(self, x: mx.array) -> mx.array:
        self.check_input(x)
        if tuple(x.shape[1:3]) != (self.input_height, self.input_width):
            raise ValueError(
                f"SimpleCNN: built for images of {self.input_height}×{self.input_width} "
                f"(input_size), received shape {tuple(x.shape)}"
            )
        # max-pooling commutes with ReLU (both are monotone), so ReLU runs on a quarter of the
        # values; outputs and gradients are those of the tutorial's relu-then-pool
        x = nn.relu(self.pool(self.conv1(x)))
        x = nn.relu(self.pool(self.conv2(x)))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(self.fc1(x))
        return self.fc2(x)


@register_model(input_size=(32, 32), paper="PyTorch CIFAR-10 tutorial CNN")
def simple_cnn(
    num_classes: int = 10, in_channels: int = 3, input_size: int | Sequence[int] = 32
) -> SimpleCNN:
    """The tutorial's CNN: two 3×3 conv layers with max-pooling and two fully connected layers."""
    return SimpleCNN(num_classes=num_classes, in_channels=in_channels, input_size=input_size)
