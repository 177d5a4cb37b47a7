"""Hyperparameter search over a recipe with Optuna: each trial is a normal run folder.

Searches the learning rate, weight decay (for SGD/AdamW recipes), batch size and augmentation
strength (crop padding); bad trials are pruned by their validation accuracy per epoch.

Example:
    >>> from mlxvision.recipes import get_recipe
    >>> import tempfile
    >>> study = tune(get_recipe("digits").replace(epochs=1), trials=2, out=tempfile.mkdtemp(),
    ...              verbose=False)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .engine.callbacks import Callback
from .recipes import Recipe, run_recipe

SUMMARY_FILE = "tune.json"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError(
            "hyperparameter search needs Optuna: pip install 'mlxvision[tune]'"
        ) from None
    return optuna


class _ReportToTrial(Callback):
    """Tell Optuna each epoch's validation accuracy; stop the run if the trial is pruned."""

    def __init__(self, trial) -> None:
        self.trial = trial
        self.pruned = False

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        self.trial.report(record["val_accuracy"], record["epoch"])
        if self.trial.should_prune():
            self.pruned = True
            trainer.stop_training = True


def suggest(trial, recipe: Recipe) -> Recipe:
    """The recipe with this trial's choices: lr in [lr/10, lr·10] (log), weight decay in
    [1e-5, 1e-2] (log, SGD/AdamW only), batch size from {b/2, b, 2b}, crop padding 0..2p.

    ``trial`` is an Optuna trial; :func:`tune` calls this once per trial.

    Example:
        >>> import optuna
        >>> from mlxvision.recipes import get_recipe
        >>> recipe = get_recipe("digits")  # Adam, lr 1e-3, batch 64, crop padding 1
        >>> trial = optuna.trial.FixedTrial({"lr": 3e-3, "batch_size": 128, "crop_padding": 2})
        >>> chosen = suggest(trial, recipe)
        >>> chosen.lr, chosen.batch_size, chosen.crop_padding, chosen.epochs == recipe.epochs
        (0.003, 128, 2, True)
    """
    changes: dict[str, Any] = {
        "lr": trial.suggest_float("lr", recipe.lr / 10, recipe.lr * 10, log=True),
        "batch_size": trial.suggest_categorical(
            "batch_size", [max(8, recipe.batch_size // 2), recipe.batch_size, recipe.batch_size * 2]
        ),
    }
    if recipe.optimizer in ("sgd", "adamw"):
        changes["weight_decay"] = trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True)
    if "crop" in recipe.augment:
        changes["crop_padding"] = trial.suggest_int("crop_padding", 0, 2 * recipe.crop_padding)
    return recipe.replace(**changes)


def tune(
    recipe: Recipe,
    trials: int = 20,
    *,
    data_root: str | os.PathLike | None = None,
    out: str | os.PathLike = "tune",
    seed: int = 0,
    val_split: float = 0.1,
    timeout: float | None = None,
    verbose: bool = True,
):
    """Search ``trials`` variations of ``recipe``; return the Optuna study.

    Trials are judged on a validation split held out of the training data (``val_split``), never
    on the test split, which each run still reports. Every trial trains into
    ``out/trial-NNN`` (a normal run folder); ``out/tune.json`` summarises the trials and the
    best one. Trials whose validation accuracy lags the median of earlier trials at the same
    epoch are pruned (Optuna's ``MedianPruner``).

    Example:
        >>> import tempfile
        >>> from mlxvision.recipes import get_recipe
        >>> recipe, out = get_recipe("digits").replace(epochs=2), tempfile.mkdtemp()
        >>> study = tune(recipe, trials=4, out=out, verbose=False)  # doctest: +SKIP
        >>> sorted(study.best_params)  # doctest: +SKIP
        ['batch_size', 'crop_padding', 'lr']
        >>> tune(recipe, trials=0)  # checked before any work
        Traceback (most recent call last):
        ...
        ValueError: trials: expected a positive int, got 0
    """
    optuna = _optuna()
    if trials < 1:
        raise ValueError(f"trials: expected a positive int, got {trials}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial) -> float:
        candidate = suggest(trial, recipe)
        reporter = _ReportToTrial(trial)
        result = run_recipe(
            candidate,
            data_root=data_root,
            out=out,
            name=f"trial-{trial.number:03d}",
            verbose=False,
            extra_callbacks=[reporter],
            val_split=val_split,
        )
        if reporter.pruned:
            if verbose:
                print(f"Trial {trial.number}: pruned with {trial.params}")
            raise optuna.TrialPruned()
        if verbose:
            print(
                f"Trial {trial.number}: validation accuracy {100 * result['val_accuracy']:.2f}% "
                f"with {trial.params}"
            )
        return result["val_accuracy"]

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    study.optimize(objective, n_trials=trials, timeout=timeout)
    summary = {
        "recipe": recipe.name,
        "best": {
            "trial": study.best_trial.number,
            "value": study.best_value,
            "params": study.best_params,
        },
        "trials": [
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value if t.value is None or math.isfinite(t.value) else None,
                "params": t.params,
            }
            for t in study.trials
        ],
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    if verbose:
        print(
            f"Best trial {study.best_trial.number}: validation accuracy "
            f"{100 * study.best_value:.2f}% with {study.best_params}"
        )
    return study
