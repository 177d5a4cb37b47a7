"""A batch split over parallel CPU streams computes what the whole batch computes."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxvision import backend
from mlxvision.engine.losses import cross_entropy
from mlxvision.engine.steps import make_eval_step, make_train_step
from mlxvision.engine.streams import (
    StreamSplit,
    available_cores,
    eval_streams,
    running_statistics,
    train_streams,
)
from mlxvision.models import create_model
from mlxvision.ops import convolutions_in_parts

RTOL, ATOL = 1e-5, 1e-6  # float32 sums in another order


@pytest.fixture
def without_native_conv(monkeypatch):
    """The convolutions' parts apply where no native convolution threads each pass itself."""
    from mlxvision.engine import streams

    monkeypatch.setattr(streams, "onednn_conv", lambda: None)


@pytest.fixture(autouse=True)
def restore_blas_threads():
    """Steps set the process's BLAS threads; leave them as they were."""
    before = dict(backend.BLAS_THREADS)
    yield
    backend.set_blas_threads(before.get("count", available_cores()))
    backend.BLAS_THREADS.clear()
    backend.BLAS_THREADS.update(before)


def batch(size: int, seed: int = 0, side: int = 8, channels: int = 1):
    rng = np.random.default_rng(seed)
    images = mx.array(rng.standard_normal((size, side, side, channels)).astype(np.float32))
    return images, mx.array(rng.integers(0, 10, size).astype(np.int32))


def trained(model_name: str, streams: int, steps: int, size: int, **kwargs):
    mx.random.seed(0)
    model = create_model(model_name, num_classes=10, in_channels=1, input_size=8, **kwargs)
    optimizer = optim.SGD(learning_rate=0.05, momentum=0.9)
    step = make_train_step(model, optimizer, streams=streams)
    history = []
    for index in range(steps):
        loss, correct = step(*batch(size, seed=index))
        mx.eval(loss, correct, model.state, optimizer.state)
        history.append((loss.item(), correct.item()))
    return model, step, history


@pytest.mark.parametrize("streams, size", [(2, 16), (3, 7)])
def test_parts_train_like_the_whole_batch(streams, size):
    """Unequal parts (7 = 3 + 2 + 2) too: the loss is weighted by part size."""
    whole, whole_step, whole_history = trained("simple_cnn", 1, 3, size)
    parts, parts_step, parts_history = trained("simple_cnn", streams, 3, size)
    assert (whole_step.streams, parts_step.streams) == (1, streams)
    assert parts_step._split is not None and whole_step._split is None
    for (loss_w, correct_w), (loss_p, correct_p) in zip(whole_history, parts_history, strict=True):
        assert loss_p == pytest.approx(loss_w, rel=RTOL)
        assert correct_p == correct_w
    moved = 0
    for (name, a), (_, b) in zip(
        tree_flatten(whole.parameters()), tree_flatten(parts.parameters()), strict=True
    ):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=RTOL, atol=ATOL, err_msg=name)
        moved += 1
    assert moved == 8  # every weight and bias of the four layers


def test_batch_norm_parts_average_their_running_statistics():
    """Each part normalises with its own statistics; the running statistics end as the
    size-weighted mean of what each part alone would give, computed here independently."""
    mx.random.seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm(4), nn.ReLU())
    head = nn.Linear(4, 10)
    net = nn.Sequential(model, lambda x: x.mean(axis=(1, 2)), head)
    images, labels = batch(10, seed=3)
    start = {k: mx.array(v) for k, v in running_statistics(net).items()}

    expected_stats, expected_loss = {}, 0.0
    for lo, hi in [(0, 5), (5, 10)]:
        net.update(_unflatten(start))
        net.train()
        loss = cross_entropy(net(images[lo:hi]), labels[lo:hi])
        weight = (hi - lo) / 10
        expected_loss += weight * loss.item()
        for name, value in running_statistics(net).items():
            expected_stats[name] = expected_stats.get(name, 0) + weight * np.array(value)
    net.update(_unflatten(start))

    step = make_train_step(net, optim.SGD(learning_rate=0.0), streams=2)
    loss, _ = step(images, labels)
    mx.eval(loss, net.state)
    assert loss.item() == pytest.approx(expected_loss, rel=RTOL)
    stats = running_statistics(net)
    assert sorted(stats) == sorted(expected_stats) and len(stats) == 2
    for name, value in stats.items():
        np.testing.assert_allclose(np.array(value), expected_stats[name], rtol=RTOL, atol=ATOL)
        assert not np.allclose(np.array(value), np.array(start[name]))  # they did move


def _unflatten(flat):
    from mlx.utils import tree_unflatten

    return tree_unflatten(list(flat.items()))


def test_eval_in_parts_adds_up_to_the_whole():
    mx.random.seed(2)
    model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    images, labels = batch(11, seed=4)
    weights = mx.array([1.0] * 9 + [0.0] * 2)  # padding masked out
    whole = make_eval_step(model, streams=1)(images, labels, weights)
    parts = make_eval_step(model, streams=3)(images, labels, weights)
    assert parts["correct"].item() == whole["correct"].item()
    assert parts["top_k"].item() == whole["top_k"].item()
    assert parts["loss"].item() == pytest.approx(whole["loss"].item(), rel=RTOL)
    np.testing.assert_array_equal(np.array(parts["confusion"]), np.array(whole["confusion"]))
    assert np.array(parts["confusion"]).sum() == 9


