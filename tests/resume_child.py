"""A training run used by test_resume.py, in a process of its own.

python resume_child.py MODE RUN_DIR OUT
  straight: train 2 epochs, write the final state to OUT
  part:     train and stop (as if killed) right after the checkpoint at step 15, mid-epoch 1
  resume:   a fresh model (other random weights), resume from RUN_DIR, finish, write OUT
"""

import sys

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten

import mlxvision as mv
from mlxvision.data import DataLoader, Digits
from mlxvision.data import transforms as T
from mlxvision.engine import callbacks as cb
from mlxvision.engine.schedules import one_cycle

mode, run_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm(8)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(8 * 16, 10)

    def __call__(self, x):
        x = nn.relu(self.bn(self.conv(x)))
        x = x.reshape(x.shape[0], 4, 2, 4, 2, 8).max(axis=(2, 4))
        return self.fc(self.drop(x.reshape(x.shape[0], -1)))


class StopAfter(cb.Callback):
    def __init__(self, step):
        self.step = step

    def on_log(self, trainer, logs):
        if trainer.global_step == self.step:
            sys.exit(0)


mx.random.seed(123 if mode == "resume" else 0)
model = Net()
augment = T.Compose([T.RandomCrop(8, padding=1), T.RandomHorizontalFlip(), T.ToTensor()])
loader = DataLoader(Digits(train=True, transform=augment), 64, shuffle=True, drop_last=True)
schedule = one_cycle(0.05, total_steps=2 * len(loader))
callbacks = [cb.ModelCheckpoint(monitor=None, every_n_steps=5)]
if mode == "part":
    callbacks.append(StopAfter(15))
trainer = mv.Trainer(
    model,
    optim.SGD(learning_rate=schedule, momentum=0.9, nesterov=True, weight_decay=5e-4),
    callbacks=callbacks,
    ema_decay=0.9,
    run_dir=run_dir,
    log_every=5,
    verbose=False,
)
trainer.fit(loader, epochs=2, resume=run_dir if mode == "resume" else None)
state = {f"model.{k}": v for k, v in tree_flatten(model.parameters())}
state.update({f"optimizer.{k}": v for k, v in tree_flatten(trainer.optimizer.state)})
state.update({f"ema.{k}": v for k, v in tree_flatten(trainer.ema.shadow)})
mx.save_safetensors(out, state)
