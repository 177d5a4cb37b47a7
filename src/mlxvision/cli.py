"""The ``mlxvision`` command: train, evaluate, export and inspect without writing a script."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

MODEL_FILE = "model.safetensors"


def _model_path(path: str) -> Path:
    target = Path(path)
    if target.is_dir() and (target / MODEL_FILE).is_file():
        return target / MODEL_FILE
    if not target.exists():
        raise SystemExit(f"mlxvision: no checkpoint at {path} (expected a run folder or a file)")
    return target


def without_option(argv: Sequence[str], option: str) -> list[str]:
    """``argv`` without ``option`` and its value (``--option V`` or ``--option=V``).

    Example:
        >>> without_option(["train", "--processes", "2", "--epochs=3"], "--processes")
        ['train', '--epochs=3']
    """
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            kept.append(arg)
    return kept


def cmd_train(args: argparse.Namespace) -> int:
    from .recipes import Recipe, get_recipe, run_recipe
    from .recipes.run import CONFIG_FILE

    if args.processes < 1:
        raise ValueError(f"--processes: expected a positive number, got {args.processes}")
    if args.processes > 1:
        if "MLX_RANK" in os.environ:
            raise ValueError("--processes: already one process of a distributed job")
        from .engine.local_launch import launch_local

        child = [sys.executable, "-m", "mlxvision.cli"]
        child += without_option(args.argv, "--processes")
        if not args.distributed:
            child.append("--distributed")
        return launch_local(child, args.processes)

    if args.resume:
        saved = Path(args.resume) / CONFIG_FILE
        if not saved.is_file():
            raise SystemExit(f"mlxvision: {args.resume} is not a run folder (no {CONFIG_FILE})")
        recipe = Recipe.from_dict(json.loads(saved.read_text()))
    else:
        recipe = get_recipe(args.recipe)
    overrides = {
        "epochs": int(args.epochs) if args.epochs and args.epochs.is_integer() else args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "model": args.model,
        "precision": args.precision,
        "seed": args.seed,
        "dataset": args.dataset,
        "schedule": args.schedule,
    }
    changes = {k: v for k, v in overrides.items() if v is not None}
    if args.model and args.model != recipe.model:
        changes["model_kwargs"] = {}  # the recipe's model options belong to its own model
    recipe = recipe.replace(**changes)
    extra_callbacks = []
    if args.memory_cap is not None:
        from .engine.memory_cap import MemoryCap

        extra_callbacks.append(MemoryCap(slack=args.memory_cap))
    run_recipe(
        recipe,
        data_root=args.data,
        out=args.out,
        name=args.name,
        resume=args.resume,
        verbose=not args.quiet,
        distributed=args.distributed,
        extra_callbacks=extra_callbacks,
    )
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .recipes import get_recipe
    from .tune import tune

    recipe = get_recipe(args.recipe)
    if args.epochs:
        recipe = recipe.replace(epochs=args.epochs)
    tune(
        recipe,
        args.trials,
        data_root=args.data,
        out=args.out,
        seed=args.seed,
        val_split=args.val_split,
        timeout=args.timeout,
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import load
    from .checkpoint import read_metadata
    from .data import DataLoader
    from .engine import Trainer
    from .recipes import eval_transform, load_datasets

    path = _model_path(args.path)
    meta = read_metadata(path)["metadata"] if path.is_file() else {}
    if path.is_dir():
        meta = read_metadata(_checkpoint_model(path))["metadata"]
    dataset = args.dataset or meta.get("dataset")
    if not dataset or "mean" not in meta:
        raise SystemExit(f"mlxvision: {path} does not say which dataset it was trained on")
    _, test = load_datasets(dataset, args.data or meta.get("data_root"))
    test = test.with_transform(eval_transform(meta["mean"], meta["std"]))
    model = load(path, ema=args.ema)
    result = Trainer(model, verbose=False, tta=args.tta).evaluate(DataLoader(test, args.batch_size))
    print(
        f"Test Accuracy: {100 * result['accuracy']:.2f}% (loss {result['loss']:.4f}, "
        f"top-5 {100 * result['top5']:.2f}%) on {len(test)} {dataset} test images"
    )
    if args.per_class:
        classes = meta.get("classes") or [str(i) for i in range(len(result["per_class_accuracy"]))]
        for name, accuracy in zip(classes, result["per_class_accuracy"], strict=True):
            print(f"  {name}: {100 * accuracy:.2f}%")
    return 0


def _checkpoint_model(path: Path) -> Path:
    from .checkpoint import resolve_checkpoint

    return resolve_checkpoint(path) / MODEL_FILE


def cmd_export(args: argparse.Namespace) -> int:
    from . import __version__, load
    from .checkpoint import read_metadata
    from .export import export_coreml, export_mlxfn, export_onnx, verify

    path = _model_path(args.path)
    meta = read_metadata(path if path.is_file() else _checkpoint_model(path))["metadata"]
    if "input_shape" not in meta:
        raise SystemExit(f"mlxvision: {path} does not record its input shape; export from Python")
    model = load(path)
    suffix = {"mlxfn": ".mlxfn", "onnx": ".onnx", "coreml": ".mlpackage"}[args.format]
    out = Path(args.output) if args.output else path.with_suffix(suffix)
    shape = (args.batch_size, *meta["input_shape"])
    if args.format == "mlxfn":
        written = export_mlxfn(model, out, shape, shapeless=args.shapeless, metadata=meta)
        layout = "NHWC float32"
    elif args.format == "onnx":
        written = export_onnx(model, out, shape)
        layout = "NCHW float32, any batch size"
    else:
        image = args.image_input
        written = export_coreml(
            model,
            out,
            (1, *meta["input_shape"]) if image else shape,
            precision="float16" if args.fp16 else "float32",
            image_input=image,
            mean=meta.get("mean") if image else None,
            std=meta.get("std") if image else None,
            class_labels=meta.get("classes"),
            metadata={
                "description": f"{meta.get('recipe', 'mlxvision')} model trained on "
                f"{meta.get('dataset', 'unknown data')}",
                "version": __version__,
            },
        )
        grey = meta["input_shape"][-1] == 1
        layout = ("a grayscale" if grey else "an RGB") + " image" if image else "NCHW float32"
    print(f"Exported {written} (input {layout}; example shape NHWC {list(shape)})")
    if args.format == "coreml" and args.image_input:
        print("Not compared with MLX here: image inputs run only in Core ML on Apple devices")
        return 0
    result = verify(model, written, shape)
    if result.ran:
        print(
            f"Verified with {result.runtime}: max abs error {result.max_abs_error:.2e}, "
            f"max relative error {result.max_rel_error:.2e}"
        )
    else:
        print(f"Not compared with MLX here ({result.reason})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .checkpoint import inspect

    summary = inspect(args.path)
    if not args.tensors:
        summary["tensors"] = f"{len(summary['tensors'])} tensors (--tensors lists them)"
    print(json.dumps(summary, indent=2))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .backend import info

    for key, value in info().items():
        print(f"{key}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .engine.memory_cap import DEFAULT_SLACK
    from .recipes import DATASETS, list_recipes

    parser = argparse.ArgumentParser(prog="mlxvision", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a recipe and save a run folder")
    train.add_argument("--recipe", default="digits", choices=list_recipes(), help="default: digits")
    train.add_argument("--data", help="folder of the dataset (not needed for digits)")
    train.add_argument("--dataset", choices=DATASETS, help="override the recipe's dataset")
    train.add_argument("--model", help="override the recipe's model (a registry name)")
    train.add_argument("--epochs", type=float, help="epochs (fractional only for speed recipes)")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float, help="peak learning rate")
    train.add_argument("--schedule", choices=["onecycle", "cosine", "constant"])
    train.add_argument("--precision", choices=["float32", "bfloat16", "float16"])
    train.add_argument("--seed", type=int)
    train.add_argument("--out", default="runs", help="folder for run folders (default: runs)")
    train.add_argument("--name", help="run folder name (default: a timestamp)")
    train.add_argument("--resume", help="run folder to continue from its last checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    train.add_argument(
        "--memory-cap",
        type=float,
        nargs="?",
        const=DEFAULT_SLACK,
        metavar="SLACK",
        help=f"hold memory at the step's working set plus SLACK (default {DEFAULT_SLACK}), "
        "measured on the second step: a lower peak at some speed (mlxvision.engine.memory_cap)",
    )
    train.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over the processes started by mlx.launch (batch size is global)",
    )
    train.add_argument(
        "--processes",
        type=int,
        default=1,
        help="train data-parallel in this many processes on this machine, each with an equal "
        "share of the cores (batch size is global; on a CPU, 2 per 2 cores is fastest)",
    )
    train.set_defaults(run=cmd_train)

    tune = commands.add_parser("tune", help="search learning rate, weight decay, batch size, ...")
    tune.add_argument("--recipe", default="digits", choices=list_recipes(), help="default: digits")
    tune.add_argument("--data", help="folder of the dataset (not needed for digits)")
    tune.add_argument("--trials", type=int, default=20)
    tune.add_argument("--epochs", type=int, help="epochs per trial (default: the recipe's)")
    tune.add_argument("--val-split", type=float, default=0.1, help="held-out training fraction")
    tune.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--out", default="tune", help="folder for the trials (default: tune)")
    tune.set_defaults(run=cmd_tune)

    evaluate = commands.add_parser("evaluate", help="test a saved model on its test split")
    evaluate.add_argument("path", help="run folder, checkpoint folder or .safetensors file")
    evaluate.add_argument("--data", help="dataset folder (default: the one it was trained on)")
    evaluate.add_argument("--dataset", choices=DATASETS, help="default: the one it was trained on")
    evaluate.add_argument("--batch-size", type=int, default=256)
    evaluate.add_argument("--ema", action="store_true", help="use the EMA weights of a checkpoint")
    evaluate.add_argument("--tta", action="store_true", help="average with mirrored images")
    evaluate.add_argument("--per-class", action="store_true", help="print each class's accuracy")
    evaluate.set_defaults(run=cmd_evaluate)

    export = commands.add_parser("export", help="export a saved model for deployment")
    export.add_argument("path", help="run folder or .safetensors file")
    export.add_argument("--format", choices=["mlxfn", "onnx", "coreml"], default="mlxfn")
    export.add_argument("--fp16", action="store_true", help="Core ML: float16 compute")
    export.add_argument(
        "--image-input",
        action="store_true",
        help="Core ML: take an RGB image, with the model's normalization built in",
    )
    export.add_argument("--output", help="output file (default: beside the model)")
    export.add_argument("--batch-size", type=int, default=1, help="example batch size")
    export.add_argument(
        "--shapeless",
        action="store_true",
        help="mlxfn: one file for any batch size, where the model allows it (checked; most "
        "models with pooling or Linear layers fix the batch size and are refused)",
    )
    export.set_defaults(run=cmd_export)

    inspect = commands.add_parser("inspect", help="print what a checkpoint holds")
    inspect.add_argument("path", help="run folder, checkpoint folder or .safetensors file")
    inspect.add_argument("--tensors", action="store_true", help="list every tensor")
    inspect.set_defaults(run=cmd_inspect)

    info = commands.add_parser("info", help="versions, device and BLAS in use")
    info.set_defaults(run=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    from .checkpoint import CheckpointError

    try:
        return args.run(args)
    except (CheckpointError, FileNotFoundError, ValueError, ImportError) as err:
        print(f"mlxvision {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
