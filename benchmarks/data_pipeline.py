"""Images per second of the CIFAR augmentation pipeline: mlxvision vs NumPy vs Pillow.

The pipeline is the usual CIFAR one: pad by 4 and crop 32×32 at a random place, flip left–right
with probability 1/2, scale to [0, 1] and normalize per channel. The data are in memory as
``uint8`` N×32×32×3 (random pixels: the cost does not depend on them). Every method turns the
whole data set, in a shuffled order and in batches, into normalized float32 NHWC batches:

- ``mlxvision DataLoader``: gather, copy to the device and transform on the device with
  ``Compose(..., compile=True)``, the next batch prefetched; the consumer waits for every batch
  (``mx.eval``), the least favourable case for prefetching. Also without prefetch, without
  compiling the transforms, and the transforms alone on batches already on the device.
- ``NumPy (vectorized)``: the same work per batch with whole-batch NumPy operations.
- ``Pillow + NumPy (per image)``: torchvision's classic per-image way (``ImageOps.expand``,
  ``crop``, ``transpose``, then NumPy for the float conversion), batches stacked.

Each row is the median of ``--repeats`` passes over the data. Usage::

    python benchmarks/data_pipeline.py [--samples 50000] [--batch-size 512] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

import mlxvision
from mlxvision.data import ArrayDataset, DataLoader
from mlxvision.data import transforms as T

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
PAD = 4


def mlx_transform(compile: bool) -> T.Compose:
    steps = [T.RandomCrop(32, padding=PAD), T.RandomHorizontalFlip(), T.ToTensor()]
    return T.Compose([*steps, T.Normalize(MEAN, STD)], compile=compile)


def run_loader(dataset: ArrayDataset, batch_size: int, prefetch: bool) -> Callable[[int], None]:
    import mlx.core as mx

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, prefetch=prefetch)

    def epoch(_: int) -> None:
        for images, labels in loader:
            mx.eval(images, labels)

    return epoch


def run_transforms_only(images: np.ndarray, batch_size: int) -> Callable[[int], None]:
    import mlx.core as mx

    transform = mlx_transform(compile=True)
    batches = [mx.array(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    mx.eval(batches)

    def epoch(seed: int) -> None:
        keys = mx.random.split(mx.random.key(seed), len(batches))
        for b, batch in enumerate(batches):
            mx.eval(transform(batch, key=keys[b]))

    return epoch


def run_numpy(images: np.ndarray, batch_size: int) -> Callable[[int], None]:
    from numpy.lib.stride_tricks import sliding_window_view

    mean = np.array(MEAN, np.float32)
    inv_std = np.array([1 / s for s in STD], np.float32)

    def epoch(seed: int) -> None:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(images))
        for start in range(0, len(images), batch_size):
            batch = images[order[start : start + batch_size]]
            n = len(batch)
            padded = np.pad(batch, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))
            windows = sliding_window_view(padded, (32, 32), axis=(1, 2))  # N×9×9×C×32×32
            top = rng.integers(0, 2 * PAD + 1, n)
            left = rng.integers(0, 2 * PAD + 1, n)
            crops = windows[np.arange(n), top, left].transpose(0, 2, 3, 1)
            flip = rng.random(n) < 0.5
            crops = np.where(flip[:, None, None, None], crops[:, :, ::-1], crops)
            _ = (crops.astype(np.float32) * np.float32(1 / 255) - mean) * inv_std

    return epoch


def run_pillow(images: np.ndarray, batch_size: int) -> Callable[[int], None]:
    from PIL import Image, ImageOps

    mean = np.array(MEAN, np.float32)
    inv_std = np.array([1 / s for s in STD], np.float32)

    def one(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        picture = ImageOps.expand(Image.fromarray(image), border=PAD, fill=0)
        top, left = rng.integers(0, 2 * PAD + 1, 2)
        picture = picture.crop((left, top, left + 32, top + 32))
        if rng.random() < 0.5:
            picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return (np.asarray(picture, np.float32) * np.float32(1 / 255) - mean) * inv_std

    def epoch(seed: int) -> None:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(images))
        for start in range(0, len(images), batch_size):
            _ = np.stack([one(images[i], rng) for i in order[start : start + batch_size]])

    return epoch


def measure(epoch: Callable[[int], None], samples: int, repeats: int) -> list[float]:
    epoch(repeats)  # warm up (allocations, first-call costs) with a seed not measured
    rates = []
    for r in range(repeats):
        began = time.perf_counter()
        epoch(r)
        rates.append(samples / (time.perf_counter() - began))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--pillow-repeats", type=int, default=None, help="repeats of the slow per-image row"
    )
    args = parser.parse_args()
    import mlx.core as mx
    import PIL

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.samples, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.samples)
    compiled = ArrayDataset(images, labels, transform=mlx_transform(compile=True))
    eager = compiled.with_transform(mlx_transform(compile=False))
    bs = args.batch_size
    rows = [
        ("mlxvision DataLoader, prefetch", run_loader(compiled, bs, True)),
        ("mlxvision DataLoader, no prefetch", run_loader(compiled, bs, False)),
        ("mlxvision DataLoader, prefetch, Compose not compiled", run_loader(eager, bs, True)),
        (
            "mlxvision transforms only (batches already on the device)",
            run_transforms_only(images, bs),
        ),
        ("NumPy, vectorized per batch", run_numpy(images, bs)),
        ("Pillow + NumPy, per image", run_pillow(images, bs)),
    ]
    results = []
    for name, epoch in rows:
        repeats = args.pillow_repeats if "Pillow" in name and args.pillow_repeats else args.repeats
        rates = measure(epoch, args.samples, repeats)
        results.append((name, statistics.median(rates), min(rates), max(rates), repeats))
    numpy_rate = next(rate for name, rate, *_ in results if name.startswith("NumPy"))

    print(
        f"CIFAR augmentation (pad-crop {PAD}, flip, normalize), {args.samples} uint8 images "
        f"32×32×3, batch {bs}; mlx {mx.__version__} ({mx.default_device()}), numpy "
        f"{np.__version__}, Pillow {PIL.__version__}, mlxvision {mlxvision.__version__}, "
        f"{platform.machine()} with {os.cpu_count()} CPUs\n"
    )
    print("| pipeline | images/s (median) | min – max | × NumPy | repeats |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, rate, low, high, repeats in results:
        print(
            f"| {name} | {rate:,.0f} | {low:,.0f} – {high:,.0f} | {rate / numpy_rate:.2f} "
            f"| {repeats} |"
        )


if __name__ == "__main__":
    main()
