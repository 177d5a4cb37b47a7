"""Train on your own images: class folders (or .tar archives of them) read by ImageFolder.

--data names a folder holding train/ and test/ (each a folder or a .tar of <class>/<image>
files), or a single folder of class folders, of which a seeded fifth is kept for testing.
Without --data the script first writes a tiny folder of PNG files of its own (the embedded
digits, enlarged to random sizes and tinted), so it runs offline.

Run:
    python examples/imagefolder_training.py                       # makes its own PNG folder
    python examples/imagefolder_training.py --data photos --image-size 64 --epochs 20
"""

from __future__ import annotations

import argparse
import struct
import zlib
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

import mlxvision as mv
from mlxvision.data import DataLoader, Digits, ImageFolder
from mlxvision.data import transforms as T


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="image folder (default: a generated folder of PNGs)")
    parser.add_argument("--image-size", type=int, default=16, help="resize and crop to this")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--per-class", type=int, default=40, help="generated training images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="imagefolder-output", help="folder for the files")
    return parser.parse_args()


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Write an RGB uint8 ``H×W×3`` array as a PNG file (no imaging library needed)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    png = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png)


def make_png_folder(root: Path, per_class: int, seed: int) -> Path:
    """``root/train/<digit>/*.png`` and ``root/test/<digit>/*.png`` of varied sizes."""
    rng = np.random.default_rng(seed)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for split, data, count in (
        ("train", Digits(train=True), per_class),
        ("test", Digits(train=False), max(1, per_class // 4)),
    ):
        for digit, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, index in enumerate(np.flatnonzero(data.labels == digit)[:count]):
                size = int(rng.integers(12, 25))  # every image has its own size
                grid = (np.arange(size) * 8) // size  # nearest-neighbour enlargement
                grey = data.images[index, grid][:, grid, 0].astype(np.float32) / 255
                tint = rng.uniform(0.5, 1.0, size=3)
                write_png(folder / f"{i:03d}.png", (grey[..., None] * tint * 255).astype(np.uint8))
    return root


def split_folder(root: Path) -> tuple[Path, Path | None]:
    """The train and test parts of ``root`` (folders or .tar), or ``(root, None)``."""
    parts = []
    for split in ("train", "test"):
        found = [p for p in (root / split, root / f"{split}.tar") if p.exists()]
        parts.append(found[0] if found else None)
    return (parts[0], parts[1]) if parts[0] and parts[1] else (root, None)


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mx.random.seed(args.seed)
    if args.data:
        root = Path(args.data)
    else:
        root = make_png_folder(out / "pngs", args.per_class, args.seed)
        print(f"Wrote a folder of PNG files of varied sizes: {root}")

    # Decode every image once (in parallel, outside Python's GIL), resized and center-cropped.
    size = args.image_size
    train_root, test_root = split_folder(root)
    train_folder = ImageFolder(train_root, image_size=size)
    print(f"Found {train_folder} with classes {train_folder.classes}")
    train_set = train_folder.to_arrays()
    if test_root is not None:
        test_set = ImageFolder(test_root, image_size=size).to_arrays()
        if test_set.classes != train_set.classes:
            raise SystemExit(f"{test_root}: its classes differ from those of {train_root}")
    else:  # no test split given: keep a seeded fifth of the images for testing
        order = np.random.default_rng(args.seed).permutation(len(train_set))
        cut = len(order) // 5
        train_set, test_set = train_set.subset(order[cut:]), train_set.subset(order[:cut])

    # Per-channel statistics of the training images, then augmentation on the device.
    pixels = train_set.images.astype(np.float64) / 255
    mean = pixels.mean(axis=(0, 1, 2)).round(4).tolist()
    std = pixels.std(axis=(0, 1, 2)).round(4).tolist()
    normalize = [T.ToTensor(), T.Normalize(mean, std)]
    augment = [T.RandomResizedCrop(size, scale=(0.6, 1.0))]
    if args.data:
        augment.append(T.RandomHorizontalFlip())  # right for photos; digits must not be mirrored
    train_set = train_set.with_transform(T.Compose([*augment, *normalize]))
    test_set = test_set.with_transform(T.Compose(normalize))
    print(f"Data: {len(train_set)} training and {len(test_set)} test images of {size}×{size}")

    model = mv.create_model(
        "simple_cnn", num_classes=train_set.num_classes, in_channels=3, input_size=size
    )
    trainer = mv.Trainer(model, optim.Adam(learning_rate=args.lr), seed=args.seed)
    loader = DataLoader(
        train_set,
        batch_size=min(args.batch_size, len(train_set)),
        shuffle=True,
        drop_last=True,
        seed=args.seed,
    )
    trainer.fit(loader, epochs=args.epochs)
    result = trainer.evaluate(DataLoader(test_set, batch_size=256))
    print(f"Test Accuracy: {100 * result['accuracy']:.2f}%")

    metadata = {
        "classes": train_set.classes,
        "mean": mean,
        "std": std,
        "input_shape": [size, size, 3],
    }
    path = mv.save(model, out / "imagefolder_cnn", metadata=metadata)
    print(f"Saved {path}")


if __name__ == "__main__":
    main()
