"""Saves under a real OS limit and reports what was raised (used by test_checkpoint_errors.py).

    python checkpoint_errors_child.py first FOLDER      # write the first checkpoints, weights 1
    python checkpoint_errors_child.py fsize FOLDER      # RLIMIT_FSIZE of 64 KiB, then save
    python checkpoint_errors_child.py readonly FOLDER   # save into folders made read-only

Every attempt saves weights of 2. The last line printed is JSON: one entry per attempt, or
``{"skip": reason}`` when the limit cannot be imposed here.
"""

import ctypes
import json
import os
import resource
import signal
import sys
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_map

import mlxvision as mv
from mlxvision.checkpoint import CheckpointManager, save_checkpoint

NO_DAC = "MLXVISION_TEST_NO_DAC"
CAPS = {"CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3}
PR_CAPBSET_DROP = 24


def model_with(value: float):
    model = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)
    model.update(tree_map(lambda p: mx.full(p.shape, value), model.parameters()))
    return model


def contents(value: float) -> dict:
    model = model_with(value)
    return dict(
        optimizer_state={"step": mx.array(3), "momentum": model.parameters()},
        state={"global_step": int(value), "metrics": {"val_accuracy": value / 10}},
    )


def attempts(folder: Path) -> dict:
    model = model_with(2.0)
    return {
        "model file": lambda: mv.save(model, folder / "m"),
        "checkpoint folder": lambda: save_checkpoint(
            folder / "ckpt", model, overwrite=True, **contents(2.0)
        ),
        "new checkpoint folder": lambda: save_checkpoint(
            folder / "ckpt-new", model, **contents(2.0)
        ),
        "manager": lambda: CheckpointManager(folder / "run", keep_last=2).save(
            2, model, **contents(2.0)
        ),
    }


def report(what: dict) -> dict:
    results = {}
    for name, attempt in what.items():
        try:
            attempt()
            results[name] = {"raised": None}
        except Exception as err:  # noqa: BLE001 - the parent checks what it was
            cause = err.__cause__
            results[name] = {
                "raised": type(err).__name__,
                "is_oserror": isinstance(err, OSError),
                "errno": getattr(err, "errno", None),
                "message": str(err),
                "cause": type(cause).__name__ if cause else None,
                "cause_errno": getattr(cause, "errno", None),
            }
    return results


def without_root_privileges() -> str | None:
    """Re-run this script as root without the capabilities that ignore file permissions."""
    if os.geteuid() != 0 or os.environ.get(NO_DAC):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        for name, number in CAPS.items():
            if libc.prctl(PR_CAPBSET_DROP, number, 0, 0, 0) != 0:
                return f"running as root and cannot drop {name}: {os.strerror(ctypes.get_errno())}"
    except (OSError, AttributeError) as err:
        return f"running as root and cannot drop capabilities ({err})"
    os.environ[NO_DAC] = "1"
    os.execv(sys.executable, [sys.executable, *sys.argv])
    return None  # not reached


def main() -> None:
    mode, folder = sys.argv[1], Path(sys.argv[2])
    if mode == "first":
        model = model_with(1.0)
        model_file = mv.save(model, folder / "m")
        save_checkpoint(folder / "ckpt", model, **contents(1.0))
        CheckpointManager(folder / "run", keep_last=2).save(1, model, **contents(1.0))
        reloaded = tree_flatten(mv.load(model_file).parameters())
        assert all(mx.all(p == 1.0).item() for _, p in reloaded), "first save did not round-trip"
        print(json.dumps({"params": len(tree_flatten(model.parameters()))}))
    elif mode == "fsize":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
        print(json.dumps(report(attempts(folder))))
    elif mode == "readonly":
        skip = without_root_privileges()
        if skip is None:
            try:  # does the folder's mode stop this process? (root with full capabilities: no)
                os.close(os.open(folder / "probe", os.O_WRONLY | os.O_CREAT, 0o600))
                os.unlink(folder / "probe")
                skip = "chmod does not stop this process from writing"
            except PermissionError:
                pass
        print(json.dumps({"skip": skip} if skip else report(attempts(folder))))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
