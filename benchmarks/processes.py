"""Training images/s on a CPU: mlxvision with its batch split over CPU streams and data-parallel
over several processes of this machine, against PyTorch, in one run.

MLX's CPU backend runs all but the matrix products on one thread. Two ways use all the cores:
several processes, each with its share of the cores and of every batch (``--processes N``), and
one process splitting every batch into parts computed on parallel CPU streams
(``make_train_step(streams=)``, :mod:`mlxvision.engine.streams`). This measures both, per
model, with the models of ``throughput.py``: every measurement runs in fresh processes
(PyTorch with ``--threads`` threads; mlxvision started by
``mlxvision.engine.local_launch.launch_local``), rounds interleaved. A step is forward,
cross-entropy, backward and SGD-momentum update of the global batch. ``--configs`` lists
``PROCESSESxSTREAMS`` pairs (streams a number or ``auto``, the library's default). Usage::

    python benchmarks/processes.py [--models simple_cnn,resnet20] [--batch-size 128]
        [--configs 1x1,1xauto,2xauto] [--steps 5] [--warmup 2] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from throughput import mlx_model, random_batch, time_steps, torch_model, torch_runner

import mlxvision
from mlxvision.engine.local_launch import launch_local
from mlxvision.engine.steps import make_train_step

mx = mlxvision.import_mlx()  # after mlxvision: it loads the fast BLAS before mlx.core
import mlx.optimizers as optim  # noqa: E402

HERE = Path(__file__).resolve()


IMAGE_SIZE = 32


def batch(size: int) -> tuple[np.ndarray, np.ndarray]:
    return random_batch(np.random.default_rng(0), size, IMAGE_SIZE)


def mlx_worker(args: argparse.Namespace) -> None:
    group = mx.distributed.init()
    rank, world = group.rank(), group.size()
    images, labels = batch(args.batch_size)
    part = args.batch_size // world
    x = mx.array(images[rank * part : (rank + 1) * part])
    y = mx.array(labels[rank * part : (rank + 1) * part])
    mx.random.seed(0)
    model = mlx_model(args.model, IMAGE_SIZE)
    optimizer = optim.SGD(0.01, momentum=0.9)
    streams = args.streams if args.streams == "auto" else int(args.streams)
    step = make_train_step(
        model, optimizer, compile=False, group=group if world > 1 else None, streams=streams
    )

    def train() -> None:
        mx.eval(step(x, y), model.state, optimizer.state)

    time_steps(train, args.warmup)
    seconds = time_steps(train, args.steps)
    if rank == 0:
        Path(args.out).write_text(
            json.dumps(
                {
                    "images_per_sec": args.steps * args.batch_size / seconds,
                    "streams": step.streams,
                    "conv_streams": step.conv_streams,
                    "threads": mlxvision.backend.BLAS_THREADS.get("count", 0),
                }
            )
        )


def torch_worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    runner = torch_runner(torch_model(args.model, IMAGE_SIZE), *batch(args.batch_size), gpu=False)
    time_steps(runner.train, args.warmup)
    seconds = time_steps(runner.train, args.steps)
    Path(args.out).write_text(
        json.dumps(
            {
                "images_per_sec": args.steps * args.batch_size / seconds,
                "streams": 0,
                "conv_streams": 0,
            }
        )
    )


def measure(kind: str, processes: int, streams: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, str(HERE), "--worker", kind, "--model", args.model]
        command += ["--batch-size", str(args.batch_size), "--steps", str(args.steps)]
        command += ["--warmup", str(args.warmup), "--threads", str(args.threads), "--out", str(out)]
        command += ["--streams", streams]
        code = (
            launch_local(command, processes)
            if kind == "mlx"
            else subprocess.run(command).returncode
        )
        if code != 0:
            raise SystemExit(f"{kind} with {processes} process(es) failed with status {code}")
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="simple_cnn,resnet20")
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch")
    parser.add_argument("--configs", default="1x1,1xauto,2xauto", help="PROCESSESxSTREAMS,...")
    parser.add_argument("--streams", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="PyTorch's")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--worker", choices=("mlx", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "mlx":
        return mlx_worker(args)
    if args.worker == "torch":
        return torch_worker(args)

    configs = [config.split("x") for config in args.configs.split(",")]
    if any(
        len(c) != 2 or not c[0].isdigit() or not (c[1].isdigit() or c[1] == "auto") for c in configs
    ):
        parser.error(f"--configs: expected PROCESSESxSTREAMS pairs like 2x1,1xauto: {args.configs}")
    kinds = [("mlx", int(p), s) for p, s in configs]
    kinds += [] if args.no_torch else [("torch", 1, "-")]
    info = mlxvision.info()
    print(f"command: `python {' '.join(sys.argv)}`\n")
    print(
        f"mlxvision {info['mlxvision']}, mlx {info['mlx']}, {info['platform']} ({info['cpu']})"
        f", BLAS {info['blas']}, Python {platform.python_version()}, "
        f"global batch {args.batch_size}, {args.steps} steps × {args.repeats} interleaved "
        f"repeats, PyTorch threads {args.threads}, load average {os.getloadavg()[0]:.2f} at start"
    )
    rows = []
    for model in args.models.split(","):
        args.model = model
        samples: dict[tuple, list[float]] = {k: [] for k in kinds}
        streams: dict[tuple, str] = {}
        for _ in range(args.repeats):
            for kind in kinds:
                result = measure(*kind, args)
                samples[kind].append(result["images_per_sec"])
                conv = result["conv_streams"]
                streams[kind] = f"{result['streams']}" + (
                    f", convolutions {conv}" if conv > 1 else ""
                )
        for kind in kinds:
            rate = statistics.median(samples[kind])
            ratios = ""
            if not args.no_torch:
                torch_rates = samples[("torch", 1, "-")]
                per_round = [a / b for a, b in zip(samples[kind], torch_rates, strict=True)]
                ratios = f"{statistics.median(per_round):.2f}×"
            library = "PyTorch" if kind[0] == "torch" else "mlxvision"
            parts = "-" if kind[0] == "torch" else f"{streams[kind]} ({kind[2]})"
            rows.append(
                f"| {model} | {library} | {kind[1]} | {parts} | "
                f"{rate:.1f} ({min(samples[kind]):.1f}–{max(samples[kind]):.1f}) | {ratios} |"
            )
        print(f"done: {model} (load average {os.getloadavg()[0]:.2f})", flush=True)
    print(
        "\n| model | library | processes | streams per process | train img/s (min–max) "
        "| vs PyTorch |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
