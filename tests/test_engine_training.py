import csv
import math

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

import mlxvision as mv
from mlxvision.data import ArrayDataset, DataLoader, Digits
from mlxvision.data import transforms as T
from mlxvision.engine import callbacks as cb
from mlxvision.engine import make_train_step, schedules
from mlxvision.engine.ema import EMA
from mlxvision.engine.losses import cross_entropy
from mlxvision.engine.optimizers import grouped, with_weight_decay
from mlxvision.engine.trainer import NonFiniteLossError


class Mlp(nn.Module):
    def __init__(self, dropout=0.0):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(32, 10)

    def __call__(self, x):
        return self.fc2(self.drop(nn.relu(self.fc1(x.reshape(x.shape[0], -1)))))


def _params(model):
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def _copy_of(model, make):
    other = make()
    other.update(tree_map(lambda v: mx.array(np.array(v)), model.parameters()))
    return other


def _batch(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = mx.array(rng.normal(size=(n, 8, 8, 1)).astype(np.float32))
    y = mx.array(rng.integers(0, 10, size=n).astype(np.int32))
    return x, y


def test_accumulating_micro_batches_equals_one_big_batch():
    mx.random.seed(0)
    big_model = Mlp()
    small_model = _copy_of(big_model, Mlp)
    big = make_train_step(big_model, optim.SGD(learning_rate=0.1, momentum=0.9))
    small = make_train_step(small_model, optim.SGD(learning_rate=0.1, momentum=0.9), accumulate=4)
    for seed in range(2):
        x, y = _batch(32, seed)
        big(x, y)
        for i in range(4):
            small(x[8 * i : 8 * (i + 1)], y[8 * i : 8 * (i + 1)])
    a, b = _params(big_model), _params(small_model)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)


def test_clipping_bounds_the_global_norm_of_the_update():
    mx.random.seed(1)
    model = Mlp()
    before = _params(model)
    step = make_train_step(model, optim.SGD(learning_rate=1.0), clip_grad_norm=0.01)
    step(*_batch())
    after = _params(model)
    norm = math.sqrt(sum(((before[k] - after[k]) ** 2).sum() for k in before))
    assert norm == pytest.approx(0.01, rel=1e-4)  # the raw gradient is far larger than 0.01


@pytest.mark.parametrize("step_count", [0, 1, 17, 29, 30, 64, 99])
def test_one_cycle_matches_pytorchs_formula(step_count):
    max_lr, total, pct = 0.2, 100, 0.3
    initial, final = max_lr / 25, max_lr / 25 / 1e4
    peak, end = pct * total - 1, total - 1

    def cos(start, stop, p):
        return stop + (start - stop) / 2 * (math.cos(math.pi * p) + 1)

    if step_count <= peak:
        expected = cos(initial, max_lr, step_count / peak)
    else:
        expected = cos(max_lr, final, (step_count - peak) / (end - peak))
    got = schedules.one_cycle(max_lr, total)(mx.array(step_count)).item()
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_other_schedules_match_their_formulas():
    wc = schedules.warmup_cosine(0.1, total_steps=110, warmup_steps=10, end_lr=0.001)
    for t in (0, 5, 10, 60, 110):
        ref = (
            0.1 * t / 10
            if t < 10
            else 0.001 + 0.5 * 0.099 * (1 + math.cos(math.pi * (t - 10) / 100))
        )
        assert wc(mx.array(t)).item() == pytest.approx(ref, rel=1e-5)
    ms = schedules.multistep(0.1, [30, 60], gamma=0.1)
    assert [round(ms(mx.array(t)).item(), 6) for t in (29, 30, 59, 60)] == [0.1, 0.01, 0.01, 0.001]
    lin = schedules.linear_decay(1.0, total_steps=10, warmup_steps=2, end_lr=0.2)
    assert [round(lin(mx.array(t)).item(), 6) for t in (1, 2, 6, 10)] == [0.5, 1.0, 0.6, 0.2]


