import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

import mlxvision as mv
from mlxvision.engine import cross_entropy, make_eval_step, make_train_step


def _twin_models():
    mx.random.seed(3)
    a = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    b = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    b.update(tree_map(lambda v: mx.array(np.array(v)), a.parameters()))
    return a, b


def _batch(seed=0, n=16):
    rng = np.random.default_rng(seed)
    x = mx.array(rng.normal(size=(n, 8, 8, 1)).astype(np.float32))
    y = mx.array(rng.integers(0, 10, size=n).astype(np.int32))
    return x, y


@pytest.mark.parametrize("make_optimizer", [lambda: optim.Adam(1e-3), lambda: optim.SGD(0.1, 0.9)])
def test_compiled_step_matches_uncompiled_reference(make_optimizer):
    compiled_model, plain_model = _twin_models()
    compiled = make_train_step(compiled_model, make_optimizer(), compile=True)
    plain = make_train_step(plain_model, make_optimizer(), compile=False)
    for seed in range(3):
        x, y = _batch(seed)
        loss_c, correct_c = compiled(x, y)
        loss_p, correct_p = plain(x, y)
        mx.eval(compiled_model.state, plain_model.state)
        assert abs(loss_c.item() - loss_p.item()) <= 1e-6
        assert correct_c.item() == correct_p.item()
    for (name, a), (_, b) in zip(
        tree_flatten(compiled_model.parameters()),
        tree_flatten(plain_model.parameters()),
        strict=True,
    ):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-6, rtol=0, err_msg=name)


def test_train_step_updates_weights_as_plain_sgd_says():
    model = nn.Linear(3, 2)
    w0, b0 = np.array(model.weight), np.array(model.bias)
    x = np.array([[1.0, 2.0, -1.0], [0.5, 0.0, 1.0]], np.float32)
    y = np.array([1, 0], np.int32)
    step = make_train_step(model, optim.SGD(learning_rate=0.5))
    loss, correct = step(mx.array(x), mx.array(y))
    logits = x @ w0.T + b0
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref_loss = -np.log(p[np.arange(2), y]).mean()
    dlogits = (p - np.eye(2)[y]) / 2
    assert loss.item() == pytest.approx(ref_loss, rel=1e-6)
    assert correct.item() == int((logits.argmax(1) == y).sum())
    np.testing.assert_allclose(np.array(model.weight), w0 - 0.5 * dlogits.T @ x, atol=1e-6)
    np.testing.assert_allclose(np.array(model.bias), b0 - 0.5 * dlogits.sum(0), atol=1e-6)


def test_eval_step_masks_padding_and_uses_eval_mode():
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.9))
    x = mx.array(np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32))
    y = mx.array([0, 1, 2, 0, 1, 2])
    step = make_eval_step(model)
    weights = mx.array([1, 1, 1, 1, 0, 0], dtype=mx.float32)
    sums = step(x, y, weights)
    model.eval()
    logits = model(x)
    per_sample = np.array(nn.losses.cross_entropy(logits, y, reduction="none"))
    hits = np.array(mx.argmax(logits, axis=1) == y)
    assert sums["loss"].item() == pytest.approx(per_sample[:4].sum(), rel=1e-6)
    assert sums["correct"].item() == hits[:4].sum()
    predictions = np.array(mx.argmax(logits, axis=1))
    confusion = np.zeros((3, 3))
    np.add.at(confusion, (np.array(y)[:4], predictions[:4]), 1)
    np.testing.assert_array_equal(np.array(sums["confusion"]), confusion)
    top2 = make_eval_step(model, top_k=2)(x, y, weights)["top_k"].item()
    ranks = (np.array(logits) > np.array(logits)[np.arange(6), np.array(y)][:, None]).sum(1)
    assert top2 == (ranks[:4] < 2).sum()


class DtypeRecorder(nn.Module):
    """A convolution, BatchNorm and linear layer that record the dtypes they compute in."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm(4)
        self.linear = nn.Linear(4, 3)
        self.seen: list = []

    def __call__(self, x):
        self.seen.append(("conv", x.dtype, self.conv.weight.dtype))
        x = self.norm(self.conv(x))
        self.seen.append(("linear", x.dtype, self.linear.weight.dtype))
        return self.linear(x.mean(axis=(1, 2)))


@pytest.mark.parametrize("compile", [False, True])
def test_bfloat16_eval_step_computes_in_bfloat16_and_keeps_float32_weights(compile):
    mx.random.seed(6)
    model = mv.ops.use_fast_layers(DtypeRecorder())
    model.norm.running_mean = mx.array([0.1, -0.2, 0.3, 0.0])
    model.norm.running_var = mx.array([1.5, 0.5, 2.0, 1.0])
    x = mx.random.normal((8, 6, 6, 3))
    y = mx.array([0, 1, 2, 0, 1, 2, 0, 1])
    weights = mx.ones(8)
    exact = make_eval_step(model, compile=compile)(x, y, weights)
    model.seen.clear()
    sums = make_eval_step(model, compile=compile, precision="bfloat16")(x, y, weights)
    assert set(model.seen) == {(layer, mx.bfloat16, mx.bfloat16) for layer in ("conv", "linear")}
    assert all(v.dtype == mx.float32 for _, v in tree_flatten(model.parameters()))
    assert sums["loss"].dtype == mx.float32
    assert sums["loss"].item() == pytest.approx(exact["loss"].item(), rel=2e-2)


def test_cross_entropy_matches_numpy():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]], np.float32)
    labels = np.array([0, 1])
    shifted = logits - logits.max(1, keepdims=True)
    ref = -(shifted[[0, 1], labels] - np.log(np.exp(shifted).sum(1))).mean()
    assert cross_entropy(mx.array(logits), mx.array(labels)).item() == pytest.approx(ref, 1e-6)


def test_eval_step_rejects_a_loss_that_is_not_per_sample():
    model = nn.Linear(4, 3)
    step = make_eval_step(model, loss_fn=lambda logits, labels: logits.sum(), compile=False)
    with pytest.raises(ValueError, match="one loss per sample"):
        step(mx.zeros((2, 4)), mx.array([0, 1]), mx.ones(2))
