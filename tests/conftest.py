import os
from pathlib import Path

import pytest

import mlxvision  # noqa: F401  (loads MLX the way users get it: fast BLAS first)


@pytest.fixture
def data_root() -> Path:
    """The folder of real datasets named by MLXVISION_DATA; tests using it are `realdata`."""
    root = os.environ.get("MLXVISION_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("MLXVISION_DATA does not name a folder of real datasets")
    return Path(root)
