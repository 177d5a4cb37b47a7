"""Accuracy and training time of a recipe over several seeds, as a markdown table.

    python benchmarks/recipe_accuracy.py --recipe cifar10_resnet --data DATA/cifar10-jpeg \
        --seeds 0 1 --out runs/bench

Training time is the sum of the epochs' training loops (validation and checkpoint writing
excluded); the first epoch of the first run includes compiling the step, so ``--warmup``
first trains one short epoch to fill MLX's kernel caches. Prints the table last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import mlxvision
from mlxvision.recipes import get_recipe, list_recipes, run_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True, choices=list_recipes())
    parser.add_argument("--data", help="dataset folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--warmup", action="store_true", help="compile with a 1-epoch run first")
    parser.add_argument("--json", help="also write the per-run numbers to this file")
    args = parser.parse_args()

    recipe = get_recipe(args.recipe)
    if args.epochs:
        recipe = recipe.replace(epochs=args.epochs)
    if args.warmup:
        began = time.perf_counter()
        run_recipe(
            recipe.replace(epochs=1),
            data_root=args.data,
            out=args.out,
            name="warmup",
            verbose=False,
        )
        print(f"warm-up (1 epoch, compiling included): {time.perf_counter() - began:.1f} s")
    rows = []
    for seed in args.seeds:
        result = run_recipe(
            recipe.replace(seed=seed),
            data_root=args.data,
            out=args.out,
            name=f"{recipe.name}-seed{seed}",
            verbose=False,
        )
        history = [
            json.loads(line)
            for line in (Path(result["run"]) / "metrics.jsonl").read_text().splitlines()
        ]
        train_seconds = sum(r["seconds"] for r in history)
        rows.append(
            {
                "seed": seed,
                "test_accuracy": result["test_accuracy"],
                "last_epoch_val_accuracy": history[-1]["val_accuracy"],
                "train_seconds": train_seconds,
                "wall_seconds": result["train_seconds"],
                "images_per_sec": statistics.median(r["images_per_sec"] for r in history),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"recipe": recipe.to_dict(), "runs": rows, "info": mlxvision.info()}, indent=2
            )
        )
    accuracies = [100 * r["test_accuracy"] for r in rows]
    print()
    print(f"Command: `python benchmarks/recipe_accuracy.py {' '.join(sys.argv[1:])}`  ")
    info = mlxvision.info()
    print(
        f"Machine: {info['platform']}, {info['device']}, MLX {info['mlx']}, "
        f"mlxvision {info['mlxvision']}, BLAS {info['blas']}"
    )
    print()
    print(
        "| seed | test accuracy (%) | training time (s) | wall time (s) | images/s (median epoch) |"
    )
    print("|---|---|---|---|---|")
    for r, acc in zip(rows, accuracies, strict=True):
        print(
            f"| {r['seed']} | {acc:.2f} | {r['train_seconds']:.1f} | {r['wall_seconds']:.1f} "
            f"| {r['images_per_sec']:,.0f} |"
        )
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    print(
        f"| mean | {statistics.mean(accuracies):.2f} (std {spread:.2f}) | "
        f"{statistics.mean(r['train_seconds'] for r in rows):.1f} | | |"
    )


if __name__ == "__main__":
    main()
