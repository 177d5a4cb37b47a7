"""Training images/s and peak memory of one model under MLX backend settings, each in a process.

MLX reads its backend settings (``MLX_MAX_OPS_PER_BUFFER``, ``MLX_CUDA_GRAPH_CACHE_SIZE``,
``MLX_USE_CUDA_GRAPHS``, ``MLX_BFS_MAX_WIDTH``, …) from the environment once, so each setting
runs in a fresh process: the model's ``fast-compiled`` training step of ``throughput.py``,
``--warmup`` untimed steps (the first run of a new graph on CUDA also JIT-compiles its kernels,
which MLX then caches on disk for the later processes), then ``--steps`` timed ones. The
settings are alternated over ``--repeats`` rounds; the table gives every run and the median.
A setting is ``default`` or ``NAME=VALUE[,NAME=VALUE…]``; settings are separated by ``;``.
Usage::

    python benchmarks/backend_settings.py [--device gpu] [--model resnet18] [--batch-size 512]
        [--precision bfloat16] [--steps 20] [--warmup 3] [--repeats 2]
        [--settings "default;MLX_MAX_OPS_PER_BUFFER=1;MLXVISION_DIRECT_LAUNCH=default"]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_arguments import add_step_arguments  # noqa: E402

# import mlxvision's choice, one operation per commit (less memory), and MLX's CUDA graphs
DEFAULT_SETTINGS = "default;MLX_MAX_OPS_PER_BUFFER=1;MLXVISION_DIRECT_LAUNCH=default"


def parse_setting(text: str) -> dict[str, str]:
    """``"A=1,B=2"`` → ``{"A": "1", "B": "2"}``; ``"default"`` → ``{}``.

    Example:
        >>> parse_setting("MLX_USE_CUDA_GRAPHS=0,MLX_MAX_OPS_PER_BUFFER=3")
        {'MLX_USE_CUDA_GRAPHS': '0', 'MLX_MAX_OPS_PER_BUFFER': '3'}
    """
    text = text.strip()
    if text == "default":
        return {}
    setting = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--settings: expected default or NAME=VALUE[,…], got {text!r}")
        setting[name.strip()] = value.strip()
    return setting


def run_child(args: argparse.Namespace) -> None:
    import numpy as np
    from throughput import mlx_runner, mx, random_batch

    mx.set_default_device(mx.gpu if args.device == "gpu" else mx.cpu)
    rng = np.random.default_rng(0)
    size = args.image_size
    images, labels = random_batch(rng, args.batch_size, size)
    runner = mlx_runner(args.model, "fast-compiled", images, labels, args.precision)
    for _ in range(args.warmup):
        runner.train()
    mx.reset_peak_memory()
    start = time.perf_counter()
    for _ in range(args.steps):
        runner.train()
    seconds = time.perf_counter() - start
    rate = args.batch_size * args.steps / seconds
    print(json.dumps({"rate": rate, "peak_mb": mx.get_peak_memory() / 2**20}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_arguments(parser, steps=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--settings", default=DEFAULT_SETTINGS)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args)
        return
    try:
        settings = [(text.strip(), parse_setting(text)) for text in args.settings.split(";")]
    except ValueError as error:
        parser.error(str(error))
    child = [sys.executable, os.path.abspath(__file__), "--child"]
    for name in ("device", "model", "image_size", "batch_size", "precision", "steps", "warmup"):
        child += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    results: dict[str, list[dict]] = {text: [] for text, _ in settings}
    for _ in range(args.repeats):
        for text, setting in settings:
            env = {**os.environ, **setting}
            done = subprocess.run(
                child, env=env, capture_output=True, text=True, timeout=args.timeout
            )
            if done.returncode != 0:
                raise SystemExit(f"setting {text!r} failed:\n{done.stderr[-3000:]}")
            results[text].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"done: {text} {results[text][-1]}", file=sys.stderr, flush=True)

    print(f"command: `python {' '.join(sys.argv)}`\n")
    print(
        f"{args.model}, batch {args.batch_size}, {args.precision}, {args.device}, "
        f"{args.steps} timed steps after {args.warmup}, {args.repeats} alternated rounds\n"
    )
    print("| setting | train img/s, each run | median | peak MB |")
    print("|---|---|---|---|")
    for text, runs in results.items():
        rates = ", ".join(f"{run['rate']:,.1f}" for run in runs)
        median = statistics.median(run["rate"] for run in runs)
        peak = max(run["peak_mb"] for run in runs)
        print(f"| `{text}` | {rates} | {median:,.1f} | {peak:,.0f} |")


if __name__ == "__main__":
    main()
