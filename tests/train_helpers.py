"""Shared by the training tests: tiny synthetic training data and subprocess runs of the CLI."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from nl3dmm.face.facemodel import load_face_model


def tiny_arrays(n: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """`n` random samples on the Surrey mesh, every field the objectives read."""
    rng = np.random.default_rng(seed)
    fm = load_face_model("surrey")
    return dict(
        image=(rng.random((n, 224, 224, 3)) * 255).astype(np.uint8),
        m=(fm.m_mean + fm.m_std * rng.standard_normal((n, 8)) * 0.5).astype(np.float32),
        landmarks=(rng.random((n, 68, 2)) * 224).astype(np.float32),
        texture=(rng.random((n, 192, 224, 3)) * 255).astype(np.uint8),
        texture_mask=rng.random((n, 192, 224)) > 0.3,
        shape_para=rng.normal(0, 1e4, (n, 199)).astype(np.float32),  # used only with basis=
        exp_para=rng.normal(0, 0.3, (n, 29)).astype(np.float32),
        flipped=np.arange(n) % 2 == 1,
    )


def cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def nl3dmm_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "nl3dmm", *args]


def run_cli(args: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=cli_env(), capture_output=True, text=True, timeout=timeout, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_with_rank(parent: int, rank: int) -> list[int]:
    """Descendant pids of `parent` whose environment has RANK=rank (torchrun's workers)."""
    found, todo = [], [parent]
    while todo:
        pid = todo.pop()
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
        if pid == parent:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            found.append(pid)
    return found
