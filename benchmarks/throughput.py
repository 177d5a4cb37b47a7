"""Training and inference images/s of mlxvision against PyTorch, in one process, interleaved.

Models: any of the zoo (``--models``, comma-separated, or ``all``) at ``--image-size`` (32 by
default; ``native`` takes each model's own input size from its card, 224 for the ImageNet
models). At 64 pixels or less the ImageNet ResNets use their CIFAR stem. The PyTorch peers:
the tutorial CNN, the CIFAR ResNets (``resnet20`` … ``resnet110``), ResNet-18 with the CIFAR
stem, the pre-activation ResNet-18, the Wide ResNet-28-10 and the ViTs (4-pixel patches at 64
pixels or less, 16-pixel ones above, on both sides) are written below with the same layers;
the ImageNet models whose architecture mirrors torchvision's (ResNets, MobileNets,
EfficientNet-B0, ConvNeXt-Tiny, VGG-BN) use torchvision's, when it is installed, at any size
(at 64 pixels or less the ResNets' stem replaced as mlxvision's is). Models without a peer
get mlxvision rows only. PyTorch runs eager with ``channels_last``; it is optional.

Variants (``--variants``, comma-separated):

- ``mlx``: the zoo's model with MLX's own layers (``use_fast_layers(model, enabled=False)``),
  train step not compiled;
- ``mlx-compiled``: the same with the train and eval steps under ``mx.compile``;
- ``fast`` / ``fast-compiled``: the model as ``mlxvision.create_model`` builds it (with
  ``mlxvision.ops.use_fast_layers``);
- ``fast-compiled-capped``: ``fast-compiled`` with MLX's memory limit at the train step's
  working set plus 3% (``mlxvision.engine.memory_cap``), measured on its second step;
- ``torch``: PyTorch, eager, ``channels_last``, ``torch.set_num_threads(--threads)`` on the CPU.

A train step is forward, cross-entropy, backward and an SGD (momentum 0.9) update on one batch
of random images; an eval step is the forward pass in eval mode. Each repeat runs every variant
once (``--steps`` timed steps after ``--warmup`` untimed ones); the table gives the median over
repeats and the spread (min–max). Peak memory: MLX's ``mx.get_peak_memory()``; PyTorch's
``max_memory_allocated`` on a GPU and, on the CPU, the growth of the process's peak resident
set during its steps (Linux ``VmHWM`` after resetting it), a lower bound since freed memory of
the other variants is reused. Usage::

    python benchmarks/throughput.py [--device cpu|gpu] [--models simple_cnn,resnet20,resnet18|all]
        [--image-size 32|native|N] [--batch-size 128] [--steps 3] [--repeats 3]
        [--variants mlx,fast,torch]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import mlxvision
from mlxvision.engine.memory_cap import limit_for, working_set
from mlxvision.engine.steps import make_eval_step, make_train_step
from mlxvision.models.registry import model_card
from mlxvision.ops import keep_freed_memory, use_fast_layers

mx = mlxvision.import_mlx()  # after mlxvision: it loads the fast BLAS before mlx.core
import mlx.optimizers as optim  # noqa: E402

MODELS = ("simple_cnn", "resnet20", "resnet18")  # the default set
CIFAR_RESNETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
TORCHVISION_PEERS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v2",
    "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny",
    "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
)  # fmt: skip
CIFAR_STEM_MAX_SIZE = 64  # ImageNet ResNets take their CIFAR stem at this size or less
VIT_WIDTHS = {"vit_tiny": (192, 3), "vit_small": (384, 6)}  # width, heads


def vit_patch_size(image_size: int) -> int:
    """ViTs take 4-pixel patches at CIFAR sizes (64 pixels or less), 16-pixel ones above."""
    return 4 if image_size <= CIFAR_STEM_MAX_SIZE else 16


VARIANTS = ("mlx", "mlx-compiled", "fast", "fast-compiled", "fast-compiled-capped", "torch")
NUM_CLASSES = 10


# --- PyTorch versions of the models ----------------------------------------------------------


def torch_model(name: str, image_size: int):
    """The PyTorch peer of a zoo model at an image size, or None if the benchmark has none."""
    import torch
    import torch.nn as tnn
    import torch.nn.functional as F

    cifar_stem = image_size <= CIFAR_STEM_MAX_SIZE

    class SimpleCNN(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 64, 3, padding=1)
            self.conv2 = tnn.Conv2d(64, 128, 3, padding=1)
            self.fc1 = tnn.Linear(128 * (image_size // 4) ** 2, 1024)
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

    class ResNet(tnn.Module):  # pre_activation: the stem's BN-ReLU moves after the stages
        def __init__(self, block, widths, blocks, stem: int, pre_activation=False) -> None:
            super().__init__()
            self.pre_activation = pre_activation
            self.conv1 = tnn.Conv2d(3, stem, 3, 1, 1, bias=False)
            layers, cin = [], stem
            for index, (width, count) in enumerate(zip(widths, blocks, strict=True)):
                for b in range(count):
                    layers.append(block(cin, width, 2 if index and not b else 1))
                    cin = width
            self.layers = tnn.Sequential(*layers)
            self.bn = tnn.BatchNorm2d(cin if pre_activation else stem)
            self.fc = tnn.Linear(cin, NUM_CLASSES)

        def forward(self, x):
            x = self.conv1(x)
            if self.pre_activation:
                x = F.relu(self.bn(self.layers(x)))
            else:
                x = self.layers(F.relu(self.bn(x)))
            return self.fc(x.mean((2, 3)))

    class PreActBlock(tnn.Module):  # BN-ReLU-conv twice; the shortcut takes the activated input
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.bn1 = tnn.BatchNorm2d(cin)
            self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(cout)
            self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.shortcut = None
            if stride != 1 or cin != cout:
                self.shortcut = tnn.Conv2d(cin, cout, 1, stride, bias=False)

        def forward(self, x):
            out = F.relu(self.bn1(x))
            identity = x if self.shortcut is None else self.shortcut(out)
            out = self.conv1(out)
            return self.conv2(F.relu(self.bn2(out))) + identity

    class VisionTransformer(tnn.Module):  # pre-norm blocks, class token, learned positions
        def __init__(self, dim: int, heads: int, depth: int = 12) -> None:
            super().__init__()
            patch = vit_patch_size(image_size)
            self.patch_embed = tnn.Conv2d(3, dim, patch, patch)
            self.cls_token = tnn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = tnn.Parameter(torch.zeros(1, 1 + (image_size // patch) ** 2, dim))
            layer = tnn.TransformerEncoderLayer(
                dim, heads, 4 * dim, dropout=0.0, activation="gelu", layer_norm_eps=1e-6,
                batch_first=True, norm_first=True,
            )  # fmt: skip
            self.blocks = tnn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
            self.norm = tnn.LayerNorm(dim, eps=1e-6)
            self.head = tnn.Linear(dim, NUM_CLASSES)

        def forward(self, x):
            x = self.patch_embed(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
            return self.head(self.norm(self.blocks(x))[:, 0])

    if name == "simple_cnn":
        return SimpleCNN()
    if name == "preact_resnet18":
        return ResNet(PreActBlock, (64, 128, 256, 512), (2, 2, 2, 2), 64, pre_activation=True)
    if name == "wide_resnet28_10":
        return ResNet(PreActBlock, (160, 320, 640), (4, 4, 4), 16, pre_activation=True)
    if name in VIT_WIDTHS:
        return VisionTransformer(*VIT_WIDTHS[name])
    if name in CIFAR_RESNETS:
        blocks = (int(name.removeprefix("resnet")) - 2) // 6
        return ResNet(CifarBlock, (16, 32, 64), (blocks,) * 3, 16)
    if name == "resnet18" and cifar_stem:
        return ResNet(BasicBlock, (64, 128, 256, 512), (2, 2, 2, 2), 64)
    if name in TORCHVISION_PEERS:
        try:
            import torchvision
        except ImportError:
            return None
        model = getattr(torchvision.models, name)(num_classes=NUM_CLASSES)
        if cifar_stem and name.startswith("resnet"):  # as mlxvision's cifar_stem=True
            model.conv1 = tnn.Conv2d(3, 64, 3, 1, 1, bias=False)
            model.maxpool = tnn.Identity()
        return model
    return None


def mlx_model(name: str, image_size: int):
    kwargs: dict = {}
    if name == "simple_cnn":
        kwargs["input_size"] = image_size
    elif name.startswith("resnet") and name not in CIFAR_RESNETS:
        kwargs["cifar_stem"] = image_size <= CIFAR_STEM_MAX_SIZE
    elif name in VIT_WIDTHS:
        kwargs.update(img_size=image_size, patch_size=vit_patch_size(image_size))
    return mlxvision.create_model(name, num_classes=NUM_CLASSES, **kwargs)


def random_batch(rng: np.random.Generator, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random NHWC float32 images of ``size``² pixels and int32 labels."""
    images = rng.standard_normal((count, size, size, 3)).astype(np.float32)
    return images, rng.integers(0, NUM_CLASSES, count).astype(np.int32)


