"""The speed recipe data-parallel, used by test_speedrun.py; run under `mlx.launch` or alone.

python speedrun_child.py OUT_JSON
"""

import json
import sys
from functools import partial

# isort: off
import mlxvision  # noqa: F401  (first: it loads the fast BLAS before mlx.core)

# isort: on
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

from mlxvision.engine.distributed import share_cpu_cores
from mlxvision.engine.steps import make_train_step
from mlxvision.recipes import get_recipe
from mlxvision.recipes.fast import SpeedRun, _scaled_sum_loss

group = mx.distributed.init()
rank, world = group.rank(), group.size()
assert world in (1, 2), f"run alone or as 2 processes, got {world}"
rng = np.random.default_rng(7)
images = rng.integers(0, 256, size=(128, 16, 16, 3), dtype=np.uint8)
labels = rng.integers(0, 10, size=128)

# The loss the speed recipe uses, on a model without batch statistics: averaging the gradients
# of (summed loss × processes) over the processes updates as one process on the global batch.
x = mx.array(rng.normal(size=(8, 5)).astype(np.float32))
y = mx.array(rng.integers(0, 3, size=8))
mx.random.seed(0)
linear = nn.Linear(5, 3)
before = np.array(linear.weight)
loss = partial(_scaled_sum_loss, label_smoothing=0.2, scale=float(world))
step = make_train_step(
    linear, optim.SGD(learning_rate=0.1), loss, compile=False, group=group if world > 1 else None
)
part = 8 // world
step(x[rank * part : (rank + 1) * part], y[rank * part : (rank + 1) * part])
mx.eval(linear.parameters())
assert not np.allclose(np.array(linear.weight), before), "the step left the weights unchanged"

recipe = get_recipe("cifar10_fast").replace(
    epochs=2, batch_size=32, model_kwargs={"widths": [8, 16, 16]}, precision="float32"
)
run = SpeedRun(recipe, images, labels, mean=(0.5,) * 3, std=(0.25,) * 3, group=group)
timing = run.fit(seed=0)
assert timing["steps"] == 2 * len(run.loader) == 8, timing["steps"]
accuracy = run.evaluate(images[:50], labels[:50])
assert round(accuracy * 50, 6) == round(accuracy * 50), f"not a count of 50 images: {accuracy}"
flat = {k: np.array(v).tolist() for k, v in tree_flatten(run.model.parameters())}
run.group, run.rank, run.world = None, 0, 1  # this process alone, on all 50 images
alone = run.evaluate(images[:50], labels[:50])
threads = share_cpu_cores(group)  # collective: every process calls it
if rank == 0:
    with open(sys.argv[1], "w") as out:
        json.dump(
            {
                "world": world,
                "blas_threads": threads,
                "linear": {k: np.array(v).tolist() for k, v in tree_flatten(linear.parameters())},
                "steps": timing["steps"],
                "losses": timing["train_loss_per_epoch"],
                "accuracy": accuracy,
                "accuracy_alone": alone,
                "weights": flat,
            },
            out,
        )
else:
    with open(sys.argv[1] + f".rank{rank}", "w") as out:
        json.dump({"accuracy": accuracy, "weights": flat}, out)
