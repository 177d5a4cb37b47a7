"""The speed recipe's pieces against NumPy references, and the recipe end to end (small)."""

from __future__ import annotations

import os
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlxvision  # noqa: F401  (loads the fast BLAS before anything else uses mlx)
from mlxvision.data import DeviceLoader, random_translate_flip, translate_flip
from mlxvision.engine.optimizers import Muon, newton_schulz
from mlxvision.engine.steps import make_eval_step, tta_logits
from mlxvision.models.fastnet import FastNet, freeze_like_airbench
from mlxvision.recipes import get_recipe, run_recipe
from mlxvision.recipes.fast import SpeedRun


def numpy_translate_flip(images, shifts, flips):
    r = int(np.abs(shifts).max()) or 1
    padded = np.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
    h, w = images.shape[1:3]
    out = np.empty_like(images)
    for b, (dy, dx) in enumerate(shifts):
        crop = padded[b, r + dy : r + dy + h, r + dx : r + dx + w]
        out[b] = crop[:, ::-1] if flips[b] else crop
    return out


def test_translate_flip_equals_reflect_pad_crop_and_mirror():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(12, 9, 7, 3)).astype(np.float32)
    shifts = rng.integers(-3, 4, size=(12, 2))
    flips = rng.random(12) < 0.5
    got = translate_flip(mx.array(images), mx.array(shifts), mx.array(flips))
    np.testing.assert_array_equal(np.array(got), numpy_translate_flip(images, shifts, flips))


def test_translate_flip_gathers_the_indexed_images():
    images = np.arange(5 * 4 * 4).reshape(5, 4, 4, 1).astype(np.float32)
    picked = np.array([4, 0, 2])
    got = translate_flip(mx.array(images), mx.zeros((3, 2), mx.int32), indices=mx.array(picked))
    np.testing.assert_array_equal(np.array(got), images[picked])


def test_random_translate_flip_draws_every_shift_and_both_orientations():
    images = np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1).repeat(400, axis=0)
    out = np.array(random_translate_flip(mx.array(images), 2, mx.random.key(1)))
    seen = set()
    for view in out:
        matches = [
            (dy, dx, flip)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            for flip in (False, True)
            if np.array_equal(view, numpy_translate_flip(images[:1], [(dy, dx)], [flip])[0])
        ]
        assert matches, "every output must be a reflect-padded crop of its input"
        seen.update(matches)
    assert len(seen) == 50  # all 25 shifts, each both ways


def test_device_loader_normalizes_shuffles_and_alternates_flips():
    rng = np.random.default_rng(0)
    count = 24
    images = rng.integers(0, 256, size=(count, 6, 6, 3), dtype=np.uint8)
    labels = np.arange(count)  # label = image index, to follow each image
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    loader = DeviceLoader(images, labels, 8, mean=mean, std=std, seed=3)
    reference = (images / 255.0 - np.array(mean)) / np.array(std)
    epochs = []
    for _ in range(3):
        views = {}
        for batch, label in loader:
            for view, index in zip(np.array(batch), np.array(label).tolist(), strict=True):
                views[index] = view
        assert sorted(views) == list(range(count))  # a permutation of the whole set
        epochs.append(views)
    flipped = []
    for index in range(count):
        straight, mirrored = reference[index], reference[index][:, ::-1]
        first = np.allclose(epochs[0][index], mirrored, atol=1e-6)
        assert first or np.allclose(epochs[0][index], straight, atol=1e-6)
        other = mirrored if not first else straight
        np.testing.assert_allclose(epochs[1][index], other, atol=1e-6)  # the other way round
        np.testing.assert_allclose(epochs[2][index], epochs[0][index], atol=1e-6)
        flipped.append(first)
    assert 0 < sum(flipped) < count
    orders = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        orders.append([np.array(label).tolist() for _, label in loader])
    assert orders[0] != orders[1]
    loader.set_epoch(0)
    assert [np.array(label).tolist() for _, label in loader] == orders[0]


def test_device_loader_rejects_bad_input():
    images = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="labels: expected one label per image"):
        DeviceLoader(images, [0, 1], 2)
    with pytest.raises(ValueError, match="translate"):
        DeviceLoader(images, [0, 1, 2, 3], 2, translate=8)
    with pytest.raises(ValueError, match="images: expected"):
        DeviceLoader(np.zeros((4, 8, 8)), [0, 1, 2, 3], 2)


