"""The command-line arguments shared by the scripts that time a model's compiled step on one
device. Without MLX: scripts that set MLX's environment for child processes import it before
anything imports ``mlx.core``."""

from __future__ import annotations

import argparse


def add_step_arguments(
    parser: argparse.ArgumentParser, steps: int, warmup: int | None = 3, several: bool = False
) -> None:
    """The arguments of the scripts that time a model's compiled step on one device: device,
    model (``several``: ``--models``, comma-separated), image size, batch, precision, steps
    and warmup (``None``: none); the defaults are ResNet-18's GPU measurements."""
    parser.add_argument("--device", choices=("cpu", "gpu"), default="gpu")
    if several:
        parser.add_argument("--models", default="resnet18,resnet20", help="comma-separated")
    else:
        parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--precision", default="bfloat16")
    parser.add_argument("--steps", type=int, default=steps, help="timed steps")
    if warmup is not None:
        parser.add_argument("--warmup", type=int, default=warmup, help="untimed steps first")
