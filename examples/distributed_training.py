"""Data-parallel training over several processes: Macs over Thunderbolt/Ethernet or CUDA GPUs.

Every process builds the same model (same seed), trains on its own shard of each global batch,
and averages gradients with the others before every update, so all keep identical weights.
The global batch stays --global-batch however many processes run (each takes
global-batch / processes), so the learning rate needs no change when you add processes.
Only rank 0 prints and saves. Alone, the script is an ordinary single-process run.

Run:
    python examples/distributed_training.py                                 # one process
    mlx.launch -n 2 --backend ring python examples/distributed_training.py  # two, this machine
    mlx.launch --hostfile hosts.json --backend ring python examples/distributed_training.py
    mlx.launch -n 4 --backend nccl python examples/distributed_training.py  # 4 CUDA GPUs
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
from mlxvision.engine import schedules
from mlxvision.recipes import DATASETS, load_datasets


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset folder (default: the embedded digits)")
    parser.add_argument("--dataset", default="digits", choices=DATASETS)
    parser.add_argument("--model", default="simple_cnn", help="a registry name")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--global-batch", type=int, default=128, help="over all processes")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak rate, for the global batch")
    parser.add_argument("--steps", type=int, help="train on this many global batches per epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="distributed-output", help="folder for the files")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    group = mx.distributed.init()  # a group of one when not started by mlx.launch
    rank, size = group.rank(), group.size()
    if args.global_batch % size:
        raise SystemExit(f"--global-batch {args.global_batch} must divide by {size} processes")
    per_process = args.global_batch // size

    train, test = load_datasets(args.dataset, args.data)
    mean, std = train.mean, train.std
    normalize = [T.ToTensor(), T.Normalize(mean, std)]
    crop = T.RandomCrop(train.image_shape[:2], padding=max(1, train.image_shape[0] // 8))
    train = train.with_transform(T.Compose([crop, *normalize]))
    test = test.with_transform(T.Compose(normalize))
    if args.steps:  # the same seeded subset on every process
        order = np.random.default_rng(args.seed).permutation(len(train))
        train = train.subset(np.sort(order[: args.steps * args.global_batch]))

    # Each process gets every size-th sample of the same seeded order: disjoint shards.
    loader = DataLoader(
        train, per_process, shuffle=True, drop_last=True, seed=args.seed, rank=rank, world_size=size
    )
    test_loader = DataLoader(test, 256, rank=rank, world_size=size)  # metrics summed over ranks

    mx.random.seed(args.seed)  # identical initial weights everywhere (the Trainer checks)
    height, width, channels = train.image_shape
    kwargs = {"num_classes": train.num_classes, "in_channels": channels}
    if args.model == "simple_cnn":
        kwargs["input_size"] = [height, width]
    model = mv.create_model(args.model, **kwargs)
    total_steps = args.epochs * len(loader)
    lr = schedules.warmup_cosine(args.lr, total_steps, warmup_steps=min(50, total_steps // 10))
    trainer = mv.Trainer(
        model, optim.AdamW(learning_rate=lr, weight_decay=1e-4), distributed=True, seed=args.seed
    )
    if trainer.is_main:
        print(
            f"{size} process(es): global batch {args.global_batch} = {size} × {per_process}, "
            f"{len(loader)} steps per epoch, peak learning rate {args.lr:g}"
        )
    trainer.fit(loader, epochs=args.epochs)
    result = trainer.evaluate(test_loader)
    if trainer.is_main:
        print(f"Test Accuracy: {100 * result['accuracy']:.2f}%")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        path = mv.save(model, out / "model", metadata={"classes": train.classes})
        print(f"Saved {path}")
    print(f"rank {rank} of {size} done")


if __name__ == "__main__":
    main()
