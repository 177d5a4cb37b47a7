"""Peak memory and images/s of one model's training step under MLX memory limits.

MLX frees a buffer when the device has finished the commit that used it, and the host runs
ahead of the device by up to ten commits, so a step's peak holds, besides its working set,
buffers the step no longer needs. When active memory exceeds ``mx.set_memory_limit``, MLX's
``eval`` stops launching until enough commits finish. A limit at or below the working set
therefore makes the step wait at its peak, and the peak it then reaches is the working set
(plus the last operation's allocation); the table shows what each limit costs in speed. The
model's ``fast-compiled`` training step of ``throughput.py``, ``--warmup`` untimed steps, then
for each limit two untimed steps and ``--steps`` timed ones. Usage::

    python benchmarks/run_ahead_memory.py [--device gpu] [--model resnet18] [--batch-size 512]
        [--precision bfloat16] [--steps 10] [--limits none,1400,1300,1200,1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from step_arguments import add_step_arguments  # noqa: E402
from throughput import mlx_runner, mx, random_batch  # noqa: E402


def parse_limits(text: str) -> list[int | None]:
    """``"none,1400"`` → ``[None, 1400]`` (MB; ``none``: MLX's default limit).

    Example:
        >>> parse_limits("none, 1400,800")
        [None, 1400, 800]
    """
    limits: list[int | None] = []
    for item in text.split(","):
        item = item.strip()
        if item == "none":
            limits.append(None)
        elif item.isdigit() and int(item) > 0:
            limits.append(int(item))
        else:
            raise ValueError(f"--limits: expected none or a positive number of MB, got {item!r}")
    return limits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_arguments(parser, steps=10)
    parser.add_argument("--limits", default="none,1400,1300,1200,1000")
    args = parser.parse_args(argv)
    try:
        limits = parse_limits(args.limits)
    except ValueError as error:
        parser.error(str(error))

    mx.set_default_device(mx.gpu if args.device == "gpu" else mx.cpu)
    images, labels = random_batch(np.random.default_rng(0), args.batch_size, args.image_size)
    runner = mlx_runner(args.model, "fast-compiled", images, labels, args.precision)
    for _ in range(args.warmup):
        runner.train()
    default_limit = mx.get_memory_limit()
    resident = mx.get_active_memory() / 2**20

    rows = []
    for limit in limits:
        mx.set_memory_limit(default_limit if limit is None else limit * 2**20)
        runner.train()
        runner.train()
        mx.reset_peak_memory()
        start = time.perf_counter()
        for _ in range(args.steps):
            runner.train()
        rate = args.batch_size * args.steps / (time.perf_counter() - start)
        rows.append((limit, rate, mx.get_peak_memory() / 2**20))
    mx.set_memory_limit(default_limit)

    print(f"command: `python {' '.join(sys.argv)}`\n")
    print(
        f"{args.model}, batch {args.batch_size}, {args.precision}, {args.device}, "
        f"{args.steps} timed steps per limit; parameters, optimizer state and batch: "
        f"{resident:,.0f} MB before the steps\n"
    )
    print("| memory limit MB | train img/s | peak MB |")
    print("|---|---|---|")
    for limit, rate, peak in rows:
        shown = "MLX's default" if limit is None else f"{limit:,}"
        print(f"| {shown} | {rate:,.0f} | {peak:,.0f} |")


if __name__ == "__main__":
    main()
