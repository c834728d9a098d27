"""Checkpoints that survive being killed at any moment.

Each is written to a temporary file in the same folder, flushed to disk, then renamed over
its final name (rename is atomic on POSIX), so a reader sees either the old file set or the
new one, never half a file. The newest `keep` checkpoints are kept; loading falls back to an
older one, with a message, when the newest is truncated or corrupt.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

PATTERN = re.compile(r"checkpoint-(\d{8})\.pt$")
REQUIRED_KEYS = ("step", "stage", "model", "optimizers", "rng", "config")


class CheckpointError(RuntimeError):
    pass


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"checkpoint-{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in `folder`, newest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(state: dict[str, Any], folder: Path, step: int, keep: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(folder, step)
    handle, temp = tempfile.mkstemp(prefix=".tmp-checkpoint-", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, final)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    for old in list_checkpoints(folder)[max(keep, 1):]:
        old.unlink(missing_ok=True)
    return final


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load and sanity-check one checkpoint; CheckpointError names the file and the problem."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated zip, garbage bytes, unpickling errors
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or corrupt?): {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a training state")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}: not a training checkpoint of this version")
    return state


def load_latest(folder: Path, log=print) -> dict[str, Any] | None:
    """The newest readable checkpoint in `folder`, skipping (and reporting) broken ones."""
    for path in list_checkpoints(folder):
        try:
            state = read_checkpoint(path)
        except CheckpointError as exc:
            log(f"warning: {exc}; trying the previous checkpoint")
            continue
        state["path"] = str(path)
        return state
    return None
