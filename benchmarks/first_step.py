"""How long a model's first training and evaluation steps take, and how many kernels MLX
compiles for them.

A compiled step's first call traces the model and compiles every fused kernel it has not
compiled before: on CUDA each is an NVRTC compilation of seconds, kept in MLX's kernel cache
(``MLX_PTX_CACHE_DIR``, which ``import mlxvision`` points at a lasting folder); on the CPU a
C++ compilation, kept in the temporary folder. Custom kernels (``mx.fast.cuda_kernel``) are
compiled again in every process. Each model runs in a process of its own; ``--fresh-cache``
gives each one an empty kernel cache, as on a new machine. Usage::

    python benchmarks/first_step.py [--device gpu] [--models resnet18,resnet20]
        [--batch-size 512] [--precision bfloat16] [--fresh-cache] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from step_arguments import add_step_arguments  # noqa: E402


def compiled_kernels(folder: Path, gpu: bool) -> set[str]:
    """The kernel modules in ``folder``: one ``.ptx`` file each on CUDA, one library on the CPU.

    Example:
        >>> compiled_kernels(Path("/nonexistent"), gpu=True)
        set()
    """
    pattern = "*.ptx" if gpu else "lib*.so"
    return {path.name for path in folder.rglob(pattern)} if folder.is_dir() else set()


def measure(model: str, args: argparse.Namespace) -> dict:
    """Times of one model's first calls, in this process."""
    import numpy as np
    from throughput import mlx_runner, mx, random_batch

    from mlxvision.backend import compiled_kernel_folder

    gpu = args.device == "gpu"
    mx.set_default_device(mx.gpu if gpu else mx.cpu)
    folder = compiled_kernel_folder(gpu)
    before = compiled_kernels(folder, gpu)
    images, labels = random_batch(np.random.default_rng(0), args.batch_size, args.image_size)
    runner = mlx_runner(model, "fast-compiled", images, labels, args.precision)
    times = {}
    for name, call in (("train", runner.train), ("eval", runner.evaluate)):
        for call_number in (1, 2):
            start = time.perf_counter()
            call()
            times[f"{name}_{call_number}"] = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        runner.train()
    times["rate"] = args.batch_size * args.steps / (time.perf_counter() - start)
    times["kernels"] = len(compiled_kernels(folder, gpu) - before)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_arguments(parser, steps=20, warmup=None, several=True)
    parser.add_argument("--fresh-cache", action="store_true", help="an empty kernel cache each")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return

    rows = []
    for model in args.models.split(","):
        env = dict(os.environ)
        with tempfile.TemporaryDirectory() as empty:
            if args.fresh_cache:
                env["MLXVISION_KERNEL_CACHE"] = env["TMPDIR"] = empty
                env.pop("MLX_PTX_CACHE_DIR", None)
            command = [sys.executable, __file__, "--child", model, *(argv or sys.argv[1:])]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{model}: the measuring process failed:\n{done.stderr[-3000:]}")
        rows.append((model, json.loads(done.stdout.splitlines()[-1])))

    print(f"command: `python {' '.join(sys.argv)}`\n")
    print(
        f"batch {args.batch_size}, {args.image_size}×{args.image_size}, {args.precision}, "
        f"{args.device}, kernel cache {'empty at the start' if args.fresh_cache else 'as is'}\n"
    )
    print(
        "| model | first train step s | second | first eval step s | second "
        "| kernels compiled | train img/s after |"
    )
    print("|---|---|---|---|---|---|---|")
    for model, t in rows:
        print(
            f"| {model} | {t['train_1']:.1f} | {t['train_2']:.2f} | {t['eval_1']:.1f} "
            f"| {t['eval_2']:.2f} | {t['kernels']} | {t['rate']:,.0f} |"
        )


if __name__ == "__main__":
    main()
