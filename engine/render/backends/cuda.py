"""The CUDA C++ backend (csrc/cuda), reached through nl3dmm._C.cuda.

The kernels take raw device pointers and torch's current stream; this module owns the
tensors (outputs, the z-buffer scratch, zero-filled gradient accumulators).

STATUS: compiled in CI but not yet run on a GPU (issue 3). Until a session with a device
has run tests/test_cuda.py, `unavailable_reason()` keeps the backend off unless
NL3DMM_CUDA_UNVERIFIED=1 is set, so that nobody trains on untested kernels by default.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from .base import BOUNDARY_CODES, Backend, empty_or


def cuda_status() -> tuple[bool, int, str]:
    """(extension built with nvcc, usable device count, reason when 0)."""
    try:
        from nl3dmm import _C
    except ImportError as exc:
        return False, 0, f"nl3dmm._C is not built ({exc})"
    return tuple(_C.cuda_status())  # type: ignore[return-value]


def _kernels():
    from nl3dmm import _C
    return _C.cuda


def _stream(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


class CudaBackend(Backend):
    name = "cuda"

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

    def _require(self, **tensors: torch.Tensor) -> None:
        for name, t in tensors.items():
            if t.device.type != "cuda":
                raise ValueError(f"backend 'cuda' needs CUDA tensors, but {name} is on {t.device}")
        devices = {t.device for t in tensors.values()}
        if len(devices) > 1:
            raise ValueError(f"backend 'cuda' needs all tensors on one GPU, got {sorted(map(str, devices))}")

    def rasterize(self, pos, tri, height, width, cull_backfaces, out=None):
        self._require(pos=pos, tri=tri)
        B, V, _ = pos.shape
        rast = empty_or(out, (B, height, width, 4), pos)
        zbuf = torch.empty((B, height, width), dtype=torch.int64, device=pos.device)
        with torch.cuda.device(pos.device):
            _kernels().rasterize_forward(pos.dtype == torch.float64, pos.data_ptr(), tri.data_ptr(),
                                         B, V, tri.shape[0], height, width, bool(cull_backfaces),
                                         zbuf.data_ptr(), rast.data_ptr(), _stream(pos))
        return rast

    def rasterize_backward(self, pos, tri, rast, grad_rast):
        self._require(pos=pos, tri=tri, rast=rast, grad_rast=grad_rast)
        B, V, _ = pos.shape
        _, H, W, _ = rast.shape
        grad_pos = torch.zeros_like(pos)
        with torch.cuda.device(pos.device):
            _kernels().rasterize_backward(pos.dtype == torch.float64, pos.data_ptr(), tri.data_ptr(),
                                          rast.data_ptr(), grad_rast.data_ptr(), B, V, H, W,
                                          grad_pos.data_ptr(), _stream(pos))
        return grad_pos

    def interpolate(self, attr, attr_batched, rast, tri, out=None):
        self._require(attr=attr, rast=rast, tri=tri)
        B, H, W, _ = rast.shape
        _, V, C = attr.shape
        result = empty_or(out, (B, H, W, C), rast)
        with torch.cuda.device(rast.device):
            _kernels().interpolate_forward(rast.dtype == torch.float64, attr.data_ptr(), attr_batched,
                                           rast.data_ptr(), tri.data_ptr(), B, V, C, H, W,
                                           result.data_ptr(), _stream(rast))
        return result

    def interpolate_backward(self, attr, attr_batched, rast, tri, grad_out):
        self._require(attr=attr, rast=rast, tri=tri, grad_out=grad_out)
        B, H, W, _ = rast.shape
        _, V, C = attr.shape
        grad_attr = torch.zeros_like(attr)
        grad_rast = torch.empty_like(rast)
        with torch.cuda.device(rast.device):
            _kernels().interpolate_backward(rast.dtype == torch.float64, attr.data_ptr(), attr_batched,
                                            rast.data_ptr(), tri.data_ptr(), grad_out.data_ptr(), B, V,
                                            C, H, W, grad_attr.data_ptr(), grad_rast.data_ptr(),
                                            _stream(rast))
        return grad_attr, grad_rast

    def sample_texture(self, tex, tex_batched, uv, boundary, out=None):
        self._require(tex=tex, uv=uv)
        B, H, W, _ = uv.shape
        _, Ht, Wt, C = tex.shape
        result = empty_or(out, (B, H, W, C), uv)
        with torch.cuda.device(uv.device):
            _kernels().sample_texture_forward(uv.dtype == torch.float64, tex.data_ptr(), tex_batched,
                                              uv.data_ptr(), B, Ht, Wt, C, H, W,
                                              BOUNDARY_CODES[boundary], result.data_ptr(), _stream(uv))
        return result

    def sample_texture_backward(self, tex, tex_batched, uv, boundary, grad_out):
        self._require(tex=tex, uv=uv, grad_out=grad_out)
        B, H, W, _ = uv.shape
        _, Ht, Wt, C = tex.shape
        grad_tex = torch.zeros_like(tex)
        grad_uv = torch.empty_like(uv)
        with torch.cuda.device(uv.device):
            _kernels().sample_texture_backward(uv.dtype == torch.float64, tex.data_ptr(), tex_batched,
                                               uv.data_ptr(), grad_out.data_ptr(), B, Ht, Wt, C, H, W,
                                               BOUNDARY_CODES[boundary], grad_tex.data_ptr(),
                                               grad_uv.data_ptr(), _stream(uv))
        return grad_tex, grad_uv
