"""The tutorial's complete workflow: data -> model -> training -> test -> save/load -> Core ML.

Without --data it runs offline on the embedded 8×8 digits; with --data it trains on CIFAR-10:
a folder holding the official release (cifar-10-batches-py/, cifar-10-batches-bin/ or their
.tar.gz archives; --download fetches the python release there) or train.tar and test.tar of
JPEG files in <split>/<class>/<file> folders.

Run:
    python examples/cifar10_workflow.py                            # digits, about a minute
    python examples/cifar10_workflow.py --data data --download     # CIFAR-10, 10 epochs
    python examples/cifar10_workflow.py --data data --epochs 1 --steps 50 --test-images 1000
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

import mlxvision as mv
from mlxvision.data import CIFAR10, DataLoader, Digits
from mlxvision.data import transforms as T
from mlxvision.recipes import load_datasets


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="CIFAR-10 folder (default: the embedded digits)")
    parser.add_argument("--download", action="store_true", help="download CIFAR-10 into --data")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    parser.add_argument("--steps", type=int, help="train on this many batches per epoch")
    parser.add_argument("--test-images", type=int, help="test on this many images (a sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="cifar10-workflow-output", help="folder for the files")
    return parser.parse_args()


def cifar10(root: str, download: bool):
    """CIFAR-10's train and test splits from an official release or train.tar/test.tar."""
    folder = Path(root)
    if (folder / "train.tar").is_file() and (folder / "test.tar").is_file():
        return load_datasets("cifar10", folder)  # JPEG files in class folders, read in place
    return CIFAR10(folder, train=True, download=download), CIFAR10(folder, train=False)


def sample(dataset, count: int | None, seed: int):
    """A seeded random subset of ``count`` samples (all of them when ``count`` is None)."""
    if count is None or count >= len(dataset):
        return dataset
    order = np.random.default_rng(seed).permutation(len(dataset))[:count]
    return dataset.subset(np.sort(order))


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mx.random.seed(args.seed)

    # 1. Data: random augmentation for training, plain normalization for testing.
    if args.data:
        name, stem = "cifar10", "CIFAR10"
        train_set, test_set = cifar10(args.data, args.download)
        augment = [T.RandomResizedCrop(32), T.RandomHorizontalFlip()]
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    else:
        name, stem = "digits", "Digits"
        train_set, test_set = Digits(train=True), Digits(train=False)
        augment = [T.RandomCrop(8, padding=1)]  # no flips: a mirrored digit is another shape
        mean, std = Digits.mean, Digits.std
    normalize = [T.ToTensor(), T.Normalize(mean, std)]
    train_set = train_set.with_transform(T.Compose([*augment, *normalize]))
    test_set = test_set.with_transform(T.Compose(normalize))
    if args.steps:
        train_set = sample(train_set, args.steps * args.batch_size, args.seed)
    test_set = sample(test_set, args.test_images, args.seed)
    train_loader = DataLoader(
        train_set, batch_size=args.batch_size, shuffle=True, drop_last=True, seed=args.seed
    )
    test_loader = DataLoader(test_set, batch_size=256)
    height, width, channels = train_set.image_shape
    print(
        f"Data: {len(train_set)} training and {len(test_set)} test images of "
        f"{height}×{width}×{channels} ({name}, {train_set.num_classes} classes)"
    )

    # 2. Model: the tutorial's CNN, sized for the images.
    model = mv.create_model(
        "simple_cnn",
        num_classes=train_set.num_classes,
        in_channels=channels,
        input_size=[height, width],
    )
    print(f"Model: simple_cnn, {mv.models.count_parameters(model):,} parameters")

    # 3. Training: Adam, a compiled step, one line per epoch.
    trainer = mv.Trainer(model, optim.Adam(learning_rate=args.lr), seed=args.seed)
    trainer.fit(train_loader, epochs=args.epochs)

    # 4. Testing: the model in eval mode on images it has never seen.
    result = trainer.evaluate(test_loader)
    print(f"Test Accuracy: {100 * result['accuracy']:.2f}%")
    for label, accuracy in zip(train_set.classes, result["per_class_accuracy"], strict=True):
        print(f"  {label:>10}: {100 * accuracy:.2f}%")

    # 5. Saving and loading: weights plus what rebuilds the model, in one safetensors file.
    metadata = {
        "dataset": name,
        "data_root": args.data,
        "classes": train_set.classes,
        "mean": list(mean),
        "std": list(std),
        "input_shape": [height, width, channels],
    }
    path = mv.save(model, out / f"{name}_cnn", metadata=metadata)
    restored = mv.load(path)
    reloaded = mv.Trainer(restored, verbose=False).evaluate(test_loader)
    print(f"Saved {path}; reloaded accuracy {100 * reloaded['accuracy']:.2f}%")
    images, labels = next(iter(DataLoader(test_set, batch_size=8)))
    predicted = mv.Trainer(restored, verbose=False).predict(images).argmax(axis=-1)
    names = train_set.classes
    print("Predicted:", " ".join(names[i] for i in predicted.tolist()))
    print("True:     ", " ".join(names[i] for i in labels.tolist()))

    # 6. Core ML: an image classifier for iOS and macOS apps, normalization built in.
    try:
        from mlxvision.export import export_coreml

        package = export_coreml(
            restored,
            out / f"{stem}Classifier.mlpackage",
            (1, height, width, channels),
            image_input=True,
            mean=mean,
            std=std,
            class_labels=names,
            metadata={"description": f"simple_cnn trained on {name}", "license": "MIT"},
        )
    except ImportError as error:
        print(f"Skipped the Core ML export: {error}")
        return
    print(
        f"Exported {package} (input: images of {width}×{height} pixels; outputs: classLabel, "
        "classLabel_probs)"
    )
    if platform.system() == "Darwin":
        check_with_core_ml(package, test_set, names, predicted[0].item())
    else:
        print("Core ML runs only on macOS and iOS: copy the .mlpackage to a Mac to use it")


def check_with_core_ml(package: Path, test_set, names: list[str], mlx_class: int) -> None:
    """Classify the first test image with Core ML and compare with MLX (macOS only)."""
    import coremltools as ct
    from PIL import Image

    pixels = test_set.images[0]
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    answer = ct.models.MLModel(str(package)).predict({"images": image})["classLabel"]
    print(f"Core ML says the first test image is {answer}; MLX says {names[mlx_class]}")


if __name__ == "__main__":
    main()
