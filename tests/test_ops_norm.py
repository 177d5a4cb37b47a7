"""mlxvision.ops' BatchNorm and ReLU against mlx.nn's, a NumPy reference, and in memory."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlxvision.ops import (
    BatchNorm,
    ReLU,
    batch_norm,
    batch_norm_relu,
    fast_conv_disabled,
    norm_relu,
    relu,
    use_fast_layers,
)

RTOL = 1e-4  # float32, relative to the largest magnitude of the reference


def assert_close(actual, expected, rtol: float = RTOL) -> None:
    actual, expected = np.array(actual, dtype=np.float64), np.array(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    scale = max(float(np.abs(expected).max()), 1e-6)
    error = float(np.abs(actual - expected).max())
    assert error <= rtol * scale, f"max error {error} > {rtol} * {scale}"


def numpy_batch_norm(x, weight, bias, dy, eps):
    """Forward and backward of training-mode batch norm in float64, in the centred form."""
    axes = tuple(range(x.ndim - 1))
    count = x.size // x.shape[-1]
    mean = x.mean(axis=axes)
    centred = x - mean
    variance = (centred**2).mean(axis=axes)
    inv_std = 1 / np.sqrt(variance + eps)
    normalised = centred * inv_std
    y = normalised * weight + bias
    d_normalised = dy * weight
    dx = (
        inv_std
        / count
        * (
            count * d_normalised
            - d_normalised.sum(axis=axes)
            - normalised * (d_normalised * normalised).sum(axis=axes)
        )
    )
    return y, dx, (dy * normalised).sum(axis=axes), dy.sum(axis=axes)


def layer_pass(layer, x, dy):
    """Output, input gradient and parameter gradients of ``sum(layer(x) · dy)``."""

    def loss(params, x):
        layer.update(params)
        return (layer(x) * dy).sum()

    (_, (grads, dx)) = mx.value_and_grad(loss, argnums=(0, 1))(layer.trainable_parameters(), x)
    return layer(x), dx, grads.get("weight"), grads.get("bias")


@pytest.mark.parametrize("shape", [(8, 5, 5, 3), (16, 4), (6, 7, 3)])
def test_batch_norm_matches_mlx_and_numpy(shape):
    mx.random.seed(0)
    x = mx.random.normal(shape) * 3 + 5  # a mean well away from zero
    dy = mx.random.normal(shape)
    channels = shape[-1]
    fast, plain = BatchNorm(channels), nn.BatchNorm(channels)
    weight, bias = mx.random.normal((channels,)), mx.random.normal((channels,))
    for layer in (fast, plain):
        layer.weight, layer.bias = weight, bias
    actual, expected = layer_pass(fast, x, dy), layer_pass(plain, x, dy)
    for a, e in zip(actual, expected, strict=True):
        assert_close(a, e)
    assert_close(fast.running_mean, plain.running_mean, 1e-6)
    assert_close(fast.running_var, plain.running_var, 1e-6)

    y, dx, dweight, dbias = numpy_batch_norm(
        np.array(x, np.float64), np.array(weight), np.array(bias), np.array(dy), fast.eps
    )
    for a, e in zip(actual, (y, dx, dweight, dbias), strict=True):
        assert_close(a, e)


def test_gradients_through_the_returned_statistics():
    mx.random.seed(1)
    x = mx.random.normal((4, 3, 3, 2)) + 2
    weight, bias = mx.array([1.5, -0.5]), mx.array([0.1, 0.2])
    a, b, r = mx.array([0.3, -2.0]), mx.array([1.1, 0.7]), mx.random.normal(x.shape)

    def fast(x):
        y, mean, variance = batch_norm(x, weight, bias)
        return (y * r).sum() + (mean * a).sum() + (variance * b).sum()

    def straightforward(x):
        mean, variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
        y = (x - mean) * mx.rsqrt(variance + 1e-5) * weight + bias
        return (y * r).sum() + (mean * a).sum() + (variance * b).sum()

    assert_close(mx.grad(fast)(x), mx.grad(straightforward)(x))


def test_compiled_step_matches_eager_and_bfloat16_stays_close():
    mx.random.seed(2)
    layer = BatchNorm(4)
    x, dy = mx.random.normal((8, 6, 6, 4)) * 2 - 3, mx.random.normal((8, 6, 6, 4))

    def grads(x):
        return mx.grad(lambda v: (layer(v) * dy).sum())(x)

    eager = grads(x)
    assert_close(mx.compile(grads)(x), eager)
    half = grads(x.astype(mx.bfloat16))
    assert half.dtype == mx.bfloat16
    assert_close(half.astype(mx.float32), eager, rtol=3e-2)  # bfloat16 keeps 8 bits
    _, mean, variance = batch_norm(x.astype(mx.bfloat16), mx.ones(4), mx.zeros(4))
    assert mean.dtype == variance.dtype == mx.float32


def test_without_affine_or_running_statistics():
    mx.random.seed(3)
    x, dy = mx.random.normal((6, 4, 4, 3)), mx.random.normal((6, 4, 4, 3))
    for kwargs in ({"affine": False}, {"track_running_stats": False}):
        actual = layer_pass(BatchNorm(3, **kwargs), x, dy)
        expected = layer_pass(nn.BatchNorm(3, **kwargs), x, dy)
        for a, e in zip(actual, expected, strict=True):
            if e is None:
                assert a is None
            else:
                assert_close(a, e)


def test_eval_mode_and_exporters_get_mlx_exactly():
    mx.random.seed(4)
    x = mx.random.normal((4, 3, 3, 2))
    residual = mx.random.normal((4, 3, 3, 2))
    fast, plain = BatchNorm(2), nn.BatchNorm(2)
    fast.running_mean = plain.running_mean = mx.array([0.5, -1.0])
    fast.running_var = plain.running_var = mx.array([2.0, 0.3])
    fast.weight = plain.weight = mx.array([1.5, -0.5])
    fast.bias = plain.bias = mx.array([0.25, 2.0])
    expected = plain.eval()(x)
    assert mx.array_equal(fast.eval()(x), expected)
    assert mx.array_equal(fast.relu(x), mx.maximum(expected, 0))
    assert mx.array_equal(fast.relu(x, residual), mx.maximum(expected + residual, 0))
    fast.train(), plain.train()
    with fast_conv_disabled():
        assert mx.array_equal(fast(x), plain(x))
        assert mx.array_equal(relu(x), mx.maximum(x, 0))


def test_one_value_per_channel_is_refused_like_mlx():
    with pytest.raises(ValueError, match="more than one value per channel"):
        BatchNorm(3)(mx.ones((1, 3)))


def test_relu_gradient_from_its_output():
    x = mx.array([-2.0, -0.0, 0.0, 0.5, 3.0])
    assert mx.array_equal(relu(x), mx.maximum(x, 0))
    assert mx.array_equal(ReLU()(x), nn.ReLU()(x))
    expected = mx.grad(lambda v: (mx.maximum(v, 0) * mx.arange(5)).sum())(x)
    assert mx.array_equal(mx.grad(lambda v: (relu(v) * mx.arange(5)).sum())(x), expected)


def test_use_fast_layers_swaps_norm_and_relu_and_back():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm(4), nn.ReLU())
    norm = model.layers[1]
    use_fast_layers(model)
    assert type(model.layers[1]) is BatchNorm and model.layers[1] is norm
    assert type(model.layers[2]) is ReLU
    use_fast_layers(model, enabled=False)
    assert type(model.layers[1]) is nn.BatchNorm and type(model.layers[2]) is nn.ReLU


def _chain_peak_memory(norm_class, activation, layers: int = 8) -> float:
    """Peak memory of value_and_grad through BatchNorm → ReLU × ``layers``, in inputs."""
    norms = [norm_class(16) for _ in range(layers)]
    params = [norm.trainable_parameters() for norm in norms]

    def loss(params, x):
        for norm, p in zip(norms, params, strict=True):
            norm.update(p)
            x = activation(norm(x))
        return x.sum()

    step = mx.value_and_grad(loss)
    x = mx.random.normal((32, 16, 16, 16))
    mx.eval(x, step(params, x))
    mx.clear_cache()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    mx.eval(step(params, x))
    return (mx.get_peak_memory() - base) / x.nbytes


def test_backward_keeps_about_one_tensor_per_layer():
    plain = _chain_peak_memory(nn.BatchNorm, nn.relu)
    fast = _chain_peak_memory(BatchNorm, relu)
    # measured: 52.5 inputs' worth for MLX's layers, 15.5 for these (8 kept, the rest transient)
    assert fast < 0.5 * plain, (fast, plain)


def test_eval_mode_keeps_a_bfloat16_model_in_bfloat16():
    mx.random.seed(5)
    x = mx.random.normal((4, 3, 3, 2)).astype(mx.bfloat16)
    fast, plain = BatchNorm(2), nn.BatchNorm(2)
    for norm in (fast, plain):
        norm.running_mean = mx.array([0.5, -1.0])
        norm.running_var = mx.array([2.0, 0.3])
        norm.update({"weight": mx.array([1.5, 0.5], mx.bfloat16), "bias": mx.zeros(2, mx.bfloat16)})
        norm.eval()
    assert plain(x).dtype == mx.float32  # promoted by the float32 running statistics
    assert fast(x).dtype == mx.bfloat16
    assert mx.array_equal(fast(x), plain(x).astype(mx.bfloat16))


def _norm_relu_reference(x64, weight, bias, residual64, g64, eps, passed):
    """relu(batch_norm(x) + residual) and its gradients in float64: output, dx, dweight,
    dbias, dresidual for the upstream gradient ``g64``, the ReLU passing where ``passed`` (the
    tested output's > 0: in bfloat16, values near 0 may round either way)."""
    y, _, _, _ = numpy_batch_norm(x64, weight, bias, np.zeros_like(x64), eps)
    pre = y + (0 if residual64 is None else residual64)
    dy = g64 * passed
    _, dx, d_weight, d_bias = numpy_batch_norm(x64, weight, bias, dy, eps)
    return np.maximum(pre, 0), dx, d_weight, d_bias, dy


@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_norm_relu_matches_numpy_forward_and_backward(with_residual, dtype):
    """BatchNorm.relu, fused into the batch norm's kernels on CUDA, composed elsewhere."""
    shape = (32, 6, 6, 40)  # several chunks of rows; a partial block of channels
    rng = np.random.default_rng(11)
    x = mx.array(rng.normal(1.0, 2.0, shape).astype(np.float32)).astype(dtype)
    g = mx.array(rng.normal(size=shape).astype(np.float32)).astype(dtype)
    residual = mx.array(rng.normal(size=shape).astype(np.float32)).astype(dtype)
    residual = residual if with_residual else None
    norm = BatchNorm(shape[-1])
    norm.weight = mx.linspace(0.5, 1.5, shape[-1]).astype(dtype)  # as a mixed-precision step
    norm.bias = mx.linspace(-1.0, 1.0, shape[-1]).astype(dtype)

    def loss(params, x, residual):
        norm.update(params)
        return (norm.relu(x, residual) * g).sum()

    argnums = (0, 1, 2) if with_residual else (0, 1)
    grads = mx.grad(loss, argnums=argnums)(norm.trainable_parameters(), x, residual)
    out = norm.relu(x, residual)
    as64 = lambda a: None if a is None else np.array(a.astype(mx.float32), np.float64)  # noqa: E731
    passed = as64(out) > 0
    expected = _norm_relu_reference(
        as64(x), as64(norm.weight), as64(norm.bias), as64(residual), as64(g), norm.eps, passed
    )
    got = [out, grads[1], grads[0]["weight"], grads[0]["bias"]]
    got += [grads[2]] if with_residual else []
    rtol = 1e-4 if dtype == mx.float32 else 3e-2
    assert out.dtype == dtype
    for actual, want in zip(got, expected, strict=False):
        assert_close(actual.astype(mx.float32), want, rtol)
    # the running statistics move as the unfused layer moves them
    fused, plain = BatchNorm(shape[-1]), nn.BatchNorm(shape[-1])
    fused.relu(x, residual), plain(x)
    assert_close(fused.running_mean, plain.running_mean, rtol)  # MLX's: in bfloat16
    assert_close(fused.running_var, plain.running_var, rtol)


def test_norm_relu_falls_back_to_the_layers_it_stands_for():
    x = mx.random.normal((4, 3, 3, 5))
    residual = mx.random.normal((4, 3, 3, 5))
    plain_norm, plain_relu = nn.BatchNorm(5), nn.ReLU()
    expected = plain_relu(plain_norm(x) + residual)
    plain_norm.running_mean, plain_norm.running_var = mx.zeros(5), mx.ones(5)
    got = norm_relu(plain_norm, x, plain_relu, residual)
    assert mx.allclose(got, expected, atol=1e-6).item()
    fast = BatchNorm(5)
    fast.eval()
    eval_output = norm_relu(fast, x, ReLU(), residual)
    assert mx.array_equal(eval_output, mx.maximum(nn.BatchNorm(5).eval()(x) + residual, 0))
    with pytest.raises(ValueError, match="residual"):
        batch_norm_relu(x, mx.ones(5), mx.zeros(5), residual=mx.ones((4, 3, 3, 4)))
    with fast_conv_disabled():  # exporters: the plain layers
        fast.train()
        assert mx.allclose(fast.relu(x), mx.maximum(nn.BatchNorm(5)(x), 0), atol=1e-6).item()
