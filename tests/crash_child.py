"""Saves checkpoints of a run in a loop until killed (used by test_checkpoint_folder.py)."""

import sys

import mlx.core as mx
import mlx.nn as nn

from mlxvision.checkpoint import CheckpointManager

folder, start = sys.argv[1], int(sys.argv[2])
mx.random.seed(start)
model = nn.Sequential(nn.Linear(256, 512), nn.Linear(512, 256))  # ~1 MB of weights
manager = CheckpointManager(folder, keep_last=2)
step = start
while True:
    step += 1
    model.update({"layers": [{"bias": mx.full((512,), step)}, {"bias": mx.full((256,), step)}]})
    manager.save(step, model, state={"global_step": step})
    print(step, flush=True)
