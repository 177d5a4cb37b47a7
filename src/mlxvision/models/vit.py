"""Vision Transformers (ViT-Tiny, ViT-Small) with timm's parameter names, any patch size."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .base import ImageClassifier
from .layers import init_std
from .registry import register_model

PAPER = (
    "Dosovitskiy et al., An Image is Worth 16x16 Words: Transformers for Image Recognition at "
    "Scale, ICLR 2021"
)


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size``² patches → ``dim``-vectors, by a strided convolution."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.proj(x)
        return x.reshape(x.shape[0], -1, x.shape[-1])


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Attention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def __call__(self, x: mx.array) -> mx.array:
        batch, tokens, dim = x.shape
        head_dim = dim // self.num_heads
        qkv = self.qkv(x)
        q, k, v = (
            qkv[..., i * dim : (i + 1) * dim]
            .reshape(batch, tokens, self.num_heads, head_dim)
            .transpose(0, 2, 1, 3)
            for i in range(3)
        )
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=head_dim**-0.5)
        return self.proj(out.transpose(0, 2, 1, 3).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    """Linear → GELU → linear, ``mlp_ratio`` × wider in the middle."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def __call__(self, x: mx.array) -> mx.array:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(ImageClassifier):
    """ViT with a class token and learned position embeddings (timm's layout and names).

    ``img_size`` must be a multiple of ``patch_size``; the model accepts only that size (the
    position embeddings are learned for its ``(img_size / patch_size)²`` patches). For 32×32
    CIFAR images use ``img_size=32, patch_size=4``.

    Example:
        >>> model = VisionTransformer(img_size=32, patch_size=8, dim=16, depth=1, num_heads=2)
        >>> model(mx.zeros((1, 32, 32, 3))).shape
        (1, 1000)
    """

    classifier_name = "head"

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        in_channels: int = 3,
    ) -> None:
        super().__init__(num_classes, in_channels)
        if patch_size < 1 or img_size % patch_size:
            raise ValueError(
                f"VisionTransformer: img_size {img_size} must be a multiple of patch_size "
                f"{patch_size}"
            )
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_channels, dim, patch_size)
        self.cls_token = mx.zeros((1, 1, dim))
        self.pos_embed = mx.zeros((1, 1 + (img_size // patch_size) ** 2, dim))
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        init_std(self)
        self.pos_embed = 0.02 * mx.random.truncated_normal(-2.0, 2.0, self.pos_embed.shape)
        self.cls_token = 1e-6 * mx.random.normal(self.cls_token.shape)

    def __call__(self, x: mx.array) -> mx.array:
        self.check_input(x)
        if x.shape[1] != self.img_size or x.shape[2] != self.img_size:
            raise ValueError(
                f"VisionTransformer: built for {self.img_size}×{self.img_size} images "
                f"(img_size), received shape {tuple(x.shape)}"
            )
        x = self.patch_embed(x)
        cls = mx.broadcast_to(self.cls_token, (x.shape[0], 1, x.shape[-1]))
        x = mx.concatenate([cls, x], axis=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


@register_model(input_size=(224, 224), paper=PAPER)
def vit_tiny(
    num_classes: int = 1000, in_channels: int = 3, img_size: int = 224, patch_size: int = 16
) -> VisionTransformer:
    """ViT-Tiny: width 192, 12 blocks, 3 heads (use img_size=32, patch_size=4 for CIFAR)."""
    return VisionTransformer(img_size, patch_size, 192, 12, 3, 4.0, num_classes, in_channels)


@register_model(input_size=(224, 224), paper=PAPER)
def vit_small(
    num_classes: int = 1000, in_channels: int = 3, img_size: int = 224, patch_size: int = 16
) -> VisionTransformer:
    """ViT-Small: width 384, 12 blocks, 6 heads (use img_size=32, patch_size=4 for CIFAR)."""
    return VisionTransformer(img_size, patch_size, 384, 12, 6, 4.0, num_classes, in_channels)
