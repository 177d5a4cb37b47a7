"""Data-parallel training used by test_distributed.py; run under `mlx.launch` or alone.

python distributed_child.py OUT GLOBAL_BATCH EPOCHS [DIE_AT_STEP]
"""

import os
import signal
import sys

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

import mlxvision as mv
from mlxvision.data import DataLoader, Digits
from mlxvision.data import transforms as T
from mlxvision.engine import callbacks as cb

out, global_batch, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
die_at = int(sys.argv[4]) if len(sys.argv) > 4 else None


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 64, 10)

    def __call__(self, x):
        return self.fc(nn.relu(self.conv(x)).reshape(x.shape[0], -1))


class DieAt(cb.Callback):
    def on_log(self, trainer, logs):
        if trainer.rank == 1 and trainer.global_step == die_at:
            os.kill(os.getpid(), signal.SIGKILL)


group = mx.distributed.init()
mx.random.seed(0)
model = Net()
data = Digits(train=True, transform=T.ToTensor())
loader = DataLoader(data, global_batch // group.size(), shuffle=True, drop_last=True, seed=3)
callbacks = [cb.ModelCheckpoint(monitor=None)]
if die_at:
    callbacks.append(DieAt())
trainer = mv.Trainer(
    model,
    optim.SGD(learning_rate=0.05, momentum=0.9),
    callbacks=callbacks,
    distributed=True,
    watchdog_timeout=20,
    run_dir=out,
    log_every=2,
    verbose=False,
)
history = trainer.fit(loader, epochs)
if trainer.is_main:
    mx.save_safetensors(
        os.path.join(out, "final.safetensors"), dict(tree_flatten(model.parameters()))
    )
    np.save(os.path.join(out, "accuracy.npy"), np.array([r["accuracy"] for r in history]))
print(f"rank {trainer.rank} of {trainer.world_size} done", flush=True)