def numpy_newton_schulz(g, steps):
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.astype(np.float64)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / (np.linalg.norm(x) + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def test_newton_schulz_matches_numpy_and_orthogonalizes():
    g = np.random.default_rng(0).normal(size=(16, 40)).astype(np.float32)
    got = np.array(newton_schulz(mx.array(g), steps=5, dtype=mx.float32))
    np.testing.assert_allclose(got, numpy_newton_schulz(g, 5), rtol=1e-4, atol=1e-5)
    singular = np.linalg.svd(got, compute_uv=False)
    assert singular.min() > 0.6 and singular.max() < 1.3
    tall = np.array(newton_schulz(mx.array(g.T), steps=5, dtype=mx.float32))
    np.testing.assert_allclose(tall, got.T, rtol=1e-4, atol=1e-5)


def test_muon_steps_match_numpy_reference():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(6, 3, 3, 4)).astype(np.float32)
    grads = [rng.normal(size=weight.shape).astype(np.float32) for _ in range(3)]
    lr, mu = 0.1, 0.6
    layer = nn.Conv2d(4, 6, 3, bias=False)
    layer.weight = mx.array(weight)
    opt = Muon(learning_rate=lr, momentum=mu, ns_steps=3, ns_dtype=mx.float32)
    w, m = weight.astype(np.float64), np.zeros(weight.shape)
    for g in grads:
        opt.update(layer, {"weight": mx.array(g)})
        m = mu * m + g
        u = g + mu * m
        w = w * np.sqrt(w.shape[0]) / np.linalg.norm(w)
        w = w - lr * numpy_newton_schulz(u.reshape(6, -1), 3).reshape(w.shape)
    np.testing.assert_allclose(np.array(layer.weight), w, rtol=1e-4, atol=1e-5)


def test_muon_refuses_vectors():
    with pytest.raises(ValueError, match="2 or more dimensions"):
        Muon(learning_rate=0.1).init({"bias": mx.zeros(3)})


def test_tta_level_two_averages_mirrored_and_shifted_views():
    rng = np.random.default_rng(2)
    images = rng.normal(size=(3, 6, 6, 2)).astype(np.float32)
    weights = rng.normal(size=(6 * 6 * 2, 4)).astype(np.float32)

    def model(x):
        return x.reshape(x.shape[0], -1) @ mx.array(weights)

    def views(x, flip):
        return x[:, :, ::-1] if flip else x

    def reference(x):
        def mirrored(v):
            return 0.5 * (v.reshape(3, -1) @ weights + views(v, True).reshape(3, -1) @ weights)

        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        up_left, down_right = padded[:, :6, :6], padded[:, 2:, 2:]
        return 0.5 * mirrored(x) + 0.25 * (mirrored(up_left) + mirrored(down_right))

    got = np.array(tta_logits(model, mx.array(images), level=2))
    np.testing.assert_allclose(got, reference(images), rtol=1e-5, atol=1e-5)
    level1 = np.array(tta_logits(model, mx.array(images), level=1))
    flat = images.reshape(3, -1) @ weights
    mirror = images[:, :, ::-1].reshape(3, -1) @ weights
    np.testing.assert_allclose(level1, 0.5 * (flat + mirror), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="tta"):
        make_eval_step(nn.Linear(2, 2), tta=3)


def test_whitening_on_device_matches_float64_reference():
    images = np.random.default_rng(3).normal(size=(20, 10, 10, 3)).astype(np.float32)
    model = FastNet(widths=(8, 16, 16)).init_whitening(images)
    windows = np.lib.stride_tricks.sliding_window_view(images.astype(np.float64), (2, 2), (1, 2))
    patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 12)
    values, vectors = np.linalg.eigh(patches.T @ patches / len(patches))
    filters = vectors.T[::-1] / np.sqrt(values[::-1, None] + 5e-4)
    expected = np.concatenate([filters, -filters]).reshape(24, 2, 2, 3)
    got = np.array(model.whiten.weight)
    # eigenvectors are defined up to sign: compare each filter up to its sign
    signs = np.sign((got * expected).reshape(24, -1).sum(axis=1))[:, None, None, None]
    np.testing.assert_allclose(got, signs * expected, rtol=1e-3, atol=1e-3)


