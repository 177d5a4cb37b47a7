"""Where a training or inference step's GPU time goes: mlxvision's kernels against PyTorch's.

PyTorch's profiler (CUPTI) records every CUDA kernel of the process, MLX's included, since both
frameworks share the CUDA context. For each model this script builds the same runners as
``throughput.py`` (``fast-compiled`` and ``torch``), warms them up, then profiles ``--steps``
steps of each, one framework at a time, and prints per step: the wall time, the kernel time by
category (convolutions and matrix products, batch-norm sums and other reductions, dtype casts,
the rest), and the longest kernels by name. Requires PyTorch with CUDA. Usage::

    python benchmarks/profile_gpu.py [--models resnet18] [--batch-size 512]
        [--precision bfloat16] [--steps 5] [--top 25] [--modes train,eval]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import mlx_runner, random_batch, torch_model, torch_runner  # noqa: E402

CATEGORIES = (
    ("batch-norm sums, reductions", ("reduce", "batch_norm", "mlxvision_bn")),
    ("convolution / matmul", ("conv", "cudnn", "xmma", "grad", "fprop", "gemm", "cutlass")),
    ("dtype casts, copies", ("copy", "convert", "memcpy", "memset")),
)  # fmt: skip


def category(kernel: str) -> str:
    lowered = kernel.lower()
    for name, keys in CATEGORIES:
        if any(key in lowered for key in keys):
            return name
    return "elementwise and the rest"


def kernel_times(step, steps: int) -> tuple[dict[str, list[float]], float]:
    """(kernel name → durations in µs over ``steps`` steps, wall seconds per step)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - start) / steps
    kernels: dict[str, list[float]] = collections.defaultdict(list)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels[event.name].append(event.time_range.elapsed_us())
    return kernels, wall


def report(label: str, kernels: dict[str, list[float]], wall: float, steps: int, top: int):
    total = sum(sum(times) for times in kernels.values()) / steps / 1000
    print(f"\n### {label}: {wall * 1000:.2f} ms wall per step, {total:.2f} ms of kernels\n")
    by_category: dict[str, float] = collections.Counter()
    for name, times in kernels.items():
        by_category[category(name)] += sum(times) / steps / 1000
    print("| category | ms per step |\n|---|---|")
    for name, ms in sorted(by_category.items(), key=lambda item: -item[1]):
        print(f"| {name} | {ms:.2f} |")
    print("\n| kernel | calls per step | ms per step | µs per call |\n|---|---|---|---|")
    ranked = sorted(kernels.items(), key=lambda item: -sum(item[1]))[:top]
    for name, times in ranked:
        per_step = sum(times) / steps / 1000
        short = name if len(name) <= 90 else name[:87] + "..."
        short = short.replace("|", "/")
        print(f"| `{short}` | {len(times) / steps:g} | {per_step:.3f} | {np.mean(times):.1f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--precision", default="bfloat16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--modes", default="train,eval")
    args = parser.parse_args(argv)

    import mlx.core as mx
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("profile_gpu.py: PyTorch sees no CUDA GPU")
    mx.set_default_device(mx.gpu)
    rng = np.random.default_rng(0)
    size = args.image_size
    for name in args.models.split(","):
        images, labels = random_batch(rng, args.batch_size, size)
        runners = {"mlxvision": mlx_runner(name, "fast-compiled", images, labels, args.precision)}
        peer = torch_model(name, size)
        if peer is not None:
            runners["torch"] = torch_runner(peer, images, labels, True, args.precision)
        for mode in args.modes.split(","):
            for label, runner in runners.items():
                step = runner.train if mode == "train" else runner.evaluate
                for _ in range(args.warmup):
                    step()
                kernels, wall = kernel_times(step, args.steps)
                title = f"{name} {mode}, {label}, {args.precision}, batch {args.batch_size}"
                report(title, kernels, wall, args.steps, args.top)


if __name__ == "__main__":
    main()