def test_auto_streams():
    cores = 4
    linear, norm = nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.BatchNorm(2))
    on_cpu = mx.default_device().type == mx.DeviceType.cpu
    assert train_streams("auto", linear, cores) == (cores if on_cpu else 1)
    assert train_streams("auto", norm, cores) == 1  # batch statistics: the whole batch
    assert train_streams(2, norm, cores) == 2  # unless asked
    for bad in (0, -1, 1.5, "two", True):
        with pytest.raises(ValueError, match="streams"):
            train_streams(bad, linear, cores)
    with pytest.raises(ValueError, match="streams"):
        make_eval_step(linear, streams=0)


@pytest.mark.skipif(backend.BLAS.library is None, reason="no BLAS whose threads mlxvision sets")
@pytest.mark.skipif(available_cores() < 2, reason="needs two cores")
def test_cores_are_shared_between_streams_and_blas(monkeypatch, without_native_conv):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    cores = available_cores()
    model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    step = make_train_step(model, optim.SGD(learning_rate=0.1))  # auto: a stream per core
    assert step.streams == cores
    assert backend.BLAS_THREADS["count"] == 1
    assert eval_streams("auto") == cores  # evaluation uses the cores the BLAS leaves
    norm = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm(2))
    step = make_train_step(norm, optim.SGD(learning_rate=0.1))
    assert step.streams == step.conv_streams == 1
    assert backend.BLAS_THREADS["count"] == cores  # one stream: the BLAS has every core
    assert eval_streams("auto") == 1
    resnet = create_model("resnet20", num_classes=10)  # batch norms: whole batch, conv parts
    step = make_train_step(resnet, optim.SGD(learning_rate=0.1))
    assert (step.streams, step.conv_streams) == (1, cores)
    assert backend.BLAS_THREADS["count"] == 1
    step = make_train_step(resnet, optim.SGD(learning_rate=0.1), streams=1)
    assert (step.streams, step.conv_streams) == (1, 1)
    assert backend.BLAS_THREADS["count"] == cores


def test_opting_out_with_an_environment_thread_count(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    backend.BLAS_THREADS.clear()
    model = create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    make_train_step(model, optim.SGD(learning_rate=0.1), streams=2)
    assert "count" not in backend.BLAS_THREADS  # the user's setting stands


def test_split_bounds():
    split = StreamSplit(3)
    assert split.bounds(7) == [(0, 3), (3, 5), (5, 7)]
    assert split.bounds(2) == [(0, 1), (1, 2)]  # fewer rows than parts: no empty part
    with pytest.raises(ValueError, match="count"):
        StreamSplit(0)


def test_auto_keeps_a_loss_that_is_not_a_known_mean_whole():
    """A summed loss split in parts would be weighted as a mean: "auto" does not split it."""
    model = nn.Linear(3, 2)

    def summed(logits, targets):
        return cross_entropy(logits, targets, reduction="sum")

    assert make_train_step(model, optim.SGD(learning_rate=0.1), summed).streams == 1
    summed.sample_mean = True  # the caller vouches for it (wrongly here, but it is obeyed)
    expected = 1 if mx.default_device().type != mx.DeviceType.cpu else available_cores()
    assert make_train_step(model, optim.SGD(learning_rate=0.1), summed).streams == expected


@pytest.mark.parametrize("size", [16, 7])
def test_convolutions_in_parts_train_like_the_whole_batch(monkeypatch, size, without_native_conv):
    """ResNet-20 ("auto" keeps its batch whole for the batch norms) with its convolutions in
    two parts: the same losses, weights and running statistics as one stream, within float32
    rounding; splitting the whole batch instead (each batch norm sees its part) is told apart
    by the same comparison."""
    from mlxvision.engine import steps

    monkeypatch.setattr(steps, "cores_per_process", lambda group: 2)
    traced_in_parts = []

    def recording(streams):
        traced_in_parts.append(len(streams))
        return convolutions_in_parts(streams)

    monkeypatch.setattr(steps, "convolutions_in_parts", recording)

    def run(streams):
        mx.random.seed(0)
        model = create_model("resnet20", num_classes=10, in_channels=1)
        step = make_train_step(model, optim.SGD(learning_rate=0.05, momentum=0.9), streams=streams)
        losses = []
        for index in range(2):
            loss, _ = step(*batch(size, seed=index))
            mx.eval(loss, model.state)
            losses.append(loss.item())
        return step, losses, dict(tree_flatten(model.parameters())), running_statistics(model)

    whole_step, whole_losses, whole_weights, whole_stats = run(1)
    conv_step, conv_losses, conv_weights, conv_stats = run("auto")
    assert traced_in_parts == [0, 0, 2, 2]  # each step's forward and backward traced in parts
    _, _, ghost_weights, ghost_stats = run(2)
    assert (whole_step.conv_streams, conv_step.conv_streams) == (1, 2)
    assert conv_losses == pytest.approx(whole_losses, rel=1e-5)

    def max_error(a, b):
        return max(float(np.abs(np.array(a[k]) - np.array(b[k])).max()) for k in a)

    assert len(whole_weights) > 40 and len(whole_stats) == 38
    assert max_error(conv_weights, whole_weights) < 1e-5
    assert max_error(conv_stats, whole_stats) < 1e-5
    assert max_error(ghost_stats, whole_stats) > 1e-3  # the test can tell the difference
