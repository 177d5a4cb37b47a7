"""mlxvision.ops' SiLU and GELU against float64 over float32's whole range, with gradients."""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlxvision.backend import on_cpu
from mlxvision.ops import (
    GELU,
    SiLU,
    fast_conv_disabled,
    gelu,
    gelu_for_training,
    silu,
    use_fast_layers,
)

# a dense grid over the range where the functions are neither 0 nor x, and the tails
GRID = np.concatenate(
    [np.linspace(-100, 100, 400_001), np.linspace(-1, 1, 100_001), [1e-30, -1e-30, 3e38, -3e38]]
).astype(np.float32)
# measured on this grid, value and gradient: SiLU 3.7e-6 and 3.6e-6, GELU 2.6e-5 and 1.7e-5.
# MLX's nn.silu: 3.7e-6 and 3.6e-6; nn.gelu computes 1 + erf(x/√2), which cancels in the
# negative tail: its relative error there is unbounded, and 3% for the gradient
RTOL = 3e-5


def silu_reference(x: np.ndarray):
    """SiLU, its derivative ``s + x·s·(1 - s)``, and the size of that sum's terms, in float64
    (the derivative crosses zero near x = -1.28, so its error is measured against its terms)."""
    with np.errstate(over="ignore"):
        s = 1 / (1 + np.exp(-x))
    return x * s, s * (1 + x * (1 - s)), s + np.abs(x) * s * (1 - s)


def gelu_reference(x: np.ndarray):
    """GELU ``x·Φ(x)``, its derivative ``Φ + x·φ``, and the size of that sum's terms."""
    cdf = 0.5 * np.vectorize(math.erfc)(-x / math.sqrt(2))
    density = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return x * cdf, cdf + x * density, cdf + np.abs(x) * density


FUNCTIONS = {
    "silu": (silu, nn.silu, silu_reference),
    "gelu": (gelu, nn.gelu, gelu_reference),
    "gelu_for_training": (gelu_for_training, nn.gelu, gelu_reference),
}


def assert_within(got, expected, scale, rtol: float, floor: float = 1e-30) -> None:
    """``|got - expected| <= rtol · scale`` where ``scale > floor``; about 0 elsewhere."""
    got = np.array(got, dtype=np.float64)
    big = scale > floor
    relative = np.abs(got[big] - expected[big]) / scale[big]
    assert relative.max() <= rtol, (relative.max(), GRID[big][relative.argmax()])
    assert np.abs(got[~big]).max(initial=0.0) <= 1e-29  # where the value underflows, about 0


@pytest.mark.skipif(mx.default_device().type != mx.DeviceType.cpu, reason="the CPU formulation")
@pytest.mark.parametrize("name", FUNCTIONS)
def test_value_and_gradient_match_float64_over_the_float32_range(name):
    fast, _, reference = FUNCTIONS[name]
    value, derivative, terms = reference(GRID.astype(np.float64))
    x = mx.array(GRID)
    assert_within(fast(x), value, np.abs(value), RTOL)
    gradient = mx.grad(lambda v: (fast(v) * 1.5).sum())(x)
    assert_within(gradient, 1.5 * derivative, 1.5 * terms, RTOL)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_special_values_as_mlx(name):
    fast, plain, _ = FUNCTIONS[name]
    x = mx.array([0.0, -0.0, np.inf, -np.inf, np.nan, 100.0, -100.0])
    got, expected = np.array(fast(x)), np.array(plain(x))
    np.testing.assert_array_equal(got[:3], expected[:3])
    assert np.isnan(got[4]) and got[5] == 100.0 and -1e-30 < got[6] <= 0.0
    assert np.isnan(got[3]) or got[3] == expected[3]  # -inf · 0


@pytest.mark.parametrize("name", FUNCTIONS)
def test_bfloat16_and_exporters_get_mlx_exactly(name):
    fast, plain, _ = FUNCTIONS[name]
    x = mx.random.normal((64,)) * 4
    assert mx.array_equal(fast(x.astype(mx.bfloat16)), plain(x.astype(mx.bfloat16)))
    with fast_conv_disabled():
        assert mx.array_equal(fast(x), plain(x))


