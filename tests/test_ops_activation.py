"""mlxvision.ops' SiLU against float64 NumPy over float32's whole range, and its gradient."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlxvision.ops import SiLU, fast_conv_disabled, silu, use_fast_layers

# a dense grid over the range where SiLU is neither 0 nor x, and the tails and specials
GRID = np.concatenate(
    [np.linspace(-100, 100, 400_001), np.linspace(-1, 1, 100_001), [1e-30, -1e-30, 3e38, -3e38]]
).astype(np.float32)
RTOL = 2.5e-5  # measured: 1.9e-5 (value) and 1.7e-5 (gradient) at most; MLX's nn.silu: 3.7e-6


def reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SiLU, its derivative ``s + x·s·(1 - s)``, and the size of that sum's terms, in float64
    (the derivative crosses zero near x = -1.28, so its error is measured against its terms)."""
    x = x.astype(np.float64)
    with np.errstate(over="ignore"):
        s = 1 / (1 + np.exp(-x))
    return x * s, s * (1 + x * (1 - s)), s + np.abs(x) * s * (1 - s)


def assert_within(got, expected, scale, rtol: float, floor: float = 1e-30) -> None:
    """``|got - expected| <= rtol · scale`` where ``scale > floor``; about 0 elsewhere."""
    got = np.array(got, dtype=np.float64)
    big = scale > floor
    relative = np.abs(got[big] - expected[big]) / scale[big]
    assert relative.max() <= rtol, (relative.max(), GRID[big][relative.argmax()])
    assert np.abs(got[~big]).max(initial=0.0) <= 1e-29  # where SiLU underflows, about 0


@pytest.mark.skipif(mx.default_device().type != mx.DeviceType.cpu, reason="the CPU formulation")
def test_silu_and_its_gradient_match_float64_over_the_float32_range():
    value, derivative, terms = reference(GRID)
    x = mx.array(GRID)
    assert_within(silu(x), value, np.abs(value), RTOL)
    gradient = mx.grad(lambda v: (silu(v) * 1.5).sum())(x)
    assert_within(gradient, 1.5 * derivative, 1.5 * terms, RTOL)


def test_silu_special_values_as_mlx():
    x = mx.array([0.0, -0.0, np.inf, -np.inf, np.nan, 100.0, -100.0])
    got, expected = np.array(silu(x)), np.array(nn.silu(x))
    np.testing.assert_array_equal(got[:4], expected[:4])
    assert np.isnan(got[4]) and got[5] == 100.0 and -1e-30 < got[6] <= 0.0


def test_bfloat16_and_exporters_get_mlx_exactly():
    x = mx.random.normal((64,)) * 4
    assert mx.array_equal(silu(x.astype(mx.bfloat16)), nn.silu(x.astype(mx.bfloat16)))
    with fast_conv_disabled():
        assert mx.array_equal(silu(x), nn.silu(x))


def test_use_fast_layers_swaps_silu_and_back():
    model = nn.Sequential(nn.Linear(3, 4), nn.SiLU())
    layer = model.layers[1]
    use_fast_layers(model)
    assert type(model.layers[1]) is SiLU and model.layers[1] is layer
    x = mx.random.normal((5, 3))
    hidden = model.layers[0](x)
    assert mx.array_equal(model(x), nn.silu(hidden))  # training mode: MLX's
    model.eval()
    assert mx.array_equal(model(x), silu(hidden))
    assert mx.allclose(model(x), nn.silu(hidden), rtol=RTOL, atol=1e-7)
    use_fast_layers(model, enabled=False)
    assert type(model.layers[1]) is nn.SiLU
