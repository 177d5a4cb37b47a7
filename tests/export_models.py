"""Small models shared by the export tests."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class MixedNet(nn.Module):
    """Only mlx.nn: residual, concatenation, BatchNorm, pools (2×2 and 3×3/2 padded), GELU,
    LayerNorm, global average pooling and a Linear head."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pool = nn.MaxPool2d(2, 2)
        self.overlap_pool = nn.MaxPool2d(3, 2, padding=1)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, num_classes)

    def __call__(self, x: mx.array) -> mx.array:
        x = nn.gelu(self.bn1(self.stem(x)))
        x = nn.relu(x + self.bn2(self.conv2(x)))
        x = mx.concatenate([self.pool(x), self.pool(self.depthwise(x))], axis=-1)
        x = self.overlap_pool(x)
        x = x.mean(axis=(1, 2))
        return self.head(self.norm(x))


def mixed_net(seed: int = 0) -> MixedNet:
    """A MixedNet in eval mode with non-trivial BatchNorm statistics."""
    mx.random.seed(seed)
    model = MixedNet()
    for bn in (model.bn1, model.bn2):
        bn.running_mean = mx.random.normal((8,))
        bn.running_var = mx.random.uniform(0.5, 2.0, (8,))
        bn.weight = mx.random.uniform(0.5, 1.5, (8,))
        bn.bias = mx.random.normal((8,))
    model.depthwise.bias = mx.random.normal((8,))
    mx.eval(model.parameters())
    return model.eval()


class Sorter(nn.Module):
    """Uses mx.sort inside a submodule: no exporter supports it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.block = SortBlock()

    def __call__(self, x: mx.array) -> mx.array:
        return self.block(self.conv(x)).mean(axis=(1, 2))


class SortBlock(nn.Module):
    def __call__(self, x: mx.array) -> mx.array:
        return mx.sort(x, axis=-1)
