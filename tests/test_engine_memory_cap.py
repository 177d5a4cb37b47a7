import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlxvision as mv
from mlxvision.data import ArrayDataset, DataLoader
from mlxvision.engine import make_train_step
from mlxvision.engine.memory_cap import MemoryCap, working_set


def _nbytes(tree) -> int:
    return sum(a.nbytes for _, a in tree_flatten(tree))


def test_the_working_set_lies_between_what_must_stay_and_the_free_running_peak():
    mx.random.seed(0)
    model = mv.create_model("resnet20", num_classes=10)
    step = make_train_step(model, optim.SGD(0.1, momentum=0.9), streams=1)
    x = mx.array(np.random.default_rng(0).random((32, 32, 32, 3), np.float32))
    y = mx.array(np.arange(32) % 10)

    def run():
        mx.eval(step(x, y), step.state)

    run()
    mx.synchronize()
    mx.reset_peak_memory()
    run()
    mx.synchronize()
    free_peak = mx.get_peak_memory()
    limit = mx.get_memory_limit()
    measured = working_set(run)
    assert mx.get_memory_limit() == limit
    # the parameters, their gradients and the momentum are alive together at the update
    must_stay = 3 * _nbytes(model.trainable_parameters()) + x.nbytes
    # what the host ran ahead held 10-16% of the peak on a 2-core CPU, loaded or not;
    # without the zero limit the two peaks came within 3%
    assert must_stay < measured < 0.95 * free_peak, (measured, free_peak)


def _run(cap: MemoryCap | None):
    mx.random.seed(3)
    rng = np.random.default_rng(3)
    data = ArrayDataset(rng.random((96, 16, 16, 3), np.float32), rng.integers(0, 4, 96).tolist())
    model = mv.create_model("resnet20", num_classes=4)
    trainer = mv.Trainer(
        model,
        optim.SGD(learning_rate=0.05, momentum=0.9),
        callbacks=[cap] if cap else [],
        seed=3,
        verbose=False,
        streams=1,
    )
    history = trainer.fit(DataLoader(data, batch_size=16, shuffle=True, seed=3), epochs=1)
    return model, history


def test_a_capped_run_trains_as_an_uncapped_one_and_gives_the_limit_back():
    limit = mx.get_memory_limit()
    cap = MemoryCap(slack=0.05)
    capped, capped_history = _run(cap)
    assert mx.get_memory_limit() == limit
    assert cap.working_set_bytes > _nbytes(capped.parameters())
    assert cap.cap_bytes == int(cap.working_set_bytes * 1.05)
    free, free_history = _run(None)
    assert capped_history[0]["loss"] == free_history[0]["loss"]
    pairs = zip(tree_flatten(capped.parameters()), tree_flatten(free.parameters()), strict=True)
    for (name, a), (_, b) in pairs:
        assert mx.array_equal(a, b).item(), name


def test_the_cap_holds_during_the_run():
    seen = []

    class Watch(mv.engine.callbacks.Callback):
        def on_step_end(self, trainer):
            seen.append(mx.get_memory_limit())

    limit = mx.get_memory_limit()
    cap = MemoryCap()
    mx.random.seed(0)
    data = ArrayDataset(np.zeros((64, 8, 8, 1), np.float32), [0, 1] * 32)
    model = mv.create_model("simple_cnn", num_classes=2, in_channels=1, input_size=8)
    trainer = mv.Trainer(model, optim.SGD(0.01), callbacks=[cap, Watch()], verbose=False)
    trainer.fit(DataLoader(data, 8), epochs=1)
    # step 1 compiles, step 2 is measured under a limit of zero, steps 3-8 run capped
    assert seen == [0, cap.cap_bytes] + [cap.cap_bytes] * 6
    assert mx.get_memory_limit() == limit


def test_a_failing_run_gives_the_limit_back_too():
    def batches():
        for step in range(6):
            if step == 4:
                raise RuntimeError("the loader broke")
            yield mx.zeros((8, 8, 8, 1)), mx.array([0, 1] * 4)

    limit = mx.get_memory_limit()
    cap = MemoryCap()
    model = mv.create_model("simple_cnn", num_classes=2, in_channels=1, input_size=8)
    trainer = mv.Trainer(model, optim.SGD(0.01), callbacks=[cap], verbose=False)
    with pytest.raises(RuntimeError, match="the loader broke"):
        trainer.fit(batches(), epochs=1)
    assert cap.cap_bytes is not None  # the cap was in force when the loader failed
    assert mx.get_memory_limit() == limit


def test_slack_must_be_a_fraction():
    with pytest.raises(ValueError, match="slack"):
        MemoryCap(slack=1.5)