def test_ema_matches_a_numpy_reference():
    mx.random.seed(2)
    model = Mlp()
    ema = EMA(model, decay=0.9, warmup=True)
    shadow = _params(model)
    opt = optim.SGD(learning_rate=0.5)
    step = make_train_step(model, opt)
    for n in range(5):
        step(*_batch(seed=n))
        ema.update()
        d = min(0.9, (1 + n) / (10 + n))
        shadow = {k: d * shadow[k] + (1 - d) * v for k, v in _params(model).items()}
    for k, v in tree_flatten(ema.shadow):
        np.testing.assert_allclose(np.array(v), shadow[k], atol=1e-6, err_msg=k)


def _numpy_log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def test_label_smoothing_and_soft_target_losses_match_numpy():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=6)
    logp = _numpy_log_softmax(logits.astype(np.float64))
    smooth = np.full((6, 5), 0.1 / 5) + 0.9 * np.eye(5)[labels]
    ref = -(smooth * logp).sum(1).mean()
    got = cross_entropy(mx.array(logits), mx.array(labels), label_smoothing=0.1).item()
    assert got == pytest.approx(ref, rel=1e-5)
    lam, perm = 0.7, rng.permutation(6)
    soft = lam * np.eye(5)[labels] + (1 - lam) * np.eye(5)[labels[perm]]
    ref_mix = -(soft * logp).sum(1).mean()
    got_mix = cross_entropy(mx.array(logits), mx.array(soft.astype(np.float32))).item()
    assert got_mix == pytest.approx(ref_mix, rel=1e-5)
    with pytest.raises(ValueError, match="targets"):
        cross_entropy(mx.array(logits), mx.zeros((6, 4)))


class _PoisonedLoader:
    """Digits batches, with NaN pixels in the batch at `poison`."""

    def __init__(self, poison):
        self.inner = DataLoader(Digits(train=False, transform=T.ToTensor()), batch_size=30)
        self.poison = poison

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        for i, (x, y) in enumerate(self.inner):
            yield (x * mx.nan if i == self.poison else x), y


def test_a_planted_nan_stops_training_naming_the_step(tmp_path):
    model = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    checkpoint = cb.ModelCheckpoint(monitor=None)
    trainer = mv.Trainer(
        model,
        optim.SGD(learning_rate=0.01),
        callbacks=[checkpoint],
        run_dir=tmp_path,
        log_every=4,
        verbose=False,
    )
    trainer.fit(_PoisonedLoader(poison=None), epochs=1)
    saved = checkpoint.last_path
    with pytest.raises(NonFiniteLossError, match=r"NaN or infinite at step 19 .*epoch 2"):
        trainer.fit(_PoisonedLoader(poison=6), epochs=2)  # epoch 2 batch 7 = step 12 + 7
    assert checkpoint.last_path == saved
    mv.checkpoint.verify_checkpoint(saved)


def _seeded_run(seed):
    mx.random.seed(seed)
    model = Mlp(dropout=0.3)
    data = Digits(train=True, transform=T.Compose([T.RandomCrop(8, padding=1), T.ToTensor()]))
    loader = DataLoader(data.subset(range(256)), batch_size=32, shuffle=True, seed=seed)
    trainer = mv.Trainer(model, optim.Adam(learning_rate=1e-3), seed=seed, verbose=False)
    trainer.fit(loader, epochs=2)
    return _params(model)


def test_seeded_runs_repeat_exactly():
    a, b, c = _seeded_run(7), _seeded_run(7), _seeded_run(8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["fc1.weight"], c["fc1.weight"])


def test_bfloat16_compute_keeps_float32_master_weights():
    mx.random.seed(4)
    model32 = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    model16 = _copy_of(
        model32, lambda: mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    )
    x, y = _batch()
    loss32, _ = make_train_step(model32, optim.SGD(learning_rate=0.01))(x, y)
    loss16, _ = make_train_step(model16, optim.SGD(learning_rate=0.01), precision="bfloat16")(x, y)
    assert all(v.dtype == mx.float32 for _, v in tree_flatten(model16.parameters()))
    assert loss16.item() == pytest.approx(loss32.item(), rel=2e-2)
    a, b = _params(model32), _params(model16)
    assert max(np.abs(a[k] - b[k]).max() for k in a) < 1e-3


