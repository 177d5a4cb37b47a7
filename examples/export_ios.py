"""Train briefly, then export for deployment: Core ML (iOS/macOS), ONNX and .mlxfn.

Writes, into --out:
- <Name>Classifier.mlpackage: Core ML taking an image (normalization built in) and returning
  classLabel and classLabel_probs, ready for Vision in a Swift app;
- <Name>Tensor.mlpackage: Core ML taking a float NCHW tensor (checked numerically on macOS);
- model.onnx: ONNX taking NCHW float32 images, any batch size (checked with onnxruntime);
- model.mlxfn: the MLX function, loadable from Python, C++ and Swift (checked with MLX).
Each file that a runtime on this machine can run is compared with the MLX model.

Without --data it trains on the embedded digits; with --data and --dataset on any dataset the
command line knows.

Run:
    python examples/export_ios.py
    python examples/export_ios.py --data data/cifar10 --dataset cifar10 --epochs 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

import mlxvision as mv
from mlxvision.data import DataLoader
from mlxvision.data import transforms as T
from mlxvision.export import export_coreml, export_mlxfn, export_onnx, load_mlxfn, verify
from mlxvision.recipes import DATASETS, load_datasets


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset folder (default: the embedded digits)")
    parser.add_argument("--dataset", default="digits", choices=DATASETS)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, help="train on this many batches per epoch")
    parser.add_argument("--check-images", type=int, default=100, help="test images to compare")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="export-output", help="folder for the files")
    return parser.parse_args()


def report(result) -> None:
    if result.ran:
        print(
            f"  verified {Path(result.path).name} with {result.runtime}: max abs error "
            f"{result.max_abs_error:.2e}, max relative error {result.max_rel_error:.2e}"
        )
    else:
        print(f"  {Path(result.path).name}: not run here ({result.reason})")


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mx.random.seed(args.seed)

    # A briefly trained model to export.
    train, test = load_datasets(args.dataset, args.data)
    mean, std = train.mean, train.std
    normalize = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    train, test = train.with_transform(normalize), test.with_transform(normalize)
    if args.steps:
        order = np.random.default_rng(args.seed).permutation(len(train))
        train = train.subset(np.sort(order[: args.steps * 64]))
    height, width, channels = train.image_shape
    model = mv.create_model(
        "simple_cnn",
        num_classes=train.num_classes,
        in_channels=channels,
        input_size=[height, width],
    )
    trainer = mv.Trainer(model, optim.Adam(learning_rate=1e-3), seed=args.seed)
    trainer.fit(DataLoader(train, 64, shuffle=True, drop_last=True), epochs=args.epochs)
    model.eval()
    check = test.subset(np.arange(min(args.check_images, len(test))))
    images, labels = next(iter(DataLoader(check, batch_size=len(check))))
    mlx_classes = np.array(model(images).argmax(axis=-1))
    print(f"MLX accuracy on {len(check)} test images: {100 * np.mean(mlx_classes == labels):.2f}%")

    shape = (1, height, width, channels)  # one NHWC image: what an app classifies
    name = {"digits": "Digits", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}.get(
        args.dataset, args.dataset.title().replace("_", "")
    )

    # Core ML, two ways: an image classifier for apps, and a tensor model we can check here.
    print("Core ML:")
    try:
        app = export_coreml(
            model,
            out / f"{name}Classifier.mlpackage",
            shape,
            image_input=True,
            mean=mean,
            std=std,
            class_labels=train.classes,
            metadata={"description": f"simple_cnn trained on {args.dataset}", "license": "MIT"},
        )
        print(f"  wrote {app}: image in, classLabel and classLabel_probs out")
        tensor = export_coreml(
            model,
            out / f"{name}Tensor.mlpackage",
            shape,
            precision="float16",
            class_labels=train.classes,
        )
        print(f"  wrote {tensor}: float16 compute, NCHW tensor 'images' in")
        report(verify(model, tensor, shape))
    except ImportError as error:
        print(f"  skipped: {error}")

    # ONNX: NCHW float32 images, any batch size.
    print("ONNX:")
    try:
        onnx_path = export_onnx(model, out / "model.onnx", shape)
        print(f"  wrote {onnx_path}")
        report(verify(model, onnx_path, shape))
        import onnxruntime as ort

        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        nchw = np.array(images).transpose(0, 3, 1, 2)
        onnx_classes = session.run(None, {"images": nchw})[0].argmax(axis=-1)
        same = int(np.sum(onnx_classes == mlx_classes))
        print(f"  onnxruntime agrees with MLX on {same} of {len(check)} test images")
    except ImportError as error:
        print(f"  skipped: {error}")

    # .mlxfn: the MLX graph itself, for Python, C++ and Swift programs.
    print(".mlxfn:")
    metadata = {"classes": train.classes, "mean": list(mean), "std": list(std)}
    mlxfn_path = export_mlxfn(model, out / "model", shape, metadata=metadata)
    print(f"  wrote {mlxfn_path}")
    report(verify(model, mlxfn_path, shape))
    forward = load_mlxfn(mlxfn_path)
    mlxfn_classes = [forward(images[i : i + 1]).argmax(axis=-1).item() for i in range(len(check))]
    same = int(np.sum(np.array(mlxfn_classes) == mlx_classes))
    print(f"  the imported function agrees with MLX on {same} of {len(check)} test images")


if __name__ == "__main__":
    main()
