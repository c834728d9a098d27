"""The CUDA C++ backend (csrc/cuda), reached through nl3dmm._C.cuda.

Allocation and launch are ExtensionBackend's (base.py); this class adds the device checks,
torch's current stream and the device scratch (the z-buffer, the fixed-point gradient sums
that make the backward passes bit-deterministic).

STATUS: the kernels run on the CPU in CI through the host harness (tests/test_cuda_host.py)
but have not yet run on a GPU (issue 3). Until a session with a device has run
tests/test_cuda.py, `unavailable_reason()` keeps the backend off unless
NL3DMM_CUDA_UNVERIFIED=1 is set, so that nobody trains on untested kernels by default.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import torch

from .base import ExtensionBackend


def cuda_status() -> tuple[bool, int, str]:
    """(extension built with nvcc, usable device count, reason when 0)."""
    try:
        from nl3dmm import _C
    except ImportError as exc:
        return False, 0, f"nl3dmm._C is not built ({exc})"
    return tuple(_C.cuda_status())  # type: ignore[return-value]


class CudaBackend(ExtensionBackend):
    name = "cuda"
    needs_scratch = True

    def unavailable_reason(self) -> Optional[str]:
        compiled, count, why = cuda_status()
        if not compiled or count == 0:
            return f"CUDA is unavailable: {why}"
        if not torch.cuda.is_available():
            return "CUDA is unavailable: this torch build has no CUDA support"
        if os.environ.get("NL3DMM_CUDA_UNVERIFIED") != "1":
            return ("the CUDA kernels have not been verified on a GPU yet (issue 3); "
                    "set NL3DMM_CUDA_UNVERIFIED=1 to run them anyway")
        return None

    def _kernels(self) -> Any:
        from nl3dmm import _C
        return _C.cuda

    def _require(self, **tensors: torch.Tensor) -> None:
        for name, t in tensors.items():
            if t.device.type != "cuda":
                raise ValueError(f"backend 'cuda' needs CUDA tensors, but {name} is on {t.device}")
        devices = {t.device for t in tensors.values()}
        if len(devices) > 1:
            raise ValueError(f"backend 'cuda' needs all tensors on one GPU, got {sorted(map(str, devices))}")

    def _stream(self, like: torch.Tensor) -> int:
        return torch.cuda.current_stream(like.device).cuda_stream

    def _call(self, op: str, like: torch.Tensor, **args: Any) -> None:
        with torch.cuda.device(like.device):  # the kernels launch on the current device
            super()._call(op, like, **args)
