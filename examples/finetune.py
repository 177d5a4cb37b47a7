"""Transfer learning: train a backbone on some classes, then reuse it for new ones.

Task A is the first half of a dataset's classes, task B the second half (new labels 0, 1, ...).
The script trains a model on A and saves it; loads it back, gives it a new classifier head for
B, freezes everything else and trains only the head; checks that the frozen weights did not
change by a single bit; then unfreezes and fine-tunes everything with a 10× smaller learning
rate for the backbone than for the head.

Without --data: the embedded digits, 0-4 then 5-9. With --data and --dataset: any dataset the
command line knows (CIFAR-10, MNIST, ... as in `mlxvision train --dataset`).

Run:
    python examples/finetune.py
    python examples/finetune.py --data data/cifar10 --dataset cifar10 --model resnet20
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

import mlxvision as mv
from mlxvision.data import ArrayDataset, DataLoader
from mlxvision.data import transforms as T
from mlxvision.engine.optimizers import grouped
from mlxvision.models import count_parameters
from mlxvision.recipes import DATASETS, load_datasets


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset folder (default: the embedded digits)")
    parser.add_argument("--dataset", default="digits", choices=DATASETS)
    parser.add_argument("--model", default="simple_cnn", help="a registry name")
    parser.add_argument("--epochs", type=int, default=10, help="epochs on task A")
    parser.add_argument("--head-epochs", type=int, default=5, help="epochs of the new head")
    parser.add_argument("--unfreeze-epochs", type=int, default=2, help="epochs of everything")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, help="train on this many batches per epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="finetune-output", help="folder for the files")
    return parser.parse_args()


def classes_subset(data: ArrayDataset, first: int, count: int) -> ArrayDataset:
    """The samples of classes ``first .. first+count-1``, relabelled ``0 .. count-1``."""
    keep = (data.labels >= first) & (data.labels < first + count)
    names = data.classes[first : first + count]
    return ArrayDataset(data.images[keep], data.labels[keep] - first, names, data.transform)


def loader(data: ArrayDataset, args: argparse.Namespace, train: bool) -> DataLoader:
    if not train:
        return DataLoader(data, batch_size=256)
    if args.steps:
        order = np.random.default_rng(args.seed).permutation(len(data))
        data = data.subset(np.sort(order[: args.steps * args.batch_size]))
    return DataLoader(data, args.batch_size, shuffle=True, drop_last=True, seed=args.seed)


def backbone_weights(model) -> dict[str, np.ndarray]:
    """Copies of every weight outside the classifier (BatchNorm running statistics aside)."""
    return {
        name: np.array(value)
        for name, value in tree_flatten(model.parameters())
        if not model.is_classifier_parameter(name)
        and name.rsplit(".", 1)[-1] not in ("running_mean", "running_var")
    }


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mx.random.seed(args.seed)

    train, test = load_datasets(args.dataset, args.data)
    half = train.num_classes // 2
    mean, std = train.mean, train.std
    crop = T.RandomCrop(train.image_shape[:2], padding=max(1, train.image_shape[0] // 8))
    augment = T.Compose([crop, T.ToTensor(), T.Normalize(mean, std)])
    plain = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    task_a = [classes_subset(d, 0, half) for d in (train, test)]
    task_b = [classes_subset(d, half, train.num_classes - half) for d in (train, test)]
    a_name = f"{args.dataset} classes {', '.join(task_a[0].classes)}"
    b_name = f"{args.dataset} classes {', '.join(task_b[0].classes)}"
    height, width, channels = train.image_shape
    kwargs = {"num_classes": half, "in_channels": channels}
    if args.model == "simple_cnn":
        kwargs["input_size"] = [height, width]

    # 1. Task A: train the whole model, test it, save it.
    model = mv.create_model(args.model, **kwargs)
    trainer = mv.Trainer(model, optim.Adam(learning_rate=args.lr), seed=args.seed)
    trainer.fit(loader(task_a[0].with_transform(augment), args, True), epochs=args.epochs)
    accuracy = trainer.evaluate(loader(task_a[1].with_transform(plain), args, False))["accuracy"]
    print(f"Task A ({a_name}): test accuracy {100 * accuracy:.2f}%")
    path = mv.save(model, out / "backbone", metadata={"classes": task_a[0].classes})
    print(f"Saved {path}")

    # 2. Task B: load, new head, frozen backbone; only the head learns.
    model = mv.load(path)
    model.reset_classifier(task_b[0].num_classes)
    model.freeze_backbone()
    before = backbone_weights(model)
    print(
        f"New head for {task_b[0].num_classes} classes; trainable parameters "
        f"{count_parameters(model, trainable_only=True):,} of {count_parameters(model):,}"
    )
    train_b = loader(task_b[0].with_transform(augment), args, True)
    test_b = loader(task_b[1].with_transform(plain), args, False)
    trainer = mv.Trainer(model, optim.Adam(learning_rate=args.lr), seed=args.seed)
    trainer.fit(train_b, epochs=args.head_epochs)
    accuracy = trainer.evaluate(test_b)["accuracy"]
    print(f"Task B ({b_name}), frozen backbone: test accuracy {100 * accuracy:.2f}%")
    after = backbone_weights(model)
    unchanged = before.keys() == after.keys() and all(
        np.array_equal(before[k], after[k]) for k in before
    )
    print(
        f"Frozen backbone weights bit-identical after training: {unchanged} "
        f"({len(before)} tensors compared)"
    )
    if not unchanged:
        raise SystemExit("the frozen backbone changed")

    # 3. Unfreeze and fine-tune everything: the backbone at a tenth of the head's rate.
    if args.unfreeze_epochs:
        model.unfreeze()
        optimizer = grouped(
            [
                (model.is_classifier_parameter, optim.Adam(learning_rate=args.lr)),
                ("*", optim.Adam(learning_rate=args.lr / 10)),
            ]
        )
        trainer = mv.Trainer(model, optimizer, seed=args.seed)
        trainer.fit(train_b, epochs=args.unfreeze_epochs)
        accuracy = trainer.evaluate(test_b)["accuracy"]
        print(f"Task B ({b_name}), all layers fine-tuned: test accuracy {100 * accuracy:.2f}%")

    path = mv.save(model, out / "finetuned", metadata={"classes": task_b[0].classes})
    print(
        f"Saved {path}; it loads as {type(mv.load(path)).__name__} with "
        f"{mv.load(path).num_classes} classes"
    )


if __name__ == "__main__":
    main()
