"""The lean optimizers: MLX's updates, bit for bit, in less memory."""

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import pytest
from mlx.utils import tree_flatten

from mlxvision import backend
from mlxvision.engine import lean_updates, make_train_step
from mlxvision.engine.lean_updates import (
    LeanAdam,
    LeanAdamW,
    LeanSGD,
    lean_updates_by_default,
    use_lean_updates,
)
from mlxvision.engine.optimizers import Muon, grouped

OPTIMIZERS = {
    "sgd": lambda: optim.SGD(learning_rate=0.1),
    "momentum": lambda: optim.SGD(learning_rate=0.1, momentum=0.9),
    "nesterov, decay": lambda: optim.SGD(0.1, momentum=0.9, weight_decay=5e-4, nesterov=True),
    "dampening": lambda: optim.SGD(learning_rate=0.1, momentum=0.9, dampening=0.3),
    "adam": lambda: optim.Adam(learning_rate=1e-2),
    "adam, bias correction": lambda: optim.Adam(learning_rate=1e-2, bias_correction=True),
    "adamw": lambda: optim.AdamW(learning_rate=1e-2, weight_decay=0.05, bias_correction=True),
}


def small_model() -> nn.Module:
    mx.random.seed(3)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def train(optimizer: optim.Optimizer, steps: int = 4, compiled: bool = False):
    model = small_model()
    optimizer.init(model.trainable_parameters())
    x = mx.random.normal((5, 6), key=mx.random.key(1))
    y = mx.array([0, 1, 2, 1, 0])
    grad = nn.value_and_grad(model, lambda m, x, y: nn.losses.cross_entropy(m(x), y).mean())
    state = [model.state, optimizer.state]

    def step(x, y):
        loss, grads = grad(model, x, y)
        optimizer.update(model, grads)
        return loss

    step = mx.compile(step, inputs=state, outputs=state) if compiled else step
    for _ in range(steps):
        mx.eval(step(x, y), state)
    return tree_flatten(model.parameters()), tree_flatten(optimizer.state)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_lean_updates_equal_mlx_updates(name, compiled, monkeypatch):
    monkeypatch.setattr(lean_updates, "LEAN_MIN_SIZE", 1)  # every array kept apart
    expected = train(OPTIMIZERS[name](), compiled=compiled)
    lean = use_lean_updates(OPTIMIZERS[name]())
    assert type(lean) in (LeanSGD, LeanAdam, LeanAdamW)
    actual = train(lean, compiled=compiled)
    for (name_a, a), (name_e, e) in zip(
        actual[0] + actual[1], expected[0] + expected[1], strict=True
    ):
        assert name_a == name_e
        assert mx.array_equal(a, e).item(), name_a
    assert any(
        not mx.array_equal(p, q).item()
        for (_, p), (_, q) in zip(expected[0], train(OPTIMIZERS[name](), steps=0)[0], strict=True)
    )


def test_only_mlx_classes_swap_and_back():
    class MySGD(optim.SGD):
        pass

    mine, muon = MySGD(learning_rate=0.1), Muon(learning_rate=0.1)
    assert type(use_lean_updates(mine)) is MySGD and type(use_lean_updates(muon)) is Muon
    parts = grouped([("0.*", optim.SGD(learning_rate=0.1)), ("*", optim.AdamW(1e-3))])
    use_lean_updates(parts)
    assert [type(p) for p in parts.optimizers] == [LeanSGD, LeanAdamW]
    use_lean_updates(parts, enabled=False)
    assert [type(p) for p in parts.optimizers] == [optim.SGD, optim.AdamW]


