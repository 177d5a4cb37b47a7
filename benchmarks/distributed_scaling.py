"""Images/s of data-parallel training on N processes against 1, with mx.distributed.

    mlx.launch -n 1 --backend ring python benchmarks/distributed_scaling.py --model resnet20
    mlx.launch -n 2 --backend ring python benchmarks/distributed_scaling.py --model resnet20

Each process trains on its own batch of ``--batch-size`` random 32×32 images (the global batch
is N times that), gradients averaged every step; rank 0 prints the global images/s (median of
``--repeats`` timed blocks of ``--steps`` steps, after ``--warmup`` steps).
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx.core as mx
import mlx.optimizers as optim

import mlxvision
from mlxvision.engine import make_train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=64, help="per process")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    group = mx.distributed.init()
    mx.random.seed(0)
    model = mlxvision.create_model(args.model, num_classes=10)
    step = make_train_step(model, optim.SGD(learning_rate=0.01, momentum=0.9), group=group)
    mx.random.seed(1 + group.rank())
    x = mx.random.normal((args.batch_size, 32, 32, 3))
    y = mx.random.randint(0, 10, (args.batch_size,))
    for _ in range(args.warmup):
        mx.eval(step(x, y), model.state)
    rates = []
    for _ in range(args.repeats):
        began = time.perf_counter()
        for _ in range(args.steps):
            mx.eval(step(x, y), model.state)
        seconds = time.perf_counter() - began
        rates.append(args.steps * args.batch_size * group.size() / seconds)
    if group.rank() == 0:
        median = statistics.median(rates)
        print(
            f"{args.model}: {group.size()} process(es), batch {args.batch_size} each: "
            f"{median:.1f} images/s in all, {median / group.size():.1f} per process "
            f"(repeats {', '.join(f'{r:.1f}' for r in rates)})"
        )


if __name__ == "__main__":
    main()
