"""Weight gradient of convolutions on the GPU: MLX's, the ``conv`` pass and the ``rows`` pass.

MLX's weight gradient materialises the patches matrix (about ``k·k`` times the layer's input)
and multiplies it by ``dY``. ``mlxvision.ops.conv`` has two others:

- ``conv``: one :func:`mlx.core.conv_general` of the input and ``dY``, each with batch and
  channels swapped, which MLX's CUDA backend runs as cuDNN's weight-gradient kernel;
- ``rows`` (stride 1): ``dYᵀ`` times shifted rows of the padded input, one product per tap.

Per ResNet layer shape at batch 512: milliseconds, peak memory and the largest difference from
MLX's gradient (relative to its largest magnitude). Then a whole compiled training step of each
model with each weight gradient for every convolution (forward and input gradient stay
MLX's). Usage::

    python benchmarks/weight_grad_memory.py [--dtype bfloat16|float32] [--batch-size 512]
        [--models resnet20,resnet18] [--steps mlx,conv] [--no-layers]
"""

from __future__ import annotations

import argparse
import functools
import time

import mlxvision
from mlxvision.engine.steps import make_train_step
from mlxvision.ops import conv as C

mx = mlxvision.import_mlx()  # after mlxvision: it loads the fast BLAS before mlx.core
import mlx.optimizers as optim  # noqa: E402

# in channels, out channels, input size, kernel, stride: the layers of ResNet-20 and ResNet-18
SHAPES = [
    (16, 16, 32, 3, 1),
    (32, 32, 16, 3, 1),
    (64, 64, 8, 3, 1),
    (64, 64, 32, 3, 1),
    (128, 128, 16, 3, 1),
    (256, 256, 8, 3, 1),
    (16, 32, 32, 3, 2),
    (64, 128, 32, 3, 2),
    (64, 128, 32, 1, 2),
    (256, 512, 8, 3, 2),
]
WEIGHT_GRADS = ("mlx", "conv", "rows")


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


def plan_rule(weight_grad: str):
    """``choose_plan`` with every convolution's weight gradient computed as ``weight_grad``
    (``rows`` only where it applies: stride 1, k×k)."""

    def rule(cin, cout, kernel, stride, device=None, padding=(0, 0)):
        if weight_grad == "rows" and (stride != (1, 1) or kernel == (1, 1)):
            return C.MLX_PLAN
        return C.ConvPlan("mlx", "mlx", weight_grad)

    return rule


def layers(dtype, n: int) -> None:
    columns = [f"{w} ms" for w in WEIGHT_GRADS] + [f"{w} peak MB" for w in WEIGHT_GRADS]
    print("| in→out | k/s | size | input MB | " + " | ".join(columns) + " | conv error |")
    print("|---" * (5 + 2 * len(WEIGHT_GRADS)) + "|")
    for cin, cout, size, k, s in SHAPES:
        stride, padding = (s, s), ((k - 1) // 2,) * 2
        x = mx.random.normal((n, size, size, cin)).astype(dtype)
        w = (mx.random.normal((cout, k, k, cin)) * 0.1).astype(dtype)
        dy = mx.random.normal(mx.conv2d(x, w, stride, padding).shape).astype(dtype)
        mx.eval(x, w, dy)
        usable = [how for how in WEIGHT_GRADS if how != "rows" or (s == 1 and k > 1)]
        runs = {
            how: functools.partial(C._weight_grad, x, w, dy, stride, padding, how) for how in usable
        }
        ms = {how: f"{milliseconds(fn):.2f}" for how, fn in runs.items()}
        mb = {how: f"{peak_mb(fn):.0f}" for how, fn in runs.items()}
        reference = runs["mlx"]().astype(mx.float32)
        error = (
            mx.abs(runs["conv"]().astype(mx.float32) - reference).max() / mx.abs(reference).max()
        )
        cells = [ms.get(how, "–") for how in WEIGHT_GRADS]
        cells += [mb.get(how, "–") for how in WEIGHT_GRADS]
        print(
            f"| {cin}→{cout} | {k}/{s} | {size} | {x.nbytes / 2**20:.0f} | "
            + " | ".join(cells)
            + f" | {error.item():.1e} |",
            flush=True,
        )


def steps(models: list[str], variants: list[str], precision: str, n: int) -> None:
    print("\n| model | weight gradient | train img/s | peak MB |\n|---|---|---|---|")
    original = C.choose_plan
    try:
        for name in models:
            kwargs = {"cifar_stem": True} if name == "resnet18" else {}
            for variant in variants:
                C.choose_plan = plan_rule(variant)
                model = mlxvision.create_model(name, num_classes=10, **kwargs)
                optimizer = optim.SGD(0.01, momentum=0.9)
                step = make_train_step(model, optimizer, precision=precision)
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
                peak = mx.get_peak_memory() / 2**20
                print(f"| {name} | {variant} | {rate:.0f} | {peak:.0f} |", flush=True)
    finally:
        C.choose_plan = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--models", default="resnet20,resnet18", help="'' for none")
    parser.add_argument("--steps", default="mlx,conv", help="weight gradients of whole steps")
    parser.add_argument("--no-layers", action="store_true", help="skip the per-layer table")
    args = parser.parse_args()
    device = mx.default_device()
    print(f"mlx {mx.__version__}, device {device}, {args.dtype}, batch {args.batch_size}\n")
    if not args.no_layers:
        layers(getattr(mx, args.dtype), args.batch_size)
    models = [m for m in args.models.split(",") if m]
    if models:
        steps(models, args.steps.split(","), args.dtype, args.batch_size)


if __name__ == "__main__":
    main()
