import os
import platform
import subprocess
import sys

import pytest

import mlxvision as mv
from mlxvision import backend
from mlxvision.backend import CUDA_EVAL_WIDTH, CUDA_OPS_PER_GRAPH, INSTALL_HINT, tune_cuda_graphs


def _info_in_new_process(env_extra, code="import mlxvision as mv; print(mv.info()['blas'])"):
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_info_names_versions_device_and_blas():
    info = mv.info()
    assert info["mlxvision"] == mv.__version__
    assert info["device"].startswith("Device(")
    assert info["blas"] and info["blas_reason"]


def test_blas_preload_can_be_turned_off():
    assert _info_in_new_process({"MLXVISION_BLAS": "off"}) == "MLX's own"


def test_a_bad_blas_path_is_named():
    env = {**os.environ, "MLXVISION_BLAS": "/no/such/libblas.so"}
    code = "import mlxvision"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "/no/such/libblas.so" in out.stderr


def test_preloaded_blas_gives_the_same_products_as_the_reference():
    code = (
        "import numpy as np, mlxvision, mlx.core as mx;"
        "rng = np.random.default_rng(0);"
        "a = rng.normal(size=(96, 130)).astype(np.float32);"
        "b = rng.normal(size=(130, 70)).astype(np.float32);"
        "print(np.abs(np.array(mx.array(a) @ mx.array(b)) - a.astype(np.float64) @ b).max())"
    )
    for setting in ("auto", "off"):
        assert float(_info_in_new_process({"MLXVISION_BLAS": setting}, code)) < 1e-3


def test_a_blas_choice_made_at_import_is_kept_by_later_calls(monkeypatch):
    """Later calls (the CLI imports MLX again) keep what was decided before MLX loaded; only a
    first check after MLX has loaded says that it came too late."""
    monkeypatch.delenv("MLXVISION_BLAS", raising=False)
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    missing = backend.BlasChoice(None, "no optimized BLAS found; install one")
    monkeypatch.setattr(backend, "BLAS", missing)
    backend.import_mlx()
    assert backend.BLAS is missing
    assert mv.info()["blas_reason"] == missing.reason
    monkeypatch.setattr(backend, "BLAS", backend.BlasChoice(None, backend.NOT_CHECKED))
    assert "import mlxvision first" in backend.preload_blas().reason


def test_install_hint_names_the_extras():
    assert "mlxvision[cpu]" in INSTALL_HINT and "mlxvision[cuda]" in INSTALL_HINT


def _kernel_cache_in_new_process(tmp_path, **env_changes) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MLX_PTX_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(HOME=str(tmp_path), **env_changes)
    code = "import os, mlxvision; print(os.environ.get('MLX_PTX_CACHE_DIR', '<unset>'))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_kernel_cache_is_kept_in_the_user_cache_unless_told_otherwise(tmp_path):
    import mlx.core as mx

    mine = _kernel_cache_in_new_process(tmp_path)
    assert mine == str(tmp_path / ".cache" / "mlxvision" / f"mlx-{mx.__version__}" / "ptx")
    given = _kernel_cache_in_new_process(tmp_path, MLX_PTX_CACHE_DIR=str(tmp_path / "x"))
    assert given == str(tmp_path / "x")
    assert _kernel_cache_in_new_process(tmp_path, MLXVISION_KERNEL_CACHE="default") == "<unset>"
    named = _kernel_cache_in_new_process(tmp_path, MLXVISION_KERNEL_CACHE=str(tmp_path / "k"))
    assert named == str(tmp_path / "k")


CUDA_VARIABLES = (
    "MLX_MAX_OPS_PER_BUFFER",
    "MLX_USE_CUDA_GRAPHS",
    "MLX_BFS_MAX_WIDTH",
    "MLXVISION_CUDA_GRAPH_OPS",
    "MLXVISION_DIRECT_LAUNCH",
    "MLXVISION_EVAL_WIDTH",
)