def image_size_of(name: str, requested: str) -> int:
    if requested == "native":
        return model_card(name).input_size[0]
    return int(requested)


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
    model = mlx_model(name, images.shape[1])
    if variant.startswith("mlx"):
        use_fast_layers(model, enabled=False)
    compiled = "compiled" in variant
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

    def step() -> None:
        mx.eval(train_step(x, y), model.state, optimizer.state)

    cap = {"steps": 0, "bytes": None}

    def capped_step() -> None:
        cap["steps"] += 1
        if cap["steps"] == 2:  # the first compiles
            cap["bytes"] = limit_for(working_set(step))
        elif cap["bytes"] is None:
            step()
        else:
            previous = mx.set_memory_limit(cap["bytes"])
            step()
            mx.set_memory_limit(previous)

    def train() -> None:
        own_threads()
        capped_step() if variant.endswith("capped") else step()

    def evaluate() -> None:
        own_threads()
        mx.eval(eval_step(x, y, weights))

    return Runner(train, evaluate, mx.reset_peak_memory, mx.get_peak_memory)


def torch_runner(
    model, images: np.ndarray, labels: np.ndarray, gpu: bool, precision: str = "float32"
) -> Runner:
    """Steps of ``model``, a PyTorch peer from :func:`torch_model`."""
    import contextlib

    import torch

    device = torch.device("cuda" if gpu else "cpu")
    model = model.to(device).to(memory_format=torch.channels_last)
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


