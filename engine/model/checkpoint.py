"""Checkpoints that survive being killed at any moment, and that cannot run code when loaded.

Writing. Each checkpoint is written to a temporary file in the same folder, flushed to disk,
read back and checked, and only then renamed over its final name (rename is atomic on POSIX),
so a reader sees either the old file set or the new one, never half a file. Rotation then
keeps the newest `keep` checkpoints *that read back*: an unreadable file is never counted, so
a good checkpoint is never deleted in favour of a broken one.

Loading. `torch.load` is called in one place, `load_weights_only`, with `weights_only=True`:
a checkpoint may hold only tensors, numbers, strings, None and dicts/lists/tuples of them
(the training config as a plain dict, optimizer state dicts, the RNG state as tensors).
Anything else (a pickled object whose `__reduce__` would run code) is refused with
`UnsafeCheckpointError` before any of it is executed. A checkpoint a user downloads is then as
safe to open as an image. `save_checkpoint` refuses to write such types in the first place.

Checkpoints of nl3dmm versions before weights-only loading held numpy's RNG state as a numpy
array; they are refused with a message saying so (they are not loaded).
"""
from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

PATTERN = re.compile(r"checkpoint-(\d{8})\.pt$")
REQUIRED_KEYS = ("step", "stage", "model", "optimizers", "rng", "config")
# What a checkpoint may hold: the leaves and containers torch's weights-only unpickler accepts
# by default (the subset we use).
PLAIN_LEAVES = (str, int, float, bool, type(None))  # exact types: a numpy float64 is refused
PLAIN_SEQUENCES = (list, tuple)


class CheckpointError(RuntimeError):
    """A checkpoint file is missing pieces, truncated or corrupt."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds types a weights-only load refuses: it was not loaded, and a resume
    must not quietly fall back to an older file when one is found."""


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"checkpoint-{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in `folder`, newest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def rng_state() -> dict[str, Any]:
    """The torch, numpy and CUDA generator states, as tensors and numbers (weights-only safe)."""
    kind, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    assert kind == "MT19937", kind  # the only generator np.random.get_state returns
    return {"torch": torch.get_rng_state(),
            "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["key"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def require_plain(value: Any, where: str = "checkpoint") -> None:
    """TypeError naming the first entry (as a key path) that a weights-only load would refuse."""
    if isinstance(value, torch.Tensor) or type(value) in PLAIN_LEAVES:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where} has a key of type {type(key).__name__} ({key!r}); "
                                "checkpoints hold str or int keys only")
            require_plain(item, f"{where}[{key!r}]")
        return
    if type(value) in PLAIN_SEQUENCES:
        for index, item in enumerate(value):
            require_plain(item, f"{where}[{index}]")
        return
    raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}; checkpoints hold only "
                    "tensors, numbers, strings, None and dicts/lists/tuples of them (weights-only loading)")


def load_weights_only(path: Path, mmap: bool = False) -> Any:
    """The one `torch.load` of the project: weights-only, onto the CPU. CheckpointError for a
    truncated or corrupt file, UnsafeCheckpointError (naming the refused types) for a file that
    holds anything but tensors and plain data. `mmap` maps the tensors instead of reading them
    (a fast check of the file's structure)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        refused = _refused_globals(path)
        if refused and all(name.startswith("numpy.") for name in refused):
            raise UnsafeCheckpointError(
                f"checkpoint {path} was written by an nl3dmm version before weights-only checkpoints (it holds "
                f"numpy objects: {sorted(refused)}); this version does not load it. Retrain, or resume from a "
                "checkpoint written by this version") from None
        if refused:
            raise UnsafeCheckpointError(
                f"checkpoint {path} holds types a weights-only load refuses ({sorted(refused)}): not loaded, "
                "since unpickling them could run arbitrary code. nl3dmm checkpoints hold only tensors and "
                "plain data") from None
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or corrupt?): {exc}") from exc
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated zip, garbage bytes
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or corrupt?): {exc}") from exc


def _refused_globals(path: Path) -> list[str]:
    """The pickle GLOBALs of a torch.save file that weights-only loading refuses, found by
    reading the pickle's opcodes (nothing is executed); [] when the file is not a torch zip."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # not a zip, no data.pkl: the file is simply corrupt
        return []


def read_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """Load and sanity-check one checkpoint; CheckpointError names the file and the problem."""
    state = load_weights_only(Path(path), mmap=mmap)
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a training state")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}: not a training checkpoint of this version")
    if not isinstance(state["config"], dict):
        raise CheckpointError(f"checkpoint {path}: 'config' is {type(state['config']).__name__}, "
                              "expected the training config dict")
    return state


def reads_back(path: Path) -> bool:
    """Whether `path` loads as a checkpoint (structure and tensor records, mapped, not read)."""
    try:
        read_checkpoint(path, mmap=True)
    except CheckpointError:
        return False
    return True


def save_checkpoint(state: dict[str, Any], folder: Path, step: int, keep: int = 2,
                    log: Callable[[str], Any] = print) -> Path:
    """Write `state` as checkpoint `step` of `folder` atomically, verified by reading it back,
    then delete checkpoints older than the newest `keep` readable ones."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    require_plain(state)
    folder.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(folder, step)
    handle, temp = tempfile.mkstemp(prefix=".tmp-checkpoint-", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        # Mapped, not read: the zip directory, every record and the pickle are checked (what a
        # full disk or a killed writer breaks) without holding a second copy in memory.
        written = read_checkpoint(Path(temp), mmap=True)
        if written["step"] != state["step"] or written["stage"] != state["stage"]:
            raise CheckpointError(f"checkpoint {final} read back as {written['stage']} step {written['step']}, "
                                  f"written as {state['stage']} step {state['step']}")
        os.replace(temp, final)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    rotate(folder, keep, log)
    return final


def rotate(folder: Path, keep: int, log: Callable[[str], Any] = print) -> list[Path]:
    """Delete the checkpoints older than the newest `keep` that read back; unreadable files
    newer than those are left alone (and reported), never counted. Returns what was deleted."""
    readable, deleted = 0, []
    for path in list_checkpoints(folder):
        if readable >= keep:
            path.unlink(missing_ok=True)
            deleted.append(path)
        elif reads_back(path):
            readable += 1
        else:
            log(f"warning: {path} does not read back: kept for inspection, not counted among the "
                f"{keep} checkpoint(s) kept")
    return deleted


def load_latest(folder: Path, log: Callable[[str], Any] = print) -> dict[str, Any] | None:
    """The newest readable checkpoint in `folder`, skipping (and reporting) truncated or
    corrupt ones. A checkpoint with refused types stops the search (UnsafeCheckpointError):
    someone put it there, and resuming from an older file would hide that."""
    for path in list_checkpoints(folder):
        try:
            state = read_checkpoint(path)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as exc:
            log(f"warning: {exc}; trying the previous checkpoint")
            continue
        state["path"] = str(path)
        return state
    return None
