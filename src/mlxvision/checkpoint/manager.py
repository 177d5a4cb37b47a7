"""Checkpoints of a run: numbered folders, an index written atomically, keep-last/keep-best."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from .._files import atomic_path, move_into_place, remove, write_bytes, write_error
from .folder import is_checkpoint, read_state, save_checkpoint, verify_checkpoint
from .safetensors_check import CheckpointError

INDEX = "index.json"
CHECKPOINTS = "checkpoints"
NAME = re.compile(r"^step-(\d+)$")


class CheckpointManager:
    """Save checkpoints of a run into ``folder/step-NNNNNNNN/`` and keep the useful ones.

    The index (``index.json``) names every kept checkpoint with its step and monitored metric;
    it is rewritten atomically after each save, so the previous checkpoint stays valid until the
    new one is complete. Keeps the ``keep_last`` newest and the ``keep_best`` best by
    ``monitor`` (``mode`` ``"max"`` or ``"min"``).

    Example:
        >>> import tempfile, mlx.nn as nn
        >>> manager = CheckpointManager(tempfile.mkdtemp(), keep_last=1)
        >>> for step in (10, 20):
        ...     _ = manager.save(step, nn.Linear(2, 2), state={"global_step": step})
        >>> [c["step"] for c in manager.entries()], manager.latest().name
        ([20], 'step-00000020')
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        keep_last: int = 1,
        keep_best: int = 0,
        monitor: str | None = None,
        mode: str = "max",
    ) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last: expected at least 1, got {keep_last}")
        if keep_best and not monitor:
            raise ValueError("keep_best needs a metric to monitor (monitor='val_accuracy', ...)")
        if mode not in ("max", "min"):
            raise ValueError(f"mode: expected 'max' or 'min', got {mode!r}")
        self.folder = Path(folder)
        self.keep_last = keep_last
        self.keep_best = keep_best
        self.monitor = monitor
        self.mode = mode

    def entries(self) -> list[dict[str, Any]]:
        """The kept checkpoints, oldest first: ``{"name", "step", "metric"}``."""
        index = self.folder / INDEX
        if index.is_file():
            try:
                entries = json.loads(index.read_text())["checkpoints"]
                return [e for e in entries if is_checkpoint(self.folder / e["name"])]
            except (ValueError, KeyError, TypeError):
                pass  # an unreadable index: fall back to the folders themselves
        return self._scan()

    def _scan(self) -> list[dict[str, Any]]:
        if not self.folder.is_dir():
            return []
        found = []
        for child in self.folder.iterdir():
            match = NAME.match(child.name)
            if match and is_checkpoint(child):
                metric = read_state(child).get("metrics", {}).get(self.monitor or "")
                found.append({"name": child.name, "step": int(match[1]), "metric": metric})
        return sorted(found, key=lambda e: e["step"])

    def latest(self) -> Path | None:
        """The newest kept checkpoint folder, or None."""
        entries = self.entries()
        return self.folder / entries[-1]["name"] if entries else None

    def best(self) -> Path | None:
        """The kept checkpoint with the best monitored metric, or None."""
        scored = [e for e in self.entries() if _finite(e.get("metric"))]
        if not scored:
            return None
        pick = max if self.mode == "max" else min
        return self.folder / pick(scored, key=lambda e: e["metric"])["name"]

    def save(self, step: int, model, **contents: Any) -> Path:
        """Write checkpoint ``step-NNNNNNNN`` (arguments as :func:`save_checkpoint`), then
        update the index and delete what is no longer kept.

        Raises:
            OSError: writing failed (disk full, file too large, permission denied, ...): the
                subclass matching its ``errno``, a message naming the checkpoint and the reason,
                the original error as ``__cause__``. The index and the checkpoints it names are
                then as they were before the call.
        """
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise write_error(self.folder, err, "could not create the folder") from err
        for pattern in (".step-*.tmp-*", ".step-*.old-*"):  # left by a save that was killed
            for stale in self.folder.glob(pattern):
                remove(stale)
        name = f"step-{step:08d}"
        path = self.folder / name
        # a re-run of the same step after a resume replaces it: keep the old one restorable
        backup = _hard_link_copy(path) if path.exists() else None
        try:
            save_checkpoint(path, model, overwrite=True, **contents)
            metric = (contents.get("state") or {}).get("metrics", {}).get(self.monitor or "")
            entries = [e for e in self.entries() if e["name"] != name]
            entries.append({"name": name, "step": step, "metric": metric})
            kept = self._kept(entries)
            try:
                self._write_index([e for e in entries if e["name"] in kept])
            except OSError as err:
                if backup is None:
                    remove(path)
                else:
                    move_into_place(backup, path)
                raise write_error(
                    path,
                    err,
                    f"could not record the checkpoint in {self.folder / INDEX}",
                    "the new checkpoint was undone; the index and the checkpoints it names are "
                    "unchanged",
                ) from err
        finally:
            if backup is not None:
                remove(backup)
        for entry in entries:
            if entry["name"] not in kept:
                shutil.rmtree(self.folder / entry["name"], ignore_errors=True)
        return path

    def _kept(self, entries: list[dict[str, Any]]) -> set[str]:
        kept = {e["name"] for e in entries[-self.keep_last :]}
        if self.keep_best:
            scored = [e for e in entries if _finite(e.get("metric"))]
            scored.sort(key=lambda e: e["metric"], reverse=self.mode == "max")
            kept |= {e["name"] for e in scored[: self.keep_best]}
        return kept

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        with atomic_path(self.folder / INDEX) as tmp:
            write_bytes(tmp, json.dumps({"checkpoints": entries}, indent=1).encode())


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _hard_link_copy(path: Path) -> Path:
    """A hidden copy of checkpoint folder ``path`` beside it, made of hard links where it can."""
    copy = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    try:
        copy.mkdir()
        for file in path.iterdir():
            try:
                os.link(file, copy / file.name)
            except OSError:  # a file system without hard links
                shutil.copy2(file, copy / file.name)
    except OSError as err:
        remove(copy)
        raise write_error(
            path, err, "could not keep the previous version while replacing it", "it is unchanged"
        ) from err
    return copy


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint folder meant by ``path``: itself, or the newest in a run folder.

    A run folder is one holding ``checkpoints/`` (or the ``checkpoints`` folder itself).

    Example:
        >>> resolve_checkpoint("no/such/run")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mlxvision.checkpoint.safetensors_check.CheckpointError: no/such/run: ...
    """
    path = Path(path)
    if is_checkpoint(path):
        return path
    for folder in (path / CHECKPOINTS, path):
        if folder.is_dir():
            latest = CheckpointManager(folder).latest()
            if latest is not None:
                verify_checkpoint(latest)
                return latest
    raise CheckpointError(
        f"{path}: no checkpoint there (expected a checkpoint folder with manifest.json, or a "
        f"run folder with {CHECKPOINTS}/)"
    )