def time_steps(step: Callable[[], None], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, or all")
    parser.add_argument(
        "--image-size", default="32", help="pixels per side, or native (each model's card)"
    )
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
    available = mlxvision.list_models()
    models = available if args.models == "all" else args.models.split(",")
    variants = args.variants.split(",")
    for model in models:
        if model not in available:
            parser.error(f"--models: unknown model {model!r}; choose from {', '.join(available)}")
    if args.image_size != "native" and not (args.image_size.isdigit() and int(args.image_size)):
        parser.error(f"--image-size: expected a positive number or native, got {args.image_size!r}")
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
    print(f"command: `python {' '.join(sys.argv)}`\n")
    print(
        f"mlxvision {info['mlxvision']}, mlx {info['mlx']}, torch {torch_version}, "
        f"Python {info['python']}, {info['platform']} ({info['cpu']})"
        f", MLX device {info['device']}, BLAS {info['blas']}, "
        f"torch threads {args.threads if not gpu else '-'}, malloc keeps freed memory: {kept}, "
        f"batch {args.batch_size}, precision {args.precision}, "
        f"{args.steps} steps × {args.repeats} interleaved repeats, "
        f"load average {os.getloadavg()[0]:.2f} at start\n"
    )
    ref = "torch" if "torch" in variants else variants[0]
    print(
        f"| model | variant | train img/s (min–max) | vs {ref} | eval img/s (min–max) "
        f"| vs {ref} | peak memory MB |"
    )
    print("|---|---|---|---|---|---|---|", flush=True)
    rng = np.random.default_rng(0)
    for name in models:
        size = image_size_of(name, args.image_size)
        images, labels = random_batch(rng, args.batch_size, size)
        runners = {}
        for v in variants:
            if v != "torch":
                runners[v] = mlx_runner(name, v, images, labels, args.precision)
            elif (peer := torch_model(name, size)) is not None:
                runners[v] = torch_runner(peer, images, labels, gpu, args.precision)
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
        base = runners.get("torch") or (None if "torch" in variants else runners[variants[0]])
        for variant, runner in runners.items():
            print(table_row(f"{name} ({size}×{size})", variant, runner, base, gpu), flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")


def table_row(model: str, variant: str, runner: Runner, base: Runner | None, gpu: bool) -> str:
    """One markdown row: median images/s (spread) and the per-repeat median ratio to ``base``
    for training and inference, and the peak memory."""
    cells = []
    for kind in ("train", "eval"):
        values = runner.samples[kind]
        median = statistics.median(values)
        ratio = "– (no peer)"
        if base is not None:
            pairs = zip(values, base.samples[kind], strict=True)
            ratio = f"{statistics.median(v / b for v, b in pairs):.2f}×"  # per repeat
        cells.append(f"{median:.1f} ({min(values):.1f}–{max(values):.1f}) | {ratio}")
    memory = f"{runner.memory / 2**20:.0f}"
    if variant == "torch" and not gpu:
        memory += " (RSS growth)"
    return f"| {model} | {variant} | " + " | ".join(cells) + f" | {memory} |"


if __name__ == "__main__":
    main()