def test_float16_skips_steps_whose_gradients_overflow():
    mx.random.seed(5)
    model = Mlp()
    step = make_train_step(model, optim.Adam(learning_rate=1e-2), precision="float16")
    x, y = _batch()
    step(x, y)
    good = _params(model)
    scale = step.scaler.scale.item()
    step(x * 1e6, y)  # float16 activations overflow
    assert all(np.array_equal(good[k], v) for k, v in _params(model).items())
    assert step.scaler.scale.item() == scale / 2


def test_weight_decay_skips_norms_and_biases():
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    before = _params(model)
    opt = with_weight_decay(optim.SGD, 0.5, learning_rate=1.0)
    opt.init(model.trainable_parameters())
    opt.update(model, tree_map(mx.zeros_like, model.trainable_parameters()))
    after = _params(model)
    np.testing.assert_allclose(after["layers.0.weight"], before["layers.0.weight"] * 0.5)
    for k in ("layers.0.bias", "layers.1.weight", "layers.1.bias"):
        np.testing.assert_array_equal(after[k], before[k])


def test_parameter_groups_get_their_own_learning_rates():
    model = Mlp()
    before = _params(model)
    opt = grouped([("fc2.*", optim.SGD(learning_rate=1.0)), ("*", optim.SGD(learning_rate=0.0))])
    make_train_step(model, opt)(*_batch())
    after = _params(model)
    assert np.array_equal(after["fc1.weight"], before["fc1.weight"])
    assert not np.array_equal(after["fc2.weight"], before["fc2.weight"])


def test_callbacks_stop_early_log_csv_and_reduce_the_learning_rate(tmp_path):
    data = ArrayDataset(np.random.default_rng(0).random((64, 8, 8, 1), np.float32), [0, 1] * 32)
    model = mv.create_model("simple_cnn", num_classes=2, in_channels=1, input_size=8)
    stop = cb.EarlyStopping(monitor="val_accuracy", mode="max", patience=1, min_delta=1.0)
    plateau = cb.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1)
    log = cb.CSVLogger(tmp_path / "m.csv")
    trainer = mv.Trainer(
        model, optim.SGD(learning_rate=0.1), callbacks=[plateau, log, stop], verbose=False
    )
    history = trainer.fit(DataLoader(data, 16), epochs=10, val_loader=DataLoader(data, 32))
    assert len(history) == 2  # epoch 2 cannot improve accuracy by 1.0
    rows = list(csv.DictReader((tmp_path / "m.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[0]["val_accuracy"]) == pytest.approx(history[0]["val_accuracy"])
    if history[1]["val_loss"] >= history[0]["val_loss"]:
        assert trainer.learning_rate == pytest.approx(0.05)
    else:
        assert trainer.learning_rate == pytest.approx(0.1)


def test_checkpoints_keep_the_best_and_the_last(tmp_path):
    data = Digits(train=False, transform=T.ToTensor())
    model = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    keep = cb.ModelCheckpoint(monitor="val_accuracy", keep_last=1, keep_best=1)
    trainer = mv.Trainer(
        model, optim.Adam(learning_rate=3e-3), callbacks=[keep], run_dir=tmp_path, verbose=False
    )
    history = trainer.fit(DataLoader(data, 60), epochs=4, val_loader=DataLoader(data, 120))
    best_epoch = max(history, key=lambda r: r["val_accuracy"])["epoch"]
    folders = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert keep.last_path.name == "step-00000024" and keep.last_path.name in folders
    assert keep.best_path.name == f"step-{6 * best_epoch:08d}"
    assert len(folders) == (1 if best_epoch == 4 else 2)


def test_evaluate_reports_per_class_accuracy_and_a_confusion_matrix():
    data = Digits(train=False, transform=T.ToTensor())
    model = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    result = mv.Trainer(model).evaluate(DataLoader(data, 100))
    confusion = np.array(result["confusion_matrix"])
    assert confusion.sum() == 360
    np.testing.assert_array_equal(confusion.sum(1), np.bincount(data.labels, minlength=10))
    assert result["accuracy"] == pytest.approx(np.trace(confusion) / 360)
    assert result["per_class_accuracy"][3] == pytest.approx(confusion[3, 3] / confusion[3].sum())
    assert result["top5"] >= result["accuracy"]
