"""The C++/OpenMP backend (csrc/cpu), reached through the pybind11 module nl3dmm._C."""
from __future__ import annotations

from typing import Optional

import torch

from .base import BOUNDARY_CODES, Backend, empty_or

try:
    from nl3dmm import _C
    _IMPORT_ERROR: Optional[str] = None
except ImportError as exc:  # a source checkout that was never built
    _C = None
    _IMPORT_ERROR = (f"the compiled extension nl3dmm._C is missing ({exc}); "
                     "install the package with `pip install .` or `pip install -e .`")


def _dtype_name(t: torch.Tensor) -> str:
    return "float64" if t.dtype == torch.float64 else "float32"


class CpuBackend(Backend):
    name = "cpu"

    def unavailable_reason(self) -> Optional[str]:
        return _IMPORT_ERROR

    def _require(self, **tensors: torch.Tensor) -> None:
        if _C is None:
            raise RuntimeError(_IMPORT_ERROR)
        for name, t in tensors.items():
            if t.device.type != "cpu":
                raise ValueError(f"backend 'cpu' needs CPU tensors, but {name} is on {t.device}")

    def rasterize(self, pos, tri, height, width, cull_backfaces, out=None):
        self._require(pos=pos, tri=tri)
        B, V, _ = pos.shape
        rast = empty_or(out, (B, height, width, 4), pos)
        _C.rasterize_forward(_dtype_name(pos), pos.data_ptr(), tri.data_ptr(), B, V, tri.shape[0],
                             height, width, bool(cull_backfaces), rast.data_ptr())
        return rast

    def rasterize_backward(self, pos, tri, rast, grad_rast):
        self._require(pos=pos, tri=tri, rast=rast, grad_rast=grad_rast)
        B, V, _ = pos.shape
        _, H, W, _ = rast.shape
        grad_pos = torch.empty_like(pos)
        _C.rasterize_backward(_dtype_name(pos), pos.data_ptr(), tri.data_ptr(), rast.data_ptr(),
                              grad_rast.data_ptr(), B, V, tri.shape[0], H, W, grad_pos.data_ptr())
        return grad_pos

    def interpolate(self, attr, attr_batched, rast, tri, out=None):
        self._require(attr=attr, rast=rast, tri=tri)
        B, H, W, _ = rast.shape
        _, V, C = attr.shape
        result = empty_or(out, (B, H, W, C), rast)
        _C.interpolate_forward(_dtype_name(rast), attr.data_ptr(), attr_batched, rast.data_ptr(),
                               tri.data_ptr(), B, V, C, H, W, result.data_ptr())
        return result

    def interpolate_backward(self, attr, attr_batched, rast, tri, grad_out):
        self._require(attr=attr, rast=rast, tri=tri, grad_out=grad_out)
        B, H, W, _ = rast.shape
        _, V, C = attr.shape
        grad_attr = torch.empty_like(attr)
        grad_rast = torch.empty_like(rast)
        _C.interpolate_backward(_dtype_name(rast), attr.data_ptr(), attr_batched, rast.data_ptr(),
                                tri.data_ptr(), grad_out.data_ptr(), B, V, C, H, W,
                                grad_attr.data_ptr(), grad_rast.data_ptr())
        return grad_attr, grad_rast

    def sample_texture(self, tex, tex_batched, uv, boundary, out=None):
        self._require(tex=tex, uv=uv)
        B, H, W, _ = uv.shape
        _, Ht, Wt, C = tex.shape
        result = empty_or(out, (B, H, W, C), uv)
        _C.sample_texture_forward(_dtype_name(uv), tex.data_ptr(), tex_batched, uv.data_ptr(), B,
                                  Ht, Wt, C, H, W, BOUNDARY_CODES[boundary], result.data_ptr())
        return result

    def sample_texture_backward(self, tex, tex_batched, uv, boundary, grad_out):
        self._require(tex=tex, uv=uv, grad_out=grad_out)
        B, H, W, _ = uv.shape
        _, Ht, Wt, C = tex.shape
        grad_tex = torch.empty_like(tex)
        grad_uv = torch.empty_like(uv)
        _C.sample_texture_backward(_dtype_name(uv), tex.data_ptr(), tex_batched, uv.data_ptr(),
                                   grad_out.data_ptr(), B, Ht, Wt, C, H, W,
                                   BOUNDARY_CODES[boundary], grad_tex.data_ptr(),
                                   grad_uv.data_ptr())
        return grad_tex, grad_uv


def num_threads() -> int:
    """OpenMP threads used by the CPU kernels."""
    if _C is None:
        raise RuntimeError(_IMPORT_ERROR)
    return _C.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the OpenMP threads of the CPU kernels; results are bit-identical for any n."""
    if _C is None:
        raise RuntimeError(_IMPORT_ERROR)
    _C.set_num_threads(int(n))
