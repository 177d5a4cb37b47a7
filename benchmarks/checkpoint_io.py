"""Save and load time and peak memory of a ResNet-50 checkpoint, against plain safetensors.

The model is ``create_model("resnet50")`` (1000 classes, 25.6 M parameters, 102 MB in
float32) with the state of its optimizer after one update: SGD with momentum (one moment, as
large as the weights) or AdamW (two moments). What is timed:

- ``checkpoint folder``: :func:`mlxvision.checkpoint.save_checkpoint` (model + optimizer state,
  SHA-256 manifest, fsync, rename); loading is what resuming does: ``mlxvision.load(folder,
  model=model)`` (every file checked against its SHA-256 first) and
  ``read_arrays(folder, "optimizer")``, all evaluated;
- ``model file``: :func:`mlxvision.save` / ``mlxvision.load(path, model=model)`` (weights and
  BatchNorm statistics only, no optimizer);
- ``floor``: ``mx.save_safetensors`` / ``mx.load`` + ``mx.eval`` of the same arrays flattened
  into one dict (weights + optimizer state for the folder, weights alone for the model file):
  no temporary, no fsync, no hashing, no checks.

Every measurement runs in a fresh process: build the model (and, to save, the optimizer
state), then time one save or one load. Its peak memory is the peak resident set during the
operation (Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``; elsewhere
``ru_maxrss``) minus the resident set just before it. The rounds interleave the methods; the
table gives the median and min–max over ``--repeats`` rounds. Loads read the files the same
round just wrote, so they come from the page cache. The time spent in SHA-256 and in fsync is
measured inside the same call and shown apart; for the floor, which does not fsync, the fsync
column is the time an ``os.fsync`` of its file takes right after the save (``+``: not part of
its save time). ``os.sync()`` runs before each timed operation, so no fsync flushes data of an
earlier one. Usage::

    python benchmarks/checkpoint_io.py [--optimizers sgd,adamw] [--repeats 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPTIMIZERS = ("sgd", "adamw")
METHODS = ("checkpoint folder", "floor (weights + optimizer)", "model file", "floor (weights)")
WITH_OPTIMIZER = {"checkpoint folder", "floor (weights + optimizer)"}
FILE_NAMES = {
    "checkpoint folder": "ckpt",
    "floor (weights + optimizer)": "all.safetensors",
    "model file": "model.safetensors",
    "floor (weights)": "weights.safetensors",
}


# --- one measurement, in a fresh process ------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current resident set
        return True
    except OSError:
        return False


def _resident_mib() -> float:
    kib = _status_kib("VmRSS")
    if kib is None:  # no /proc: the peak so far is the best estimate
        return _max_rss_mib()
    return kib / 1024


def _max_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS


def _peak_mib() -> float:
    kib = _status_kib("VmHWM")
    return kib / 1024 if kib is not None else _max_rss_mib()


def measure(method: str, op: str, optimizer: str, path: Path) -> dict:
    """Build the model (and optimizer state), then time one save or load of ``method``."""
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten, tree_map

    import mlxvision
    from mlxvision import _files
    from mlxvision.checkpoint import folder as checkpoint_folder
    from mlxvision.checkpoint import read_arrays, save_checkpoint

    spent = {"sha256": 0.0, "fsync": 0.0}

    def timed(name, function):
        def wrapper(*args):
            start = time.perf_counter()
            try:
                return function(*args)
            finally:
                spent[name] += time.perf_counter() - start

        return wrapper

    checkpoint_folder.sha256_of = timed("sha256", checkpoint_folder.sha256_of)
    _files._fsync = timed("fsync", _files._fsync)

    model = mlxvision.create_model("resnet50", num_classes=1000)
    mx.eval(model.parameters())
    state = None
    if op == "save" and method in WITH_OPTIMIZER:
        opt = optim.SGD(0.1, momentum=0.9) if optimizer == "sgd" else optim.AdamW(1e-3)
        opt.update(model, tree_map(lambda p: p * 1e-3, model.trainable_parameters()))
        mx.eval(model.parameters(), opt.state)
        state = opt.state
    weights = dict(tree_flatten(model.parameters()))
    flat = dict(weights)
    if state is not None:
        flat.update({f"optimizer.{k}": v for k, v in tree_flatten(state)})

    os.sync()  # no dirty pages of earlier measurements left for this one's fsync to flush
    gc.collect()
    exact_peak = _reset_peak()
    before = _resident_mib()
    start = time.perf_counter()
    if op == "save":
        if method == "checkpoint folder":
            save_checkpoint(path, model, optimizer_state=state, state={"global_step": 1})
        elif method == "model file":
            mlxvision.save(model, path)
        else:
            mx.save_safetensors(str(path), flat)
        loaded = None
    elif method == "checkpoint folder":
        loaded = [mlxvision.load(path, model=model).parameters(), read_arrays(path, "optimizer")]
    elif method == "model file":
        loaded = mlxvision.load(path, model=model).parameters()
    else:
        loaded = mx.load(str(path))
    mx.eval(loaded)
    seconds = time.perf_counter() - start
    peak = _peak_mib()
    if op == "save" and method.startswith("floor"):  # what making it durable would add
        _files._fsync(path)  # timed by the wrapper above
    size = sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size
    return {
        "seconds": seconds,
        "peak_mib": peak - before,
        "exact_peak": exact_peak,
        "bytes": size,
        **spent,
    }


# --- the rounds -------------------------------------------------------------------------------


def _run_child(method: str, op: str, optimizer: str, path: Path) -> dict:
    command = [sys.executable, __file__, "--child", json.dumps([method, op, optimizer, str(path)])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{method} {op} ({optimizer}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _file_system(folder: Path) -> str:
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                _, point, fs_type, *_ = line.split()
                if str(folder.resolve()).startswith(point) and len(point) > len(best):
                    best, kind = point, fs_type
    except OSError:
        pass
    return kind


def _cell(values: list[float], digits: int = 2) -> str:
    if not values:
        return "–"
    median = statistics.median(values)
    return f"{median:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        method, op, optimizer, path = json.loads(args.child)
        print(json.dumps(measure(method, op, optimizer, Path(path))))
        return
    optimizers = args.optimizers.split(",")
    for name in optimizers:
        if name not in OPTIMIZERS:
            parser.error(f"--optimizers: unknown {name!r}; choose from {', '.join(OPTIMIZERS)}")
    if args.repeats < 1:
        parser.error("--repeats must be ≥ 1")

    import mlxvision

    info = mlxvision.info()
    root = Path(tempfile.mkdtemp(prefix="checkpoint-io-", dir=args.dir))
    cases = [(m, o) for o in optimizers for m in METHODS if m in WITH_OPTIMIZER]
    cases += [(m, "-") for m in METHODS if m not in WITH_OPTIMIZER]
    results: dict[tuple[str, str, str], list[dict]] = {}
    load_start, started = os.getloadavg()[0], time.perf_counter()
    try:
        for round_ in range(args.repeats):
            for method, optimizer in cases:
                path = root / f"{optimizer}-{FILE_NAMES[method]}"
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
                for op in ("save", "load"):
                    result = _run_child(method, op, optimizer, path)
                    results.setdefault((method, optimizer, op), []).append(result)
            print(f"round {round_ + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    exact = all(r["exact_peak"] for rs in results.values() for r in rs)

    print(f"command: `python {' '.join(sys.argv)}`\n")
    print(
        f"mlxvision {info['mlxvision']}, mlx {info['mlx']}, Python {info['python']}, "
        f"{info['platform']} ({info['cpu']}), MLX device "
        f"{info['device']}, malloc: {info['malloc']}, files on {_file_system(root.parent)}, "
        f"{args.repeats} interleaved rounds in {time.perf_counter() - started:.0f} s, load "
        f"average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end; peak memory "
        f"{'VmHWM after reset' if exact else 'ru_maxrss (an upper bound)'}\n"
    )
    print(
        "| method | optimizer | MB on disk | save s | of which SHA-256 "
        "| of which fsync (floor: +after) | save peak MiB | load s | of which SHA-256 "
        "| load peak MiB |"
    )
    print("|---|---|---:|---|---|---|---|---|---|---|")
    for method, optimizer in cases:
        save, load = results[(method, optimizer, "save")], results[(method, optimizer, "load")]
        hashed = method == "checkpoint folder"
        print(
            f"| {method} | {optimizer} | {save[0]['bytes'] / 1e6:.1f} "
            f"| {_cell([r['seconds'] for r in save])} "
            f"| {_cell([r['sha256'] for r in save]) if hashed else '–'} "
            f"| {'+' if method.startswith('floor') else ''}{_cell([r['fsync'] for r in save])} "
            f"| {_cell([r['peak_mib'] for r in save], 0)} "
            f"| {_cell([r['seconds'] for r in load])} "
            f"| {_cell([r['sha256'] for r in load]) if hashed else '–'} "
            f"| {_cell([r['peak_mib'] for r in load], 0)} |"
        )


if __name__ == "__main__":
    main()
