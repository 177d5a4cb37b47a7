"""Run a recipe end to end: data, model, training, test, saved run folder."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

from ..checkpoint import save
from ..data import DataLoader
from ..data import transforms as T
from ..engine import Trainer, callbacks, schedules
from ..engine.distributed import init as distributed_init
from ..engine.optimizers import with_weight_decay
from ..models import create_model
from .catalog import load_datasets
from .recipe import Recipe

MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "recipe.json"
RESULT_FILE = "result.json"


def train_transform(recipe: Recipe, image_shape, mean, std) -> T.Transform:
    """The recipe's augmentation followed by ``ToTensor`` and ``Normalize``.

    Example:
        >>> from mlxvision.recipes import get_recipe
        >>> t = train_transform(get_recipe("digits"), (8, 8, 1), [0.3], [0.4])
        >>> [type(step).__name__ for step in t.transforms]
        ['RandomCrop', 'ToTensor', 'Normalize']
    """
    height, width, _ = image_shape
    steps: list[T.Transform] = []
    for name in recipe.augment:
        if name == "crop":
            steps.append(T.RandomCrop((height, width), padding=recipe.crop_padding))
        elif name == "resized_crop":
            steps.append(T.RandomResizedCrop((height, width)))
        elif name == "flip":
            steps.append(T.RandomHorizontalFlip())
        else:
            raise ValueError(f"recipe {recipe.name}: unknown augmentation {name!r}")
    return T.Compose([*steps, *eval_transform(mean, std).transforms])


def eval_transform(mean, std) -> T.Compose:
    """``ToTensor`` and ``Normalize``: what test images go through.

    Example:
        >>> import mlx.core as mx
        >>> eval_transform([0.5], [0.5])(mx.full((1, 2, 2, 1), 255, mx.uint8)).max().item()
        1.0
    """
    return T.Compose([T.ToTensor(), T.Normalize(mean, std)])


def make_optimizer(recipe: Recipe, steps_per_epoch: int) -> optim.Optimizer:
    """The recipe's optimizer and schedule. Adam and AdamW use bias correction, as PyTorch's
    do (MLX's default leaves it out, which multiplies the first hundreds of steps by 3-6)."""
    total = recipe.epochs * steps_per_epoch
    if recipe.schedule == "onecycle":
        lr = schedules.one_cycle(recipe.lr, total)
    elif recipe.schedule == "cosine":
        warmup = int(recipe.warmup_epochs * steps_per_epoch)
        lr = schedules.warmup_cosine(recipe.lr, total, warmup, end_lr=recipe.lr * 0.01)
    elif recipe.schedule == "constant":
        lr = recipe.lr
    else:
        raise ValueError(f"recipe {recipe.name}: unknown schedule {recipe.schedule!r}")
    if recipe.optimizer == "sgd":
        return with_weight_decay(
            optim.SGD,
            recipe.weight_decay,
            learning_rate=lr,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
        )
    if recipe.optimizer == "adamw":
        return with_weight_decay(
            optim.AdamW, recipe.weight_decay, learning_rate=lr, bias_correction=True
        )
    if recipe.optimizer == "adam":
        if recipe.weight_decay:
            raise ValueError(f"recipe {recipe.name}: use adamw for weight decay, not adam")
        return optim.Adam(learning_rate=lr, bias_correction=True)
    raise ValueError(f"recipe {recipe.name}: unknown optimizer {recipe.optimizer!r}")


def model_metadata(recipe: Recipe, data_root, train, mean, std) -> dict[str, Any]:
    """What a run's ``model.safetensors`` records so that ``evaluate``, ``predict`` and
    ``export`` can rebuild the input pipeline: dataset, classes, normalization, input shape.

    Example:
        >>> from mlxvision.recipes import get_recipe, load_datasets
        >>> train, _ = load_datasets("digits")
        >>> meta = model_metadata(get_recipe("digits"), None, train, train.mean, train.std)
        >>> meta["input_shape"], meta["recipe"]
        ([8, 8, 1], 'digits')
    """
    height, width, channels = train.image_shape
    return {
        "dataset": recipe.dataset,
        "data_root": str(data_root) if data_root else None,
        "classes": train.classes,
        "mean": list(mean),
        "std": list(std),
        "input_shape": [height, width, channels],
        "recipe": recipe.name,
    }


def _run_name(group) -> str:
    """A timestamp name, the same on every process of a distributed job (rank 0's)."""
    stamp = int(time.time()) if group is None or group.rank() == 0 else 0
    if group is not None and group.size() > 1:
        stamp = int(mx.distributed.all_sum(mx.array(stamp, dtype=mx.int64), group=group).item())
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(stamp))


