"""One answer to "which device?" for training, evaluation, reconstruction and the loader."""
from __future__ import annotations

import os

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")


def resolve_device(name: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    """`auto`/None -> CUDA when this torch sees a GPU, else the CPU; `cpu`; `cuda` or `cuda:N`.

    A bare `cuda` (or `auto` on a GPU machine) takes GPU `local_rank`, by default the
    `LOCAL_RANK` torchrun sets (0 outside torchrun), so each process of a node gets its own.
    ValueError names the problem for anything else, e.g. `cuda` on a CPU-only torch."""
    if isinstance(name, torch.device):
        name = str(name)
    name = "auto" if name is None else name
    if not isinstance(name, str):
        raise TypeError(f"device must be a string or torch.device, got {type(name).__name__}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; choose from {', '.join(DEVICE_CHOICES)}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ValueError(f"unsupported device {name!r}; choose from {', '.join(DEVICE_CHOICES)}")
    index = device.index
    if index is None:
        index = int(os.environ.get("LOCAL_RANK", "0")) if local_rank is None else local_rank
    problem = cuda_problem(index)
    if problem is not None:
        raise ValueError(f"device {name!r} asked for, but {problem}; use device=cpu or auto")
    return torch.device("cuda", index)


def cuda_problem(index: int) -> str | None:
    """Why GPU `index` cannot be used by this torch on this machine, or None when it can."""
    if not torch.cuda.is_available():
        why = "it was built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        return f"this torch ({torch.__version__}) sees no CUDA GPU ({why})"
    if index >= torch.cuda.device_count():
        return f"cuda:{index} does not exist: only {torch.cuda.device_count()} GPU(s) are visible"
    return None
