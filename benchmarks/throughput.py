"""Training and inference images/s of mlxvision against PyTorch, in one process, interleaved.

Models: ``simple_cnn`` (the CIFAR-10 tutorial CNN), ``resnet20`` (CIFAR ResNet) and
``resnet18`` with the CIFAR stem, all on 32×32×3 inputs with 10 classes. The PyTorch versions
are written below with the same layers (eager mode, ``channels_last``); PyTorch is optional.

Variants (``--variants``, comma-separated):

- ``mlx``: the zoo's model as built (``mlx.nn.Conv2d``), train step not compiled;
- ``mlx-compiled``: the same with the train and eval steps under ``mx.compile``;
- ``fast`` / ``fast-compiled``: after ``mlxvision.ops.use_fast_layers(model)``;
- ``torch``: PyTorch, eager, ``channels_last``, ``torch.set_num_threads(--threads)`` on the CPU.

A train step is forward, cross-entropy, backward and an SGD (momentum 0.9) update on one batch
of random images; an eval step is the forward pass in eval mode. Each repeat runs every variant
once (``--steps`` timed steps after ``--warmup`` untimed ones); the table gives the median over
repeats and the spread (min–max). Peak memory: MLX's ``mx.get_peak_memory()``; PyTorch's
``max_memory_allocated`` on a GPU and, on the CPU, the growth of the process's peak resident
set during its steps (Linux ``VmHWM`` after resetting it), a lower bound since freed memory of
the other variants is reused. Usage::

    python benchmarks/throughput.py [--device cpu|gpu] [--models simple_cnn,resnet20,resnet18]
        [--batch-size 128] [--steps 3] [--repeats 3] [--variants mlx,fast,torch]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import mlxvision
from mlxvision.engine.steps import make_eval_step, make_train_step
from mlxvision.ops import keep_freed_memory, use_fast_layers

mx = mlxvision.import_mlx()  # after mlxvision: it loads the fast BLAS before mlx.core
import mlx.optimizers as optim  # noqa: E402

MODELS = ("simple_cnn", "resnet20", "resnet18")
VARIANTS = ("mlx", "mlx-compiled", "fast", "fast-compiled", "torch")
NUM_CLASSES = 10


# --- PyTorch versions of the models ----------------------------------------------------------


def torch_model(name: str):
    import torch.nn as tnn
    import torch.nn.functional as F

    class SimpleCNN(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 64, 3, padding=1)
            self.conv2 = tnn.Conv2d(64, 128, 3, padding=1)
            self.fc1 = tnn.Linear(128 * 8 * 8, 1024)
            self.fc2 = tnn.Linear(1024, NUM_CLASSES)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            return self.fc2(F.relu(self.fc1(x.flatten(1))))

    class CifarBlock(tnn.Module):  # option-A shortcut: subsample, zero-pad the channels
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(cout)
            self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(cout)
            self.pad = cout - cin

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.pad:
                x = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad // 2))
            return F.relu(out + x)

    class BasicBlock(tnn.Module):  # torchvision's: 1×1 conv-BN downsample
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(cout)
            self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = tnn.Sequential(
                    tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout)
                )

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + (x if self.downsample is None else self.downsample(x)))

    class ResNet(tnn.Module):
        def __init__(self, block, widths, blocks, stem: int) -> None:
            super().__init__()
            self.conv1 = tnn.Conv2d(3, stem, 3, 1, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(stem)
            layers, cin = [], stem
            for index, (width, count) in enumerate(zip(widths, blocks, strict=True)):
                for b in range(count):
                    layers.append(block(cin, width, 2 if index and not b else 1))
                    cin = width
            self.layers = tnn.Sequential(*layers)
            self.fc = tnn.Linear(cin, NUM_CLASSES)

        def forward(self, x):
            x = self.layers(F.relu(self.bn1(self.conv1(x))))
            return self.fc(x.mean((2, 3)))

    if name == "simple_cnn":
        return SimpleCNN()
    if name == "resnet20":
        return ResNet(CifarBlock, (16, 32, 64), (3, 3, 3), 16)
    return ResNet(BasicBlock, (64, 128, 256, 512), (2, 2, 2, 2), 64)


def mlx_model(name: str):
    available = mlxvision.list_models()
    if name not in available:
        raise SystemExit(f"mlxvision has no model {name!r}; it has {', '.join(available)}")
    kwargs = {"cifar_stem": True} if name == "resnet18" else {}
    return mlxvision.create_model(name, num_classes=NUM_CLASSES, **kwargs)


# --- runners: each returns (train step, eval step, peak memory reader) -----------------------


@dataclass
class Runner:
    train: Callable[[], None]
    evaluate: Callable[[], None]
    reset_memory: Callable[[], None]
    peak_memory: Callable[[], int]
    samples: dict[str, list[float]] = field(default_factory=lambda: {"train": [], "eval": []})
    memory: int = 0


def mlx_runner(
    name: str, variant: str, images: np.ndarray, labels: np.ndarray, precision: str = "float32"
) -> Runner:
    model = mlx_model(name)
    if variant.startswith("fast"):
        use_fast_layers(model)
    compiled = variant.endswith("compiled")
    optimizer = optim.SGD(0.01, momentum=0.9)
    train_step = make_train_step(model, optimizer, compile=compiled, precision=precision)
    # the step set the BLAS threads for its streams; other runners of this process may change
    # them, so each call sets them back
    threads = mlxvision.backend.BLAS_THREADS.get("count")
    eval_step = make_eval_step(model, compile=compiled, precision=precision)
    x, y = mx.array(images), mx.array(labels)
    weights = mx.ones(y.shape)
    mx.eval(x, y, weights)

    def own_threads() -> None:
        if threads:
            mlxvision.backend.set_blas_threads(threads)

    def train() -> None:
        own_threads()
        mx.eval(train_step(x, y), model.state, optimizer.state)

    def evaluate() -> None:
        own_threads()
        mx.eval(eval_step(x, y, weights))

    return Runner(train, evaluate, mx.reset_peak_memory, mx.get_peak_memory)


def torch_runner(
    name: str, images: np.ndarray, labels: np.ndarray, gpu: bool, precision: str = "float32"
) -> Runner:
    import contextlib

    import torch

    device = torch.device("cuda" if gpu else "cpu")
    model = torch_model(name).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16}

    def autocast():
        if precision not in dtypes:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtypes[precision])

    def train() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        sync()

    def evaluate() -> None:
        model.eval()
        with torch.inference_mode(), autocast():
            model(x).argmax(1)
        sync()

    if gpu:
        return Runner(
            train, evaluate, torch.cuda.reset_peak_memory_stats, torch.cuda.max_memory_allocated
        )
    start = [0]

    def reset() -> None:
        _reset_peak_rss()
        start[0] = _rss("VmRSS")

    return Runner(train, evaluate, reset, lambda: max(0, _rss("VmHWM") - start[0]))


def _rss(key: str) -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_steps(step: Callable[[], None], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--variants", default="mlx,fast,torch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch CPU threads")
    parser.add_argument(
        "--precision",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="mixed precision: MLX computes in it over float32 weights, PyTorch under autocast",
    )
    parser.add_argument(
        "--malloc",
        choices=("keep", "default"),
        default="keep",
        help="keep: glibc keeps freed memory (mlxvision.ops.keep_freed_memory); default: as is",
    )
    args = parser.parse_args(argv)
    models, variants = args.models.split(","), args.variants.split(",")
    for model in models:
        if model not in MODELS:
            parser.error(f"--models: unknown model {model!r}; choose from {', '.join(MODELS)}")
    for variant in variants:
        if variant not in VARIANTS:
            parser.error(f"--variants: unknown {variant!r}; choose from {', '.join(VARIANTS)}")
    if min(args.batch_size, args.steps, args.repeats) < 1 or args.warmup < 0:
        parser.error("--batch-size, --steps and --repeats must be ≥ 1, --warmup ≥ 0")

    kept = args.malloc == "keep" and keep_freed_memory()
    gpu = args.device == "gpu"
    mx.set_default_device(mx.gpu if gpu else mx.cpu)
    torch_version = "not installed"
    if "torch" in variants:
        try:
            import torch
        except ImportError:
            variants.remove("torch")
        else:
            torch_version = torch.__version__
            if not gpu:
                torch.set_num_threads(args.threads)
            elif not torch.cuda.is_available():
                raise SystemExit("--device gpu: PyTorch sees no CUDA GPU")

    info = mlxvision.info()
    load_start = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    rows = []
    for name in models:
        images = rng.standard_normal((args.batch_size, 32, 32, 3)).astype(np.float32)
        labels = rng.integers(0, NUM_CLASSES, args.batch_size).astype(np.int32)
        runners = {
            v: torch_runner(name, images, labels, gpu, args.precision)
            if v == "torch"
            else mlx_runner(name, v, images, labels, args.precision)
            for v in variants
        }
        for runner in runners.values():
            runner.reset_memory()
            for _ in range(args.warmup):
                runner.train()
                runner.evaluate()
            runner.memory = max(runner.memory, runner.peak_memory())
        for _ in range(args.repeats):
            for runner in runners.values():
                runner.reset_memory()
                runner.samples["train"].append(
                    args.batch_size * args.steps / time_steps(runner.train, args.steps)
                )
                runner.memory = max(runner.memory, runner.peak_memory())
                runner.samples["eval"].append(
                    args.batch_size * args.steps / time_steps(runner.evaluate, args.steps)
                )
        base = runners.get("torch") or runners[variants[0]]
        for variant, runner in runners.items():
            rows.append((name, variant, runner, base))
        print(f"done: {name} (load average {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)

    print(f"command: `python {' '.join(sys.argv)}`\n")
    print(
        f"mlxvision {info['mlxvision']}, mlx {info['mlx']}, torch {torch_version}, "
        f"Python {info['python']}, {info['platform']} ({_cpu_name()}, "
        f"{os.cpu_count()} CPUs), MLX device {info['device']}, BLAS {info['blas']}, "
        f"torch threads {args.threads if not gpu else '-'}, malloc keeps freed memory: {kept}, "
        f"batch {args.batch_size}, precision {args.precision}, "
        f"{args.steps} steps × {args.repeats} interleaved repeats, "
        f"load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end\n"
    )
    ref = "torch" if "torch" in variants else variants[0]
    print(
        f"| model | variant | train img/s (min–max) | vs {ref} | eval img/s (min–max) "
        f"| vs {ref} | peak memory MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, variant, runner, base in rows:
        cells = []
        for kind in ("train", "eval"):
            values = runner.samples[kind]
            median = statistics.median(values)
            pairs = zip(values, base.samples[kind], strict=True)
            ratio = statistics.median(v / b for v, b in pairs)  # per repeat: same moment
            cells.append(f"{median:.1f} ({min(values):.1f}–{max(values):.1f}) | {ratio:.2f}×")
        memory = f"{runner.memory / 2**20:.0f}"
        if variant == "torch" and not gpu:
            memory += " (RSS growth)"
        print(f"| {name} | {variant} | " + " | ".join(cells) + f" | {memory} |")


if __name__ == "__main__":
    main()