def test_airbench_net_starts_with_identity_filters_and_unit_head():
    model = FastNet(widths=(8, 16, 16))
    conv = model.blocks.layers[1].conv1  # 8 -> 16 channels
    x = mx.random.normal((2, 5, 5, 8))
    np.testing.assert_allclose(np.array(conv(x)[..., :8]), np.array(x), atol=1e-6)
    assert abs(float(mx.std(model.head.weight).item()) - 1.0) < 0.2
    frozen = freeze_like_airbench(model).trainable_parameters()
    assert "weight" not in frozen["whiten"] and "bias" in frozen["whiten"]
    assert "weight" not in frozen["blocks"]["layers"][0]["norm1"]


def tiny_recipe(**changes):
    return get_recipe("cifar10_fast").replace(
        epochs=2,
        batch_size=32,
        model_kwargs={"widths": [8, 16, 16], "logit_scale": 1 / 16},
        precision="float32",
        **changes,
    )


def test_speed_run_is_repeatable_and_keeps_frozen_parts_frozen():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(96, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=96)
    run = SpeedRun(tiny_recipe(), images, labels, mean=(0.5,) * 3, std=(0.25,) * 3)
    first = run.fit(seed=1)
    weights = {k: np.array(v) for k, v in mlx_flatten(run.model.parameters())}
    assert first["steps"] == 6 and first["epochs"] == 2
    for name, value in weights.items():
        if name.endswith("norm1.weight") or name.endswith("norm2.weight"):
            np.testing.assert_array_equal(value, 1.0)
    sample = run.loader.images[run.whiten_indices]
    expected = FastNet(widths=(8, 16, 16)).init_whitening(sample).whiten.weight
    np.testing.assert_array_equal(weights["whiten.weight"], np.array(expected))
    run.fit(seed=2)
    again = run.fit(seed=1)  # same compiled step, fresh model: the same result
    assert again["train_loss_per_epoch"] == first["train_loss_per_epoch"]
    for name, value in mlx_flatten(run.model.parameters()):
        np.testing.assert_array_equal(np.array(value), weights[name], err_msg=name)


def mlx_flatten(tree):
    from mlx.utils import tree_flatten

    return tree_flatten(tree)


def test_speed_recipe_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(ValueError, match="speed recipe"):
        run_recipe(tiny_recipe(), out=tmp_path, resume=tmp_path)
    with pytest.raises(ValueError, match="unknown options"):
        SpeedRun(
            tiny_recipe(options={"bias_rl": 0.1}),
            np.zeros((64, 16, 16, 3), np.uint8),
            np.zeros(64, int),
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
        )


def test_speed_recipe_writes_a_loadable_run_folder(tmp_path, monkeypatch):
    from mlxvision.data import ArrayDataset
    from mlxvision.recipes import catalog

    rng = np.random.default_rng(5)
    classes = [str(c) for c in range(10)]

    def fake_cifar(name, root=None):
        splits = []
        for count in (64, 40):
            images = rng.integers(0, 256, size=(count, 16, 16, 3), dtype=np.uint8)
            split = ArrayDataset(images, rng.integers(0, 10, size=count), classes)
            split.mean, split.std = (0.5,) * 3, (0.25,) * 3
            splits.append(split)
        return tuple(splits)

    monkeypatch.setattr(catalog, "load_datasets", fake_cifar)
    result = run_recipe(tiny_recipe(), data_root=tmp_path, out=tmp_path, name="r", verbose=False)
    assert result["steps"] == 4 and 0.0 <= result["test_accuracy"] <= 1.0
    run = tmp_path / "r"
    assert {"recipe.json", "metrics.jsonl", "model.safetensors", "result.json"} <= {
        p.name for p in run.iterdir()
    }
    model = mlxvision.load(run / "model.safetensors")
    assert isinstance(model, FastNet) and model.head.weight.shape == (10, 16)


