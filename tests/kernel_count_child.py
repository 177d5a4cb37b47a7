"""Compiles one layer's forward and backward pass for two inputs or settings, and fails unless
the first compiled kernel libraries and the second compiled none: a number that depends on the
shape or the layer must reach the kernels at run time (used by test_ops_scalars.py, with
TMPDIR an empty folder: MLX keeps its CPU kernels under it). Prints both counts."""

import sys
from functools import partial

import mlx.core as mx

from mlxvision.backend import compiled_kernel_folder
from mlxvision.models.layers import SqueezeExcitation, StochasticDepth
from mlxvision.ops import BatchNorm

case = sys.argv[1]
mx.random.seed(0)
if case == "batch_norm":  # two shapes
    layers = [BatchNorm(8), BatchNorm(8)]
    inputs = [mx.random.normal((4, 6, 6, 8)), mx.random.normal((2, 3, 5, 8))]
elif case == "squeeze_excitation":  # two shapes
    layers = [SqueezeExcitation(8, 4), SqueezeExcitation(8, 4)]
    inputs = [mx.random.normal((4, 6, 6, 8)), mx.random.normal((2, 3, 5, 8))]
elif case == "stochastic_depth":  # two rates, one shape
    layers = [StochasticDepth(0.1), StochasticDepth(0.3)]
    inputs = [mx.random.normal((4, 6, 6, 8))] * 2
else:
    raise SystemExit(f"unknown case {case!r}")

FOLDER = compiled_kernel_folder(gpu=False)


def new_kernels(layer, x: mx.array) -> int:
    """How many kernel libraries one compiled forward and backward pass of ``layer`` adds."""
    layer.train()
    state = [layer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(x):
        return mx.value_and_grad(lambda v: (layer(v) ** 2).sum())(x)

    before = set(FOLDER.glob("lib*.so"))
    mx.eval(step(x), layer.state)
    return len(set(FOLDER.glob("lib*.so")) - before)


first, second = (new_kernels(layer, x) for layer, x in zip(layers, inputs, strict=True))
print(first, second)
assert first > 0, f"{case}: no kernel library appeared in {FOLDER}: is that MLX's folder?"
assert second == 0, f"{case}: the second shape or setting compiled {second} kernels of its own"