def _hold_out(train, fraction: float, seed: int):
    if not 0 < fraction < 1:
        raise ValueError(f"val_split: expected a fraction in (0, 1), got {fraction}")
    order = np.random.default_rng([seed, 7]).permutation(len(train))
    count = max(1, int(round(fraction * len(train))))
    return train.subset(np.sort(order[count:])), train.subset(np.sort(order[:count]))


def _plots(run: Path, history, confusion, classes) -> None:
    try:
        from ..plot import plot_confusion_matrix, plot_history
    except ImportError:
        return
    try:
        plot_history(history, run / "curves.png")
        plot_confusion_matrix(confusion, classes, run / "confusion.png")
    except ImportError:
        pass  # matplotlib is optional: the run folder simply has no pictures


def run_recipe(
    recipe: Recipe,
    *,
    data_root: str | os.PathLike | None = None,
    out: str | os.PathLike = "runs",
    name: str | None = None,
    resume: str | os.PathLike | None = None,
    verbose: bool = True,
    extra_callbacks: Sequence[callbacks.Callback] = (),
    val_split: float = 0.0,
    distributed: bool = False,
) -> dict[str, Any]:
    """Train ``recipe`` into a run folder and test it; return the result summary.

    The run folder holds ``recipe.json``, ``metrics.jsonl`` (one line per epoch),
    ``checkpoints/`` (the last and the best, for ``resume``), ``model.safetensors`` (the final
    model, loadable with ``mlxvision.load``), ``result.json`` and, with matplotlib installed,
    ``curves.png`` and ``confusion.png``.

    By default the test split is evaluated after every epoch, as the classic tutorial does.
    ``val_split=f`` instead holds out a seeded fraction ``f`` of the training data for the
    per-epoch validation (and for choosing the best checkpoint); the test split is then used
    only once, at the end.

    ``distributed=True`` trains data-parallel over the processes of an ``mx.distributed`` job
    (``mlx.launch -n 2 ... mlxvision train --distributed``): the recipe's ``batch_size`` is the
    global batch, split evenly over the processes, with the recipe's learning rate unchanged;
    rank 0 writes the run folder.

    Example:
        >>> from mlxvision.recipes import get_recipe
        >>> import tempfile
        >>> result = run_recipe(get_recipe("digits").replace(epochs=1), out=tempfile.mkdtemp(),
        ...                     name="demo", verbose=False)
        >>> sorted(result)[:3]
        ['epochs', 'images_per_sec', 'model']
    """
    if recipe.optimizer == "muon":
        if resume or val_split or extra_callbacks:
            raise ValueError(
                f"recipe {recipe.name}: a speed recipe trains in seconds from scratch; it has no "
                "resume, val_split or callbacks"
            )
        from .fast import run_speed_recipe

        return run_speed_recipe(
            recipe,
            data_root=data_root,
            out=out,
            name=name,
            verbose=verbose,
            distributed=distributed,
        )
    if recipe.epochs != int(recipe.epochs) or recipe.epochs < 1:
        raise ValueError(
            f"recipe {recipe.name}: epochs must be a whole number ≥ 1, got {recipe.epochs} "
            "(only speed recipes, optimizer 'muon', stop part-way through an epoch)"
        )
    recipe = recipe.replace(epochs=int(recipe.epochs))
    group = distributed_init() if distributed else None
    rank, world = (group.rank(), group.size()) if group else (0, 1)
    main = rank == 0
    verbose = verbose and main
    if recipe.batch_size % world:
        raise ValueError(
            f"batch_size {recipe.batch_size} (the global batch) does not split evenly over "
            f"{world} processes"
        )
    run = Path(resume) if resume else Path(out) / (name or _run_name(group))
    if resume and not run.is_dir():
        raise FileNotFoundError(f"{run}: no run folder to resume")
    if main:
        run.mkdir(parents=True, exist_ok=True)
        if resume is None:
            (run / CONFIG_FILE).write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")
    mx.random.seed(recipe.seed)
    train, test = load_datasets(recipe.dataset, data_root)
    mean, std = recipe.normalize or (train.mean, train.std)
    val = None
    if val_split:
        train, val = _hold_out(train, val_split, recipe.seed)
    train = train.with_transform(train_transform(recipe, train.image_shape, mean, std))
    test = test.with_transform(eval_transform(mean, std))
    height, width, channels = train.image_shape
    kwargs = {"num_classes": train.num_classes, "in_channels": channels, **recipe.model_kwargs}
    if recipe.model == "simple_cnn":
        kwargs.setdefault("input_size", [height, width])
    model = create_model(recipe.model, **kwargs)
    loader = DataLoader(
        train,
        recipe.batch_size // world,
        shuffle=True,
        drop_last=True,
        seed=recipe.seed,
        rank=rank,
        world_size=world,
    )
    test_loader = DataLoader(test, min(1024, max(recipe.batch_size, 256)))
    val_loader = test_loader
    if val is not None:
        val = val.with_transform(eval_transform(mean, std))
        val_loader = DataLoader(val, test_loader.batch_size)
    trainer = Trainer(
        model,
        make_optimizer(recipe, len(loader)),
        callbacks=[
            callbacks.JSONLinesLogger(run / METRICS_FILE),
            callbacks.ModelCheckpoint(monitor="val_accuracy", keep_last=1, keep_best=1),
            *extra_callbacks,
        ],
        precision=recipe.precision,
        label_smoothing=recipe.label_smoothing,
        ema_decay=recipe.ema_decay,
        tta=recipe.tta,
        seed=recipe.seed,
        run_dir=run,
        distributed=distributed,
        verbose=verbose,
    )
    if verbose:
        print(
            f"Training {recipe.model} on {recipe.dataset} ({len(train)} train / {len(test)} test "
            f"images) with recipe {recipe.name}; run folder {run}"
        )
        if world > 1:
            print(
                f"Data-parallel over {world} processes: global batch {recipe.batch_size} = "
                f"{world} × {recipe.batch_size // world}, learning rate {recipe.lr} (unscaled)"
            )
    began = time.perf_counter()
    trainer.fit(loader, recipe.epochs, val_loader=val_loader, resume=resume and run)
    seconds = time.perf_counter() - began
    final = trainer.evaluate(test_loader)
    if main:
        save(model, run / MODEL_FILE, metadata=model_metadata(recipe, data_root, train, mean, std))
    result = {
        "run": str(run),
        "recipe": recipe.name,
        "model": recipe.model,
        "epochs": recipe.epochs,
        "test_accuracy": final["accuracy"],
        "test_loss": final["loss"],
        "val_accuracy": trainer.history[-1]["val_accuracy"],
        "train_seconds": seconds,
        "images_per_sec": sum(r["images_per_sec"] for r in trainer.history) / len(trainer.history),
        "processes": world,
    }
    if main:
        (run / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
        _plots(run, trainer.history, final["confusion_matrix"], train.classes)
    if verbose:
        print(
            f"Test Accuracy: {100 * final['accuracy']:.2f}% (loss {final['loss']:.4f}) "
            f"after {recipe.epochs} epochs in {seconds:.1f} s"
        )
        print(f"Saved {run / MODEL_FILE}")
    return result