@pytest.mark.realdata
def test_speed_recipe_learns_real_cifar10():
    root = os.environ.get("MLXVISION_DATA")
    if not root or not (Path(root) / "cifar10-jpeg" / "train.tar").is_file():
        pytest.skip("set MLXVISION_DATA to a folder with cifar10-jpeg/")
    from mlxvision.recipes import load_datasets

    train, test = load_datasets("cifar10", Path(root) / "cifar10-jpeg")
    picked = np.sort(np.random.default_rng(0).permutation(len(train))[:4000])
    recipe = get_recipe("cifar10_fast").replace(
        epochs=3,
        batch_size=250,
        model_kwargs={"widths": [32, 64, 64], "logit_scale": 1 / 64, "activation": "relu"},
        precision="float32",
        tta=1,
    )
    run = SpeedRun(
        recipe, train.images[picked], train.labels[picked], mean=train.mean, std=train.std
    )
    run.fit(seed=0)
    accuracy = run.evaluate(test.images[:2000], test.labels[:2000])
    # 3 short epochs on 4,000 images: far above chance (10%); the full recipe is a benchmark
    assert accuracy > 0.35, accuracy


def test_device_loader_shards_are_the_single_process_batches():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(40, 6, 6, 3), dtype=np.uint8)
    labels = np.arange(40)
    whole = DeviceLoader(images, labels, 12, translate=1, seed=5)
    parts = [
        DeviceLoader(images, labels, 12, translate=1, seed=5, rank=r, world_size=3)
        for r in range(3)
    ]
    for epoch in range(2):
        for loader in (whole, *parts):
            loader.set_epoch(epoch)
        for (batch, label), *shards in zip(whole, *parts, strict=True):
            assert all(x.shape == (4, 6, 6, 3) for x, _ in shards)
            np.testing.assert_array_equal(np.concatenate([np.array(x) for x, _ in shards]), batch)
            np.testing.assert_array_equal(np.concatenate([np.array(y) for _, y in shards]), label)
    with pytest.raises(ValueError, match="divide evenly"):
        DeviceLoader(images, labels, 10, rank=0, world_size=3)
    with pytest.raises(ValueError, match="rank 3 of world_size 3"):
        DeviceLoader(images, labels, 12, rank=3, world_size=3)
    with pytest.raises(ValueError, match="shuffle"):
        DeviceLoader(images, labels, 12, shuffle=False, rank=0, world_size=3)


def test_speed_run_data_parallel_over_two_real_processes(tmp_path):
    import json
    import subprocess
    import sys

    child = Path(__file__).with_name("speedrun_child.py")
    launch = [
        sys.executable,
        "-c",
        "import sys; from mlx._distributed_utils.launch import main; "
        "sys.argv[0] = 'mlx.launch'; sys.exit(main())",
    ]
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    done = subprocess.run(
        [sys.executable, str(child), str(one)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    command = [*launch, "-n", "2", "--backend", "ring", sys.executable, str(child), str(two)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    alone, pair = json.loads(one.read_text()), json.loads(two.read_text())
    other = json.loads((tmp_path / "two.json.rank1").read_text())
    assert alone["world"] == 1 and pair["world"] == 2
    # The summed loss: two processes with half the batch each make the one-process update.
    for name, value in alone["linear"].items():
        np.testing.assert_allclose(pair["linear"][name], value, rtol=1e-5, atol=1e-6)
    # Both processes hold one model; the evaluation, split between them, counts every image.
    for name, value in pair["weights"].items():
        np.testing.assert_array_equal(other["weights"][name], value, err_msg=name)
    assert pair["accuracy"] == other["accuracy"] == pair["accuracy_alone"]
    assert pair["steps"] == alone["steps"] == 8
    assert pair["losses"][-1] < pair["losses"][0]
    on_cpu = mx.default_device().type == mx.DeviceType.cpu
    if on_cpu and not os.environ.get("OPENBLAS_NUM_THREADS") and mlxvision.backend.BLAS.library:
        assert pair["blas_threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
    assert alone["blas_threads"] == 0  # a group of one shares nothing


def test_only_speed_recipes_stop_part_way_through_an_epoch(tmp_path):
    with pytest.raises(ValueError, match="whole number"):
        run_recipe(get_recipe("digits").replace(epochs=2.5), out=tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything was written
