"""Weight gradient of stride-1 3×3 convolutions on the GPU: MLX's against the ``rows`` pass.

MLX's CUDA weight gradient materialises the patches matrix (about ten times the layer's
input). ``mlxvision.ops.conv``'s ``rows`` weight gradient multiplies ``dYᵀ`` by shifted rows of
the padded input instead, one product per tap. This measures, per ResNet layer shape at batch
512, milliseconds and peak memory of each, then a whole compiled training step of ResNet-20
and ResNet-18 (CIFAR stem) with MLX's weight gradient and with ``rows`` for every stride-1
k×k convolution (forward and input gradient stay MLX's). Usage::

    python benchmarks/weight_grad_memory.py [--dtype bfloat16|float32] [--batch-size 512]
"""

from __future__ import annotations

import argparse
import time

import mlxvision
from mlxvision.engine.steps import make_train_step
from mlxvision.ops import conv as C

mx = mlxvision.import_mlx()  # after mlxvision: it loads the fast BLAS before mlx.core
import mlx.optimizers as optim  # noqa: E402

SHAPES = [(16, 16, 32), (32, 32, 16), (64, 64, 8), (64, 64, 32), (128, 128, 16), (256, 256, 8)]


def milliseconds(fn, repeats: int = 10) -> float:
    mx.eval(fn())
    mx.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(fn())
        mx.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2] * 1e3


def peak_mb(fn) -> float:
    mx.eval(fn())
    mx.synchronize()
    mx.clear_cache()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    mx.eval(fn())
    mx.synchronize()
    return (mx.get_peak_memory() - base) / 2**20


def rows_weight_grad_plan(cin, cout, kernel, stride, device=None, padding=(0, 0)):
    if stride == (1, 1) and kernel != (1, 1):
        return C.ConvPlan("mlx", "mlx", "rows")
    return C.MLX_PLAN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()
    dtype, n = getattr(mx, args.dtype), args.batch_size
    print(f"mlx {mx.__version__}, device {mx.default_device()}, {args.dtype}, batch {n}\n")
    print("| in→out | size | input MB | mlx ms | rows ms | mlx peak MB | rows peak MB |")
    print("|---|---|---|---|---|---|---|")
    one = (1, 1)
    for cin, cout, size in SHAPES:
        x = mx.random.normal((n, size, size, cin)).astype(dtype)
        w = (mx.random.normal((cout, 3, 3, cin)) * 0.1).astype(dtype)
        dy = mx.random.normal((n, size, size, cout)).astype(dtype)
        mx.eval(x, w, dy)
        runs = {
            how: (lambda how=how, x=x, w=w, dy=dy: C._weight_grad(x, w, dy, one, one, how))
            for how in ("mlx", "rows")
        }
        ms = {how: milliseconds(fn) for how, fn in runs.items()}
        mb = {how: peak_mb(fn) for how, fn in runs.items()}
        print(
            f"| {cin}→{cout} | {size} | {x.nbytes / 2**20:.0f} | {ms['mlx']:.2f} | "
            f"{ms['rows']:.2f} | {mb['mlx']:.0f} | {mb['rows']:.0f} |",
            flush=True,
        )
    print("\n| model | weight gradient | train img/s | peak MB |\n|---|---|---|---|")
    original = C.choose_plan
    try:
        for name, kwargs in [("resnet20", {}), ("resnet18", {"cifar_stem": True})]:
            for variant in ("mlx", "rows"):
                C.choose_plan = rows_weight_grad_plan if variant == "rows" else original
                model = mlxvision.create_model(name, num_classes=10, **kwargs)
                optimizer = optim.SGD(0.01, momentum=0.9)
                step = make_train_step(model, optimizer, precision=args.dtype)
                images, labels = mx.random.normal((n, 32, 32, 3)), mx.random.randint(0, 10, (n,))

                def train(
                    step=step, model=model, optimizer=optimizer, images=images, labels=labels
                ):
                    return step(images, labels), model.state, optimizer.state

                for _ in range(3):
                    mx.eval(train())
                mx.synchronize()
                mx.reset_peak_memory()
                rate = n / milliseconds(train) * 1e3
                print(f"| {name} | {variant} | {rate:.0f} | {mx.get_peak_memory() / 2**20:.0f} |")
    finally:
        C.choose_plan = original


if __name__ == "__main__":
    main()
