"""The ``mlxvision`` command: train, evaluate, export and inspect without writing a script."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"


def _datasets(name: str):
    """``(train, test, mean, std, augmentation)`` of a dataset the CLI knows by name."""
    from .data import Digits
    from .data import transforms as T

    if name == "digits":
        augment = [T.RandomCrop(8, padding=1)]
        return Digits(train=True), Digits(train=False), Digits.mean, Digits.std, augment
    raise SystemExit(f"mlxvision: unknown dataset {name!r}; known datasets: digits")


def _transform(mean: Sequence[float], std: Sequence[float], augment: Sequence = ()):
    from .data import transforms as T

    return T.Compose([*augment, T.ToTensor(), T.Normalize(mean, std)])


def _resolve_checkpoint(path: str) -> Path:
    target = Path(path)
    if target.is_dir():
        target = target / MODEL_FILE
    if not target.is_file():
        raise SystemExit(f"mlxvision: no checkpoint at {path} (expected a run folder or a file)")
    return target


def cmd_train(args: argparse.Namespace) -> int:
    import mlx.core as mx
    import mlx.optimizers as optim

    from . import create_model, save
    from .data import DataLoader
    from .engine import Trainer

    mx.random.seed(args.seed)
    train, test, mean, std, augment = _datasets(args.dataset)
    train = train.with_transform(_transform(mean, std, augment))
    test = test.with_transform(_transform(mean, std))
    height, width, channels = train.image_shape
    model = create_model(
        args.model, num_classes=train.num_classes, in_channels=channels, input_size=[height, width]
    )
    run = Path(args.out) / (args.name or time.strftime("%Y%m%d-%H%M%S"))
    run.mkdir(parents=True, exist_ok=bool(args.name))
    config = {
        "dataset": args.dataset,
        "model": args.model,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "schedule": args.schedule,
        "seed": args.seed,
    }
    (run / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    print(f"Training {args.model} on {args.dataset} ({len(train)} train / {len(test)} test images)")
    loader = DataLoader(train, args.batch_size, shuffle=True, drop_last=True, seed=args.seed)
    lr = args.lr
    if args.schedule == "cosine":
        lr = optim.cosine_decay(args.lr, args.epochs * len(loader), end=args.lr * 0.01)
    trainer = Trainer(model, optim.Adam(learning_rate=lr), verbose=not args.quiet)
    test_loader = DataLoader(test, args.batch_size)
    began = time.perf_counter()
    history = trainer.fit(loader, args.epochs, val_loader=test_loader)
    seconds = time.perf_counter() - began
    with open(run / METRICS_FILE, "w") as f:
        for record in history:
            f.write(json.dumps(record) + "\n")
    metadata = {
        "dataset": args.dataset,
        "classes": train.classes,
        "mean": list(mean),
        "std": list(std),
        "input_shape": [height, width, channels],
    }
    path = save(model, run / MODEL_FILE, metadata=metadata)
    final = history[-1]
    print(
        f"Test Accuracy: {100 * final['val_accuracy']:.2f}% (loss {final['val_loss']:.4f}) "
        f"after {args.epochs} epochs in {seconds:.1f} s"
    )
    print(f"Saved {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import load
    from .checkpoint import read_metadata
    from .data import DataLoader
    from .engine import Trainer

    path = _resolve_checkpoint(args.path)
    meta = read_metadata(path)["metadata"]
    dataset = args.dataset or meta.get("dataset")
    if not dataset or "mean" not in meta:
        raise SystemExit(f"mlxvision: {path} does not say which dataset it was trained on")
    test = _datasets(dataset)[1].with_transform(_transform(meta["mean"], meta["std"]))
    model = load(path)
    trainer = Trainer(model, verbose=False)
    result = trainer.evaluate(DataLoader(test, args.batch_size))
    print(
        f"Test Accuracy: {100 * result['accuracy']:.2f}% (loss {result['loss']:.4f}) "
        f"on {len(test)} {dataset} test images"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from . import load
    from .checkpoint import read_metadata
    from .export import export_mlxfn

    path = _resolve_checkpoint(args.path)
    meta = read_metadata(path)["metadata"]
    if "input_shape" not in meta:
        raise SystemExit(f"mlxvision: {path} does not record its input shape; export from Python")
    model = load(path)
    out = Path(args.output) if args.output else path.with_suffix("")
    shape = (args.batch_size, *meta["input_shape"])
    written = export_mlxfn(model, out, shape, shapeless=args.shapeless, metadata=meta)
    print(f"Exported {written} (input {list(shape)}, NHWC float32)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .backend import info

    for key, value in info().items():
        print(f"{key}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlxvision", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and save a run folder")
    train.add_argument("--dataset", default="digits", help="dataset name (default: digits)")
    train.add_argument("--model", default="simple_cnn", help="registry name (default: simple_cnn)")
    train.add_argument("--epochs", type=int, default=20)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    train.add_argument(
        "--schedule",
        choices=["cosine", "constant"],
        default="cosine",
        help="learning rate: cosine decay to lr/100 over the run (default), or constant",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="runs", help="folder for run folders (default: runs)")
    train.add_argument("--name", help="run folder name (default: a timestamp)")
    train.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a checkpoint on its test split")
    evaluate.add_argument("path", help="run folder or .safetensors checkpoint")
    evaluate.add_argument("--dataset", help="dataset name (default: the one it was trained on)")
    evaluate.add_argument("--batch-size", type=int, default=256)
    evaluate.set_defaults(run=cmd_evaluate)

    export = commands.add_parser("export", help="export a checkpoint for deployment")
    export.add_argument("path", help="run folder or .safetensors checkpoint")
    export.add_argument("--format", choices=["mlxfn"], default="mlxfn")
    export.add_argument("--output", help="output file (default: beside the checkpoint)")
    export.add_argument("--batch-size", type=int, default=1, help="example batch size")
    export.add_argument("--shapeless", action="store_true", help="accept any batch size")
    export.set_defaults(run=cmd_export)

    info = commands.add_parser("info", help="versions, device and BLAS in use")
    info.set_defaults(run=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError

    try:
        return args.run(args)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"mlxvision {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