def step_memory(optimizer: optim.Optimizer) -> float:
    """Memory a compiled training step adds at its peak to what it starts with (parameters,
    optimizer state, batch), for a model whose parameters dominate, in units of the
    parameters' size."""
    model = nn.Sequential(*[nn.Linear(512, 512) for _ in range(4)])
    size = sum(p.nbytes for _, p in tree_flatten(model.parameters()))
    step = make_train_step(
        model, optimizer, lambda logits, y: (logits**2).mean(), compile=True, streams=1
    )
    x, y = mx.random.normal((4, 512)), mx.zeros((4,))
    for _ in range(2):
        mx.eval(step(x, y), step.state)
    mx.synchronize()
    mx.reset_peak_memory()
    before = mx.get_active_memory()  # arrays other tests left alive count too
    mx.eval(step(x, y), step.state)
    return (mx.get_peak_memory() - before) / size


def test_lean_updates_use_less_memory_and_the_opt_out_works(monkeypatch):
    """Momentum SGD: the lean step adds the gradients and a layer's or two's temporaries to
    parameters and momentum (measured 1.77× or 2.02× the parameters' size, as MLX's
    evaluation order falls); MLX's fused update holds new parameters or momentum in buffers of
    their own besides (3.02×; 2× more on VGG-11)."""
    monkeypatch.delenv("MLXVISION_LEAN_UPDATES", raising=False)
    lean = step_memory(optim.SGD(learning_rate=0.1, momentum=0.9))
    monkeypatch.setenv("MLXVISION_LEAN_UPDATES", "0")
    plain_optimizer = optim.SGD(learning_rate=0.1, momentum=0.9)
    plain = step_memory(plain_optimizer)
    assert type(plain_optimizer) is optim.SGD
    assert lean < 2.1 and plain > lean + 0.9, (lean, plain)


def test_only_large_arrays_are_kept_apart(tmp_path):
    """Below ``LEAN_MIN_SIZE`` values the update stays one fused kernel (a kernel launch less
    per small array); at it, the new state passes through ``mx.contiguous``."""
    from mlx.utils import tree_map

    graphs = {}
    for n in (lean_updates.LEAN_MIN_SIZE - 1, lean_updates.LEAN_MIN_SIZE):
        optimizer = LeanSGD(learning_rate=0.1, momentum=0.9)
        params = {"w": mx.zeros((n,))}
        optimizer.init(params)
        new = optimizer.apply_gradients(tree_map(mx.ones_like, params), params)
        mx.export_to_dot(str(tmp_path / f"{n}.dot"), new["w"], optimizer.state["w"]["v"])
        graphs[n] = (tmp_path / f"{n}.dot").read_text()
    assert "Contiguous" not in graphs[lean_updates.LEAN_MIN_SIZE - 1]
    assert "Contiguous" in graphs[lean_updates.LEAN_MIN_SIZE]


def test_default_swaps_and_the_setting_opts_out(monkeypatch):
    """On by default on every backend (on CUDA too: ResNet-18's H200 peak goes below
    PyTorch's); ``MLXVISION_LEAN_UPDATES=0`` keeps MLX's class."""
    monkeypatch.delenv("MLXVISION_LEAN_UPDATES", raising=False)
    assert lean_updates_by_default()
    monkeypatch.setattr(backend, "on_cpu", lambda: False)  # as if MLX computed on CUDA
    monkeypatch.setattr(mx.cuda, "is_available", lambda: True)
    assert backend.on_cuda() and lean_updates_by_default()
    model = small_model()
    step = make_train_step(model, optim.Adam(learning_rate=1e-3), compile=False)
    assert type(step.optimizer) is LeanAdam
    monkeypatch.setenv("MLXVISION_LEAN_UPDATES", "0")
    assert not lean_updates_by_default()
    step = make_train_step(model, optim.Adam(learning_rate=1e-3), compile=False)
    assert type(step.optimizer) is optim.Adam
    monkeypatch.setenv("MLXVISION_LEAN_UPDATES", "1")
    assert lean_updates_by_default()
    monkeypatch.setenv("MLXVISION_LEAN_UPDATES", "yes")
    with pytest.raises(ValueError, match="MLXVISION_LEAN_UPDATES"):
        lean_updates_by_default()
