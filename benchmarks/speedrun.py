"""Time the speed recipe the way the CIFAR-10 speed records do, over several seeds.

One process builds the recipe's compiled step once (:class:`mlxvision.recipes.fast.SpeedRun`),
runs it once on random labels to compile every kernel (reported as the one-time compile
cost, not counted), then trains a fresh model per seed and reports per run:

- ``train s``: from the reset (whitening included) to the end of the last step, the device
  synchronised before and after (``mx.synchronize``);
- ``eval s``: the test-set evaluation with the recipe's test-time augmentation, synchronised;
- the test accuracy with that augmentation.

The record's "time" (airbench) counts training plus the augmented evaluation, so the table
also gives their sum. Usage::

    python benchmarks/speedrun.py --data CIFAR10_DIR [--recipe cifar10_fast] [--runs 5]
        [--set epochs=8 --set model_kwargs.widths=64,256,256 --set options.translate=2 ...]
        [--json results.json]

``CIFAR10_DIR`` holds the python or binary release of CIFAR-10, or ``train.tar`` and
``test.tar`` of JPEG files (see ``mlxvision.recipes.load_datasets``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

import mlxvision
from mlxvision.recipes import get_recipe, load_datasets
from mlxvision.recipes.fast import SpeedRun

mx = mlxvision.import_mlx()


def parse_value(text: str):
    """``3`` → 3, ``0.5`` → 0.5, ``1,2`` → [1, 2], ``bfloat16`` → 'bfloat16'."""
    if "," in text:
        return [parse_value(part) for part in text.split(",")]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def apply_settings(recipe, settings: list[str]):
    fields = recipe.to_dict()
    for setting in settings:
        name, _, text = setting.partition("=")
        if not text:
            raise SystemExit(f"--set {setting!r}: expected NAME=VALUE")
        value = parse_value(text)
        if "." in name:
            outer, inner = name.split(".", 1)
            fields[outer] = {**fields[outer], inner: value}
        else:
            fields[name] = value
    fields.pop("name")
    return recipe.replace(**fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 folder")
    parser.add_argument("--recipe", default="cifar10_fast")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="recipe field NAME=VALUE")
    parser.add_argument("--no-warmup", action="store_true", help="time the first run too")
    parser.add_argument("--json", help="write the per-run numbers here")
    parser.add_argument("--train-limit", type=int, help="train on N random images only")
    args = parser.parse_args()

    recipe = apply_settings(get_recipe(args.recipe), args.set)
    began = time.perf_counter()
    train, test = load_datasets(recipe.dataset, args.data)
    load_seconds = time.perf_counter() - began
    mean, std = recipe.normalize or (train.mean, train.std)
    if args.train_limit:
        picked = np.random.default_rng(0).permutation(len(train))[: args.train_limit]
        train = train.subset(np.sort(picked))
    info = mlxvision.info()
    print(f"command: python {' '.join(sys.argv)}")
    print(
        f"mlxvision {info['mlxvision']}, mlx {info['mlx']}, device {info['device']}, "
        f"blas {info.get('blas')}; data loaded in {load_seconds:.1f} s "
        f"({len(train)} train / {len(test)} test images)"
    )
    print(f"recipe: {json.dumps(recipe.to_dict())}")
    speed = SpeedRun(
        recipe, train.images, train.labels, mean=mean, std=std, num_classes=train.num_classes
    )
    compile_seconds = None
    if not args.no_warmup:
        noise = np.random.default_rng(12345).integers(0, train.num_classes, len(train))
        warm = speed.fit(seed=10_000, labels=noise)
        began = time.perf_counter()
        speed.evaluate(test.images, test.labels)
        mx.synchronize()
        compile_seconds = warm["train_seconds"] + time.perf_counter() - began
        print(f"warm-up run on random labels (compiles every kernel): {compile_seconds:.1f} s")
    runs = []
    for seed in range(args.first_seed, args.first_seed + args.runs):
        timing = speed.fit(seed=seed)
        began = time.perf_counter()
        accuracy = speed.evaluate(test.images, test.labels)
        mx.synchronize()
        eval_seconds = time.perf_counter() - began
        run = {**timing, "eval_seconds": eval_seconds, "test_accuracy": accuracy}
        runs.append(run)
        print(
            f"seed {seed}: train {timing['train_seconds']:.3f} s, eval {eval_seconds:.3f} s, "
            f"test accuracy {100 * accuracy:.2f}%",
            flush=True,
        )
    accuracies = [100 * r["test_accuracy"] for r in runs]
    train_s = [r["train_seconds"] for r in runs]
    total_s = [r["train_seconds"] + r["eval_seconds"] for r in runs]
    print()
    print("| seed | train s | eval s (TTA) | train + eval s | test accuracy % |")
    print("|---|---|---|---|---|")
    for run, accuracy in zip(runs, accuracies, strict=True):
        total = run["train_seconds"] + run["eval_seconds"]
        print(
            f"| {run['seed']} | {run['train_seconds']:.3f} | {run['eval_seconds']:.3f} | "
            f"{total:.3f} | {accuracy:.2f} |"
        )
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    print(
        f"| mean of {len(runs)} | {statistics.mean(train_s):.3f} | "
        f"{statistics.mean(r['eval_seconds'] for r in runs):.3f} | "
        f"{statistics.mean(total_s):.3f} | {statistics.mean(accuracies):.2f} (std {spread:.2f}) |"
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "command": " ".join(sys.argv),
                    "info": {k: str(v) for k, v in info.items()},
                    "recipe": recipe.to_dict(),
                    "compile_seconds": compile_seconds,
                    "runs": runs,
                },
                out,
                indent=2,
            )


if __name__ == "__main__":
    main()
