"""ResNets: the CIFAR ResNets of He et al. (2016), torchvision's ImageNet ResNets, a
pre-activation ResNet-18 and Wide ResNet-28-10.

Parameter names follow torchvision (ImageNet ResNets) and the common CIFAR implementations, so
their PyTorch weights convert with :func:`mlxvision.models.convert_torch_state_dict`.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn

from ..ops.norm import norm_relu
from .base import ImageClassifier
from .layers import global_avg_pool, init_kaiming
from .registry import register_model

RESNET_PAPER = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016"


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


# --- CIFAR ResNets (He et al. 2016, section 4.2) -------------------------------------------


class PadShortcut(nn.Module):
    """Option A shortcut: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels

    def __call__(self, x: mx.array) -> mx.array:
        pad = self.extra_channels // 2
        return mx.pad(x[:, ::2, ::2, :], [(0, 0), (0, 0), (0, 0), (pad, pad)])


class CifarBasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity or option-A (zero-padding) shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm(channels)
        needs_shortcut = stride != 1 or in_channels != channels
        self.shortcut = PadShortcut(channels - in_channels) if needs_shortcut else None

    def __call__(self, x: mx.array) -> mx.array:
        out = norm_relu(self.bn1, self.conv1(x), self.relu)
        identity = x if self.shortcut is None else self.shortcut(x)
        return norm_relu(self.bn2, self.conv2(out), self.relu, residual=identity)


