import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest

import mlxvision as mv
from mlxvision.data import ArrayDataset, DataLoader, Digits
from mlxvision.data import transforms as T


def _digits(train):
    return Digits(train=train, transform=T.Compose([T.ToTensor(), T.Normalize([0.3], [0.4])]))


def test_fit_learns_the_digits_and_reports_each_epoch(capsys):
    mx.random.seed(0)
    model = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    trainer = mv.Trainer(model, optim.Adam(learning_rate=2e-3), log_every=5)
    train = DataLoader(_digits(True), batch_size=64, shuffle=True, drop_last=True)
    history = trainer.fit(train, epochs=3, val_loader=DataLoader(_digits(False), batch_size=100))
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["val_accuracy"] > 0.85
    assert history[-1]["loss"] < history[0]["loss"]
    printed = capsys.readouterr()
    assert "Epoch [3/3], Loss: " in printed.out + printed.err
    assert "Val Accuracy: " in printed.out + printed.err


def test_evaluate_matches_a_direct_computation_with_a_padded_last_batch():
    mx.random.seed(1)
    model = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    test = _digits(False)
    trainer = mv.Trainer(model, verbose=False)
    result = trainer.evaluate(DataLoader(test, batch_size=128))  # 128 + 128 + 104
    model.eval()
    x = T.Compose([T.ToTensor(), T.Normalize([0.3], [0.4])])(mx.array(test.images))
    logits = np.array(model(x))
    labels = test.labels
    shifted = logits - logits.max(1, keepdims=True)
    losses = np.log(np.exp(shifted).sum(1)) - shifted[np.arange(len(labels)), labels]
    assert result["accuracy"] == pytest.approx((logits.argmax(1) == labels).mean(), abs=1e-9)
    assert result["loss"] == pytest.approx(losses.mean(), rel=1e-5)


def test_epochs_count_the_whole_run_and_fit_needs_an_optimizer():
    data = ArrayDataset(np.random.default_rng(0).random((32, 8, 8, 1), np.float32), [0, 1] * 16)
    model = mv.create_model("simple_cnn", num_classes=2, in_channels=1, input_size=8)
    with pytest.raises(ValueError, match="no optimizer"):
        mv.Trainer(model).fit(DataLoader(data, 16), epochs=1)
    trainer = mv.Trainer(model, optim.SGD(learning_rate=0.01), verbose=False)
    trainer.fit(DataLoader(data, 16), epochs=1)
    assert [r["epoch"] for r in trainer.fit(DataLoader(data, 16), epochs=3)] == [2, 3]
    with pytest.raises(ValueError, match="already completed 3 epochs"):
        trainer.fit(DataLoader(data, 16), epochs=3)
    with pytest.raises(ValueError, match="epochs"):
        trainer.fit(DataLoader(data, 16), epochs=0)


def test_wrong_channel_count_in_a_batch_is_reported_with_both_shapes():
    data = ArrayDataset(np.zeros((8, 8, 8, 3), np.float32), [0] * 8, classes=["a", "b"])
    model = mv.create_model("simple_cnn", num_classes=2, in_channels=1, input_size=8)
    trainer = mv.Trainer(model, optim.SGD(learning_rate=0.1), verbose=False)
    with pytest.raises(
        ValueError, match=r"expected images of shape \(N, H, W, 1\).*\(8, 8, 8, 3\)"
    ):
        trainer.fit(DataLoader(data, 8), epochs=1)