@pytest.fixture
def cuda_variables(monkeypatch):
    """The CUDA settings unset, restored after the test. MLX reads them once, at its first
    evaluation: one happens first, so the values these tests set never reach this process's
    MLX (a width of 1 would change the CPU's evaluation order for every later test)."""
    import mlx.core as mx

    mx.eval(mx.zeros(1))
    for name in CUDA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_cuda_graph_size_is_set_on_cuda_only_and_never_over_the_users(cuda_variables):
    import mlx.core as mx

    monkeypatch = cuda_variables
    monkeypatch.setattr(mx.cuda, "is_available", lambda: False)
    assert tune_cuda_graphs() == "" and "MLX_MAX_OPS_PER_BUFFER" not in os.environ
    assert "MLX_USE_CUDA_GRAPHS" not in os.environ

    monkeypatch.setattr(mx.cuda, "is_available", lambda: True)
    assert tune_cuda_graphs() == str(CUDA_OPS_PER_GRAPH) == os.environ["MLX_MAX_OPS_PER_BUFFER"]
    assert os.environ["MLX_USE_CUDA_GRAPHS"] == "0"
    monkeypatch.setenv("MLX_MAX_OPS_PER_BUFFER", "11")  # the user's value stays
    assert tune_cuda_graphs() == "11"
    monkeypatch.delenv("MLX_MAX_OPS_PER_BUFFER")
    monkeypatch.setenv("MLXVISION_CUDA_GRAPH_OPS", "default")
    assert tune_cuda_graphs() == "" and "MLX_MAX_OPS_PER_BUFFER" not in os.environ
    monkeypatch.setenv("MLXVISION_CUDA_GRAPH_OPS", "7")
    assert tune_cuda_graphs() == "7" == os.environ["MLX_MAX_OPS_PER_BUFFER"]
    monkeypatch.delenv("MLX_MAX_OPS_PER_BUFFER")
    monkeypatch.setenv("MLXVISION_CUDA_GRAPH_OPS", "many")
    with pytest.raises(ValueError, match="MLXVISION_CUDA_GRAPH_OPS"):
        tune_cuda_graphs()


def test_direct_kernel_launches_on_cuda_only_and_never_over_the_users(cuda_variables):
    import mlx.core as mx

    monkeypatch = cuda_variables
    monkeypatch.setenv("MLX_MAX_OPS_PER_BUFFER", "3")
    monkeypatch.setattr(mx.cuda, "is_available", lambda: True)
    tune_cuda_graphs()
    assert os.environ["MLX_USE_CUDA_GRAPHS"] == "0"
    monkeypatch.setenv("MLX_USE_CUDA_GRAPHS", "1")  # the user's value stays
    tune_cuda_graphs()
    assert os.environ["MLX_USE_CUDA_GRAPHS"] == "1"
    monkeypatch.delenv("MLX_USE_CUDA_GRAPHS")
    monkeypatch.setenv("MLXVISION_DIRECT_LAUNCH", "default")  # MLX's CUDA graphs
    tune_cuda_graphs()
    assert "MLX_USE_CUDA_GRAPHS" not in os.environ


def test_depth_first_evaluation_on_cuda_only_and_never_over_the_users(cuda_variables):
    import mlx.core as mx

    monkeypatch = cuda_variables
    monkeypatch.setattr(mx.cuda, "is_available", lambda: False)
    tune_cuda_graphs()
    assert "MLX_BFS_MAX_WIDTH" not in os.environ
    monkeypatch.setattr(mx.cuda, "is_available", lambda: True)
    tune_cuda_graphs()
    assert os.environ["MLX_BFS_MAX_WIDTH"] == str(CUDA_EVAL_WIDTH)
    monkeypatch.setenv("MLX_BFS_MAX_WIDTH", "8")  # the user's value stays
    tune_cuda_graphs()
    assert os.environ["MLX_BFS_MAX_WIDTH"] == "8"
    monkeypatch.delenv("MLX_BFS_MAX_WIDTH")
    monkeypatch.setenv("MLXVISION_EVAL_WIDTH", "default")  # MLX's width
    tune_cuda_graphs()
    assert "MLX_BFS_MAX_WIDTH" not in os.environ
    monkeypatch.setenv("MLXVISION_EVAL_WIDTH", "4")
    tune_cuda_graphs()
    assert os.environ["MLX_BFS_MAX_WIDTH"] == "4"
    monkeypatch.delenv("MLX_BFS_MAX_WIDTH")
    monkeypatch.setenv("MLXVISION_EVAL_WIDTH", "wide")
    with pytest.raises(ValueError, match="MLXVISION_EVAL_WIDTH"):
        tune_cuda_graphs()