@pytest.mark.parametrize(("plain_class", "fast_class"), [(nn.SiLU, SiLU), (nn.GELU, GELU)])
def test_use_fast_layers_swaps_the_activation(plain_class, fast_class):
    model = nn.Sequential(nn.Linear(3, 4), plain_class())
    layer = model.layers[1]
    use_fast_layers(model)
    assert type(model.layers[1]) is fast_class and model.layers[1] is layer
    x = mx.random.normal((5, 3))
    hidden = model.layers[0](x)
    training_form = silu if plain_class is nn.SiLU else gelu_for_training
    assert mx.array_equal(model(x), training_form(hidden))
    model.eval()
    assert mx.allclose(model(x), plain_class()(hidden), rtol=1e-4, atol=1e-7)
    use_fast_layers(model, enabled=False)
    assert type(model.layers[1]) is plain_class


def test_gelu_approximations_stay_mlx():
    x = mx.random.normal((64,))
    assert mx.array_equal(GELU(approx="tanh").eval()(x), nn.GELU(approx="tanh")(x))
    assert mx.array_equal(GELU(approx="tanh")(x), nn.GELU(approx="tanh")(x))  # training


def test_recomputing_silu_matches_float64_in_float32_and_bfloat16():
    from mlxvision.ops.activation import silu_recomputing

    value, derivative, terms = silu_reference(GRID.astype(np.float64))
    x = mx.array(GRID)
    assert mx.array_equal(silu_recomputing(x), nn.silu(x))  # MLX's forward pass
    gradient = mx.grad(lambda v: (silu_recomputing(v) * 1.5).sum())(x)
    assert_within(gradient, 1.5 * derivative, 1.5 * terms, RTOL)
    # bf16: the input rounded to bf16, the gradient within bf16's rounding of the result
    x16 = mx.random.normal((4096,), key=mx.random.key(4)).astype(mx.bfloat16) * 6
    rounded = np.array(x16.astype(mx.float32), dtype=np.float64)
    _, derivative, terms = silu_reference(rounded)
    gradient = mx.grad(lambda v: silu_recomputing(v).astype(mx.float32).sum())(x16)
    assert gradient.dtype == mx.bfloat16
    error = np.abs(np.array(gradient.astype(mx.float32), dtype=np.float64) - derivative) / terms
    assert error.max() <= 2**-8, error.max()


def compiled_gradient_memory(activation) -> float:
    """Peak memory of the compiled gradient of 8 matrix products, each followed by
    ``activation``, beyond its inputs, in activations' sizes."""
    batch, width, layers = 512, 256, 8
    weights = [mx.random.normal((width, width), key=mx.random.key(i)) * 0.06 for i in range(layers)]
    x = mx.random.normal((batch, width), key=mx.random.key(99))

    def loss(weights, x):
        for w in weights:
            x = activation(x @ w)
        return x.sum()

    gradient = mx.compile(mx.grad(loss))
    mx.eval(weights, x, gradient(weights, x))
    mx.synchronize()
    mx.reset_peak_memory()
    before = mx.get_active_memory()
    mx.eval(gradient(weights, x))
    return (mx.get_peak_memory() - before) / (batch * width * 4)


def test_recomputing_silu_keeps_no_sigmoid_under_compile():
    """nn.silu keeps x and sigmoid(x) for the backward pass; the recomputing form x only:
    one activation less per SiLU (measured 24 against 31 in bf16 at 4096×1024)."""
    from mlxvision.ops.activation import silu_recomputing

    recomputing = compiled_gradient_memory(silu_recomputing)
    assert recomputing <= compiled_gradient_memory(nn.relu) + 0.5  # ReLU keeps one array too
    assert compiled_gradient_memory(nn.silu) >= recomputing + 6, recomputing


def test_silu_layer_recomputes_in_training_unless_opted_out(monkeypatch):
    from mlxvision.ops import activation

    calls = []
    monkeypatch.setattr(activation, "silu_recomputing", lambda x: calls.append(x) or nn.silu(x))
    layer, x16 = SiLU(), mx.ones((3,), mx.bfloat16)
    monkeypatch.setenv("MLXVISION_SILU_RECOMPUTE", "0")
    layer(x16)
    monkeypatch.delenv("MLXVISION_SILU_RECOMPUTE")
    layer.eval()(x16)
    if on_cpu():
        layer.train()(mx.ones((3,)))  # float32 on the CPU: silu's own recomputing form
    assert not calls
    layer.train()
    layer(x16)
    assert len(calls) == 1
    monkeypatch.setenv("MLXVISION_SILU_RECOMPUTE", "yes")
    with pytest.raises(ValueError, match="MLXVISION_SILU_RECOMPUTE"):
        layer(x16)
