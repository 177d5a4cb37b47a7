"""Every depthwise convolution of a zoo model, timed pass by pass: MLX's, the taps, the kernel.

For each distinct depthwise layer of ``--model`` at ``--image-size`` and ``--batch-size`` (one
filter per channel; found by running the model once), the milliseconds of the forward pass,
the input gradient and the weight gradient of:

- ``mlx``: :func:`mlx.core.conv2d` with one group per channel and MLX's own gradients;
- ``taps``: the sum of shifted taps (``ops.conv._depthwise_taps``) with its written gradient
  (``ops.conv._depthwise_fn``), all MLX operations;
- ``kernel`` (CUDA only): the weight gradient of ``mlxvision.ops.cuda_depthwise``.

Each timed function is compiled on the GPU (as a GPU training step is) and not on the CPU. The
last column is the largest difference of the taps' and the kernel's weight gradients from
MLX's, relative to its largest magnitude. Usage::

    python benchmarks/depthwise_layers.py [--device gpu|cpu] [--model efficientnet_b0]
        [--image-size 32] [--batch-size 256] [--dtype bfloat16] [--repeats 10]
"""

from __future__ import annotations

import argparse
import time

import mlxvision
from mlxvision.backend import on_cuda
from mlxvision.ops import conv as C
from mlxvision.ops.cuda_depthwise import depthwise_weight_grad

mx = mlxvision.import_mlx()  # after mlxvision: it loads the fast BLAS before mlx.core


def depthwise_layers(model_name: str, image_size: int, batch: int) -> list[tuple]:
    """(input shape, kernel, stride, padding) of each distinct depthwise convolution."""
    model = mlxvision.create_model(model_name, num_classes=10)
    found: list[tuple] = []
    plain = C.conv2d

    def recording(x, weight, stride=1, padding=0, dilation=1, groups=1, **kwargs):
        if groups > 1 and groups == x.shape[-1] == weight.shape[0] and weight.shape[-1] == 1:
            layer = (tuple(x.shape), weight.shape[1], C._pair(stride, "stride"))
            layer += (C._pair(padding, "padding"),)
            if layer not in found:
                found.append(layer)
        return plain(x, weight, stride, padding, dilation, groups, **kwargs)

    mlxvision.ops.layers.conv2d = recording
    try:
        model.eval()
        mx.eval(model(mx.zeros((batch, image_size, image_size, 3))))
    finally:
        mlxvision.ops.layers.conv2d = plain
    return found


def milliseconds(fn, args, repeats: int) -> float:
    mx.eval(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def passes(forward, compiled: bool):
    """The forward pass, the input gradient and the weight gradient of ``forward(x, w)``."""

    def loss(x, w):
        return forward(x, w).astype(mx.float32).sum()

    wrap = mx.compile if compiled else (lambda f: f)
    return wrap(forward), wrap(mx.grad(loss, argnums=0)), wrap(mx.grad(loss, argnums=1))


def layer_row(shape, kernel, stride, padding, dtype, gpu: bool, repeats: int) -> str:
    """One table row: the three passes of MLX's convolution and of the taps, the kernel's
    weight gradient on CUDA, and the weight gradients' differences from MLX's."""
    x = mx.random.normal(shape).astype(dtype)
    w = mx.random.normal((shape[-1], kernel, kernel, 1)).astype(dtype)
    dy = mx.random.normal(mx.conv2d(x, w, stride, padding, groups=shape[-1]).shape).astype(dtype)

    def mlx_conv(a, b):
        return mx.conv2d(a, b, stride, padding, groups=shape[-1])

    def taps(a, b):
        return C._depthwise_fn(stride, padding)(a, b)

    def kernel_grad(a, g):
        return depthwise_weight_grad(a, g, (kernel, kernel), stride, padding)

    cells, grads = [], {}
    for name, forward in (("mlx", mlx_conv), ("taps", taps)):
        times = [milliseconds(fn, (x, w), repeats) for fn in passes(forward, compiled=gpu)]
        cells.append(" / ".join(f"{t:.2f}" for t in times))
        grads[name] = mx.vjp(forward, [x, w], [dy])[1][1].astype(mx.float32)
    if on_cuda():
        cells.append(f"{milliseconds(kernel_grad, (x, dy), repeats):.2f}")
        grads["kernel"] = kernel_grad(x, dy)
    else:
        cells.append("–")
    scale = mx.abs(grads["mlx"]).max()
    differences = [
        f"{name} {(mx.abs(grad - grads['mlx']).max() / scale).item():.1e}"
        for name, grad in grads.items()
        if name != "mlx"
    ]
    return (
        f"| {'×'.join(map(str, shape))} | {kernel}×{kernel}, {stride[0]} | "
        f"{' | '.join(cells)} | {', '.join(differences)} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="gpu")
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    gpu = args.device == "gpu"
    mx.set_default_device(mx.gpu if gpu else mx.cpu)

    print(
        f"`python benchmarks/depthwise_layers.py --device {args.device} --model {args.model} "
        f"--image-size {args.image_size} --batch-size {args.batch_size} --dtype {args.dtype}`\n"
    )
    print("ms per pass: forward / input gradient / weight gradient (fastest of the repeats)\n")
    print("| input | filter, stride | mlx | taps | kernel: weight gradient | difference |")
    print("|---|---|---|---|---|---|")
    for layer in depthwise_layers(args.model, args.image_size, args.batch_size):
        print(layer_row(*layer, getattr(mx, args.dtype), gpu, args.repeats))


if __name__ == "__main__":
    main()
