"""Hyperparameter search with Optuna: learning rate, batch size, weight decay, augmentation.

Each trial trains a recipe into its own run folder and is judged on a validation split held
out of the training images (never on the test split); trials that lag are pruned early. The
best trial's settings are then printed as the recipe to train with.

Without --data it tunes the `digits` recipe on the embedded digits; with --data, any recipe
(`--recipe cifar10_resnet`, ...). Needs Optuna: pip install "mlxvision[tune]".

Run:
    python examples/hyperparameter_search.py --trials 10 --epochs 5
    python examples/hyperparameter_search.py --recipe cifar10_resnet --data data/cifar10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlxvision.recipes import get_recipe, list_recipes
from mlxvision.tune import SUMMARY_FILE, tune


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="digits", choices=list_recipes())
    parser.add_argument("--data", help="dataset folder (not needed for digits)")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5, help="epochs per trial")
    parser.add_argument("--val-split", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, help="start no trial after this many seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="tune-output", help="folder for the trials")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    recipe = get_recipe(args.recipe).replace(epochs=args.epochs)
    print(
        f"Searching {args.trials} variations of recipe {recipe.name} ({recipe.model} on "
        f"{recipe.dataset}, {recipe.epochs} epoch(s) each); starting point: lr {recipe.lr:g}, "
        f"batch size {recipe.batch_size}"
    )
    study = tune(
        recipe,
        args.trials,
        data_root=args.data,
        out=args.out,
        seed=args.seed,
        val_split=args.val_split,
        timeout=args.timeout,
    )
    summary = json.loads((Path(args.out) / SUMMARY_FILE).read_text())
    states = [t["state"] for t in summary["trials"]]
    print(
        f"{states.count('COMPLETE')} trials completed, {states.count('PRUNED')} pruned; "
        f"summary in {Path(args.out) / SUMMARY_FILE}"
    )
    best = recipe.replace(**study.best_params)
    run = Path(args.out) / f"trial-{study.best_trial.number:03d}"
    result = json.loads((run / "result.json").read_text())
    print(
        f"Best: trial {study.best_trial.number}, validation accuracy "
        f"{100 * study.best_value:.2f}%, test accuracy {100 * result['test_accuracy']:.2f}% "
        f"(model in {run / 'model.safetensors'})"
    )
    chosen = ", ".join(f"{key}={getattr(best, key):.3g}" for key in sorted(study.best_params))
    print(f"Best settings: get_recipe({recipe.name!r}).replace({chosen})")


if __name__ == "__main__":
    main()
