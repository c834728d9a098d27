"""The Triton backend: the kernels of nl3dmm.kernels (kernels/ in the source tree).

CUDA tensors run the compiled kernels. CPU tensors run the very same kernels through Triton's
interpreter, chosen per launch (nl3dmm.kernels.runtime.launch) rather than by setting
TRITON_INTERPRET=1: that variable is read once when triton is imported and then makes every
kernel of the process interpreted, CUDA tensors included. (Set anyway, it still works, all
interpreted.) The interpreter runs one numpy operation per Triton operation and costs
milliseconds per program: it is there so that the kernels are tested on machines without a GPU,
not for speed. The automatic dispatch never picks this backend for CPU tensors; ask for it
with backend="triton".

Semantics are the CPU backend's: same conventions, same triangle ids bit for bit, values equal
to rounding. Gradients are summed in 64-bit fixed point with integer atomics
(nl3dmm/kernels/fixed_sum.py, two launches per backward), so they are bit-deterministic on the
GPU too, whatever the program schedule; the forward pass is bit-deterministic.
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import Backend, empty_or

try:
    from nl3dmm.kernels import antialias as _antialias
    from nl3dmm.kernels import derivatives as _derivatives
    from nl3dmm.kernels import interpolate as _interpolate
    from nl3dmm.kernels import rasterize as _rasterize
    from nl3dmm.kernels import texture as _texture
    from nl3dmm.kernels import texture_mip as _texture_mip
    from nl3dmm.kernels import textured as _textured
    _IMPORT_ERROR: Optional[str] = None
except ImportError as exc:  # triton is an optional dependency: pip install 'nl3dmm[triton]'
    _IMPORT_ERROR = f"Triton is not importable ({exc}); install it with `pip install triton`"


class TritonBackend(Backend):
    name = "triton"

    def unavailable_reason(self) -> Optional[str]:
        return _IMPORT_ERROR

    def _require(self, **tensors: torch.Tensor) -> None:
        if _IMPORT_ERROR is not None:
            raise RuntimeError(_IMPORT_ERROR)
        devices = {t.device for t in tensors.values()}
        if len(devices) > 1:
            raise ValueError(f"backend 'triton' needs all tensors on one device, got {devices}")
        device = devices.pop()
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"backend 'triton' runs on CUDA (or, interpreted, CPU) tensors, not {device}")

    def rasterize(self, pos, tri, height, width, cull_backfaces, out=None):
        self._require(pos=pos, tri=tri)
        B = pos.shape[0]
        rast = empty_or(out, (B, height, width, 4), pos)
        return _rasterize.rasterize(pos, tri.int().contiguous(), height, width, cull_backfaces, rast)

    def rasterize_backward(self, pos, tri, rast, grad_rast):
        self._require(pos=pos, tri=tri, rast=rast, grad_rast=grad_rast)
        return _rasterize.rasterize_backward(pos, tri.int().contiguous(), rast, grad_rast)

    def interpolate(self, attr, attr_batched, rast, tri, out=None):
        self._require(attr=attr, rast=rast, tri=tri)
        B, H, W, _ = rast.shape
        result = empty_or(out, (B, H, W, attr.shape[2]), rast)
        return _interpolate.interpolate(attr, attr_batched, rast, tri.int().contiguous(), result)

    def interpolate_backward(self, attr, attr_batched, rast, tri, grad_out):
        self._require(attr=attr, rast=rast, tri=tri, grad_out=grad_out)
        return _interpolate.interpolate_backward(attr, attr_batched, rast, tri.int().contiguous(),
                                                 grad_out)

    def sample_texture(self, tex, tex_batched, uv, boundary, out=None):
        self._require(tex=tex, uv=uv)
        B, H, W, _ = uv.shape
        result = empty_or(out, (B, H, W, tex.shape[3]), uv)
        return _texture.sample_texture(tex, tex_batched, uv, boundary, result)

    def sample_texture_backward(self, tex, tex_batched, uv, boundary, grad_out):
        self._require(tex=tex, uv=uv, grad_out=grad_out)
        return _texture.sample_texture_backward(tex, tex_batched, uv, boundary, grad_out)

    def antialias(self, color, rast, pos, tri, topology, out=None):
        self._require(color=color, rast=rast, pos=pos, tri=tri, topology=topology)
        result = empty_or(out, tuple(color.shape), color)
        return _antialias.antialias(color, rast, pos, tri.int().contiguous(), topology.int().contiguous(),
                                    result)

    def antialias_backward(self, color, rast, pos, tri, topology, grad_out):
        self._require(color=color, rast=rast, pos=pos, tri=tri, topology=topology, grad_out=grad_out)
        return _antialias.antialias_backward(color, rast, pos, tri.int().contiguous(),
                                             topology.int().contiguous(), grad_out)

    def interpolate_derivatives(self, attr, attr_batched, rast, tri, pos, out=None):
        self._require(attr=attr, rast=rast, tri=tri, pos=pos)
        B, H, W, _ = rast.shape
        result = empty_or(out, (B, H, W, 2 * attr.shape[2]), rast)
        return _derivatives.interpolate_derivatives(attr, attr_batched, rast, tri.int().contiguous(), pos,
                                                    result)

    def interpolate_derivatives_backward(self, attr, attr_batched, rast, tri, pos, grad_out):
        self._require(attr=attr, rast=rast, tri=tri, pos=pos, grad_out=grad_out)
        return _derivatives.interpolate_derivatives_backward(attr, attr_batched, rast,
                                                             tri.int().contiguous(), pos, grad_out)

    def sample_texture_mip(self, packed, tex_batched, uv, uv_da, boundary, shape, out=None):
        self._require(tex=packed, uv=uv, uv_da=uv_da)
        B, H, W, _ = uv.shape
        result = empty_or(out, (B, H, W, packed.shape[2]), uv)
        return _texture_mip.sample_texture_mip(packed, tex_batched, uv, uv_da, boundary, shape, result)

    def sample_texture_mip_backward(self, packed, tex_batched, uv, uv_da, boundary, shape, grad_out):
        self._require(tex=packed, uv=uv, uv_da=uv_da, grad_out=grad_out)
        return _texture_mip.sample_texture_mip_backward(packed, tex_batched, uv, uv_da, boundary, shape,
                                                        grad_out)

    def render_textured(self, rast, tri, attr, attr_batched, tex, tex_batched, background, mask,
                        boundary, out=None):
        optional = {k: v for k, v in (("background", background), ("mask", mask)) if v is not None}
        self._require(rast=rast, tri=tri, attr=attr, tex=tex, **optional)
        B, H, W, _ = rast.shape
        result = empty_or(out, (B, H, W, tex.shape[3]), rast)
        return _textured.render_textured(rast, tri.int().contiguous(), attr, attr_batched, tex, tex_batched,
                                         background, mask, boundary, result)

    def render_textured_backward(self, rast, tri, attr, attr_batched, tex, tex_batched, background,
                                 mask, boundary, grad_out, want_background, want_mask, want_uv):
        optional = {k: v for k, v in (("background", background), ("mask", mask)) if v is not None}
        self._require(rast=rast, tri=tri, attr=attr, tex=tex, grad_out=grad_out, **optional)
        return _textured.render_textured_backward(rast, tri.int().contiguous(), attr, attr_batched, tex,
                                                  tex_batched, background, mask, boundary, grad_out,
                                                  want_background, want_mask, want_uv)