class CifarResNet(ImageClassifier):
    """The 6n+2-layer CIFAR ResNet: 3×3 conv(16), three stages of ``n`` basic blocks with 16, 32
    and 64 channels (stride 2 at stages 2 and 3, option-A shortcuts), global average pool, linear.

    Example:
        >>> CifarResNet(depth=20)(mx.zeros((1, 32, 32, 3))).shape
        (1, 10)
    """

    classifier_name = "linear"

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__(num_classes, in_channels)
        self.relu = nn.ReLU()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CifarResNet: depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = _conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm(16)
        self.layer1 = self._stage(16, 16, blocks, 1)
        self.layer2 = self._stage(16, 32, blocks, 2)
        self.layer3 = self._stage(32, 64, blocks, 2)
        self.linear = nn.Linear(64, num_classes)
        init_kaiming(self)

    @staticmethod
    def _stage(in_channels: int, channels: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [CifarBasicBlock(in_channels, channels, stride)]
        layers += [CifarBasicBlock(channels, channels) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def __call__(self, x: mx.array) -> mx.array:
        self.check_input(x)
        x = norm_relu(self.bn1, self.conv1(x), self.relu)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(global_avg_pool(x))


def _cifar_builder(depth: int):
    def build(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
        return CifarResNet(depth, num_classes=num_classes, in_channels=in_channels)

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"CIFAR ResNet-{depth} (3 stages of {(depth - 2) // 6} basic blocks)."
    return register_model(input_size=(32, 32), paper=RESNET_PAPER)(build)


resnet20 = _cifar_builder(20)
resnet32 = _cifar_builder(32)
resnet44 = _cifar_builder(44)
resnet56 = _cifar_builder(56)
resnet110 = _cifar_builder(110)


# --- torchvision ResNets --------------------------------------------------------------------


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: two 3×3 conv-BN layers, 1×1 conv-BN downsample."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm(channels)
        self.downsample = _downsample(in_channels, channels * self.expansion, stride)

    def last_norm(self) -> nn.BatchNorm:
        return self.bn2

    def __call__(self, x: mx.array) -> mx.array:
        out = norm_relu(self.bn1, self.conv1(x), self.relu)
        identity = x if self.downsample is None else self.downsample(x)
        return norm_relu(self.bn2, self.conv2(out), self.relu, residual=identity)


class Bottleneck(nn.Module):
    """torchvision's bottleneck (ResNet v1.5: the stride is on the 3×3 convolution)."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = _conv1x1(in_channels, channels)
        self.bn1 = nn.BatchNorm(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn2 = nn.BatchNorm(channels)
        self.conv3 = _conv1x1(channels, channels * self.expansion)
        self.bn3 = nn.BatchNorm(channels * self.expansion)
        self.downsample = _downsample(in_channels, channels * self.expansion, stride)

    def last_norm(self) -> nn.BatchNorm:
        return self.bn3

    def __call__(self, x: mx.array) -> mx.array:
        out = norm_relu(self.bn1, self.conv1(x), self.relu)
        out = norm_relu(self.bn2, self.conv2(out), self.relu)
        identity = x if self.downsample is None else self.downsample(x)
        return norm_relu(self.bn3, self.conv3(out), self.relu, residual=identity)


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(_conv1x1(in_channels, out_channels, stride), nn.BatchNorm(out_channels))


class ResNet(ImageClassifier):
    """torchvision's ResNet: 7×7/2 conv stem and 3×3/2 max-pool, four stages, average pool, fc.

    ``cifar_stem=True`` replaces the stem by a 3×3 stride-1 convolution without max-pool, the
    usual choice for 32×32 images.

    Example:
        >>> model = ResNet(BasicBlock, (2, 2, 2, 2), num_classes=10, cifar_stem=True)
        >>> model(mx.zeros((1, 32, 32, 3))).shape
        (1, 10)
    """

    classifier_name = "fc"

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        cifar_stem: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__(num_classes, in_channels)
        self.relu = nn.ReLU()
        self.cifar_stem = cifar_stem
        if cifar_stem:
            self.conv1 = _conv3x3(in_channels, 64)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm(64)
        channels_in = 64
        for index, (channels, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if index == 0 else 2
            stage = [block(channels_in, channels, stride)]
            channels_in = channels * block.expansion
            stage += [block(channels_in, channels) for _ in range(blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        init_kaiming(self)
        if zero_init_residual:
            for _, module in self.named_modules():
                if isinstance(module, BasicBlock | Bottleneck):
                    module.last_norm().weight = mx.zeros_like(module.last_norm().weight)

    def __call__(self, x: mx.array) -> mx.array:
        self.check_input(x)
        x = norm_relu(self.bn1, self.conv1(x), self.relu)
        if not self.cifar_stem:
            x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(global_avg_pool(x))


def _torchvision_builder(name: str, block: type, layers: tuple[int, ...]):
    def build(
        num_classes: int = 1000,
        in_channels: int = 3,
        cifar_stem: bool = False,
        zero_init_residual: bool = False,
    ) -> ResNet:
        return ResNet(block, layers, num_classes, in_channels, cifar_stem, zero_init_residual)

    build.__name__ = name
    build.__doc__ = (
        f"torchvision's {name} ({block.__name__} blocks {layers}); cifar_stem=True for 32×32."
    )
    return register_model(input_size=(224, 224), paper=RESNET_PAPER)(build)


resnet18 = _torchvision_builder("resnet18", BasicBlock, (2, 2, 2, 2))
resnet34 = _torchvision_builder("resnet34", BasicBlock, (3, 4, 6, 3))
resnet50 = _torchvision_builder("resnet50", Bottleneck, (3, 4, 6, 3))
resnet101 = _torchvision_builder("resnet101", Bottleneck, (3, 4, 23, 3))
resnet152 = _torchvision_builder("resnet152", Bottleneck, (3, 8, 36, 3))


# --- pre-activation and wide ResNets ----------------------------------------------------------


class PreActBlock(nn.Module):
    """BN-ReLU-conv3×3 twice; the shortcut (a 1×1 conv where the shape changes) takes the
    pre-activated input, as in He et al., "Identity Mappings in Deep Residual Networks"."""

    def __init__(
        self, in_channels: int, channels: int, stride: int = 1, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.bn1 = nn.BatchNorm(in_channels)
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn2 = nn.BatchNorm(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else None
        needs_shortcut = stride != 1 or in_channels != channels
        self.shortcut = _conv1x1(in_channels, channels, stride) if needs_shortcut else None

    def __call__(self, x: mx.array) -> mx.array:
        out = norm_relu(self.bn1, x, self.relu)
        identity = x if self.shortcut is None else self.shortcut(out)
        out = norm_relu(self.bn2, self.conv1(out), self.relu)
        if self.dropout is not None:
            out = self.dropout(out)
        return self.conv2(out) + identity


class PreActResNet(ImageClassifier):
    """Pre-activation ResNet for small images: 3×3 conv stem, stages of :class:`PreActBlock`,
    final BN-ReLU, global average pool, linear. Also the Wide ResNet of Zagoruyko & Komodakis.

    Example:
        >>> model = PreActResNet((1, 1, 1), widths=(8, 16, 32), stem_channels=8)
        >>> model(mx.zeros((1, 16, 16, 3))).shape
        (1, 10)
    """

    classifier_name = "linear"

    def __init__(
        self,
        blocks: Sequence[int],
        widths: Sequence[int],
        stem_channels: int,
        num_classes: int = 10,
        in_channels: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__(num_classes, in_channels)
        self.relu = nn.ReLU()
        if len(blocks) != len(widths):
            raise ValueError(f"PreActResNet: {len(blocks)} stage depths for {len(widths)} widths")
        self.conv1 = _conv3x3(in_channels, stem_channels)
        channels_in = stem_channels
        for index, (count, width) in enumerate(zip(blocks, widths, strict=True)):
            stride = 1 if index == 0 else 2
            stage = [PreActBlock(channels_in, width, stride, drop_rate)]
            stage += [PreActBlock(width, width, 1, drop_rate) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
            channels_in = width
        self.num_stages = len(blocks)
        self.bn = nn.BatchNorm(channels_in)
        self.linear = nn.Linear(channels_in, num_classes)
        init_kaiming(self)

    def __call__(self, x: mx.array) -> mx.array:
        self.check_input(x)
        x = self.conv1(x)
        for index in range(self.num_stages):
            x = getattr(self, f"layer{index + 1}")(x)
        return self.linear(global_avg_pool(norm_relu(self.bn, x, self.relu)))


@register_model(
    input_size=(32, 32),
    paper="He et al., Identity Mappings in Deep Residual Networks, ECCV 2016",
)
def preact_resnet18(num_classes: int = 10, in_channels: int = 3) -> PreActResNet:
    """Pre-activation ResNet-18 for 32×32 images (3×3 stem, stages of 64-128-256-512)."""
    return PreActResNet((2, 2, 2, 2), (64, 128, 256, 512), 64, num_classes, in_channels)


@register_model(
    input_size=(32, 32), paper="Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016"
)
def wide_resnet28_10(
    num_classes: int = 10, in_channels: int = 3, drop_rate: float = 0.0
) -> PreActResNet:
    """Wide ResNet-28-10: 3 stages of 4 pre-activation blocks, widths 160-320-640."""
    return PreActResNet((4, 4, 4), (160, 320, 640), 16, num_classes, in_channels, drop_rate)
