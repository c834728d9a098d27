"""The CUDA C++ backend (csrc/cuda). Device discovery is built; the kernels are issue 3.

Until they land this backend reports itself unavailable with the reason, and the dispatch
names that reason when a user asks for it, instead of failing somewhere deeper.
"""
from __future__ import annotations

from typing import Optional

from .base import Backend


def cuda_status() -> tuple[bool, int, str]:
    """(extension built with nvcc, usable device count, reason when 0)."""
    try:
        from nl3dmm import _C
    except ImportError as exc:
        return False, 0, f"nl3dmm._C is not built ({exc})"
    return tuple(_C.cuda_status())  # type: ignore[return-value]


class CudaBackend(Backend):
    name = "cuda"

    def unavailable_reason(self) -> Optional[str]:
        compiled, count, why = cuda_status()
        if not compiled:
            return f"CUDA is unavailable: {why}"
        if count == 0:
            return f"CUDA is unavailable: {why}"
        return "the CUDA rendering kernels are not implemented yet (issue 3); use backend='cpu'"
