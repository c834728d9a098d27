"""The C++ CPU backend (csrc/cpu, on its own thread pool, or on torch's OpenMP threads while
they still run after a torch op: csrc/cpu/work_pool.h), reached through the pybind11 module
nl3dmm._C.

Allocation and launch are ExtensionBackend's (base.py); this class says where the kernels
are and that they take CPU tensors.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .base import ExtensionBackend

try:
    from nl3dmm import _C
    _IMPORT_ERROR: Optional[str] = None
except ImportError as exc:  # a source checkout that was never built
    _C = None
    _IMPORT_ERROR = (f"the compiled extension nl3dmm._C is missing ({exc}); "
                     "install the package with `pip install .` or `pip install -e .`")


class CpuBackend(ExtensionBackend):
    name = "cpu"

    def coverage(self, rast: torch.Tensor) -> torch.Tensor:
        # On the kernels' pool: torch's own threads, asleep after a pause, took ~5 ms to wake
        # for this 0.1 ms pass (bench/results/pool-2026-12-02.md).
        self._require(rast=rast)
        out = torch.empty(rast.shape[:3], dtype=rast.dtype)
        self._kernels().raster_coverage(rast=rast.data_ptr(), out=out.data_ptr(), pixels=out.numel(),
                                        f64=rast.dtype == torch.float64)
        return out

    def unavailable_reason(self) -> Optional[str]:
        return _IMPORT_ERROR

    def _kernels(self) -> Any:
        if _C is None:
            raise RuntimeError(_IMPORT_ERROR)
        return _C

    def _require(self, **tensors) -> None:
        if _C is None:
            raise RuntimeError(_IMPORT_ERROR)
        for name, t in tensors.items():
            if t.device.type != "cpu":
                raise ValueError(f"backend 'cpu' needs CPU tensors, but {name} is on {t.device}")


def num_threads() -> int:
    """Threads the CPU kernels use: OpenMP's max-threads setting (OMP_NUM_THREADS,
    torch.set_num_threads), which their own pool follows."""
    if _C is None:
        raise RuntimeError(_IMPORT_ERROR)
    return _C.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the threads of the CPU kernels (and, through OpenMP's setting, torch's); results are
    bit-identical for any n."""
    if _C is None:
        raise RuntimeError(_IMPORT_ERROR)
    _C.set_num_threads(int(n))


def pool_counts() -> tuple[int, int]:
    """(team, pool): calls of the CPU kernels so far that ran on more than one thread, on the
    caller's OpenMP team (borrowed while torch's threads are still running after one of its
    parallel ops) and on the kernels' own pool (csrc/cpu/work_pool.cpp says when which)."""
    if _C is None:
        raise RuntimeError(_IMPORT_ERROR)
    team, pool = _C.pool_counts()
    return int(team), int(pool)
