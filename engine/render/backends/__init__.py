"""One dispatch from (tensor device, optional override) to a backend, so that model code
never names one. Order of choice when `backend` is None:

    NL3DMM_BACKEND environment variable, if set;
    CPU tensors  -> "cpu";
    CUDA tensors -> "cuda", else "triton" when the CUDA kernels are unavailable.

"reference" (pure torch, autograd) is handled by the ops themselves, not here.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from .base import Backend
from .cpu import CpuBackend
from .cuda import CudaBackend
from .triton import TritonBackend

BACKENDS: dict[str, Backend] = {b.name: b for b in (CpuBackend(), CudaBackend(), TritonBackend())}
NAMES = ("cpu", "cuda", "triton", "reference")


def available_backends() -> dict[str, Optional[str]]:
    """Every backend name -> None when usable here, else why not."""
    status = {name: b.unavailable_reason() for name, b in BACKENDS.items()}
    status["reference"] = None
    return status


def resolve_backend_name(backend: Optional[str], device: torch.device) -> str:
    if backend is None:
        backend = os.environ.get("NL3DMM_BACKEND") or None
    if backend is not None:
        if backend not in NAMES:
            raise ValueError(f"backend must be one of {NAMES} or None, got {backend!r}")
        return backend
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda":
        return "cuda" if BACKENDS["cuda"].unavailable_reason() is None else "triton"
    raise ValueError(f"no rendering backend for device {device}; use CPU or CUDA tensors")


def get_backend(name: str) -> Backend:
    """The backend object for a non-reference name, raising with the reason if unusable."""
    backend = BACKENDS[name]
    why = backend.unavailable_reason()
    if why is not None:
        raise RuntimeError(f"backend '{name}' cannot run here: {why}")
    return backend
