"""The kernel-level interface every backend implements.

Methods take validated, contiguous tensors on the backend's device and return new tensors;
they never build autograd graphs (engine/render/ops.py wraps them in autograd Functions).
`out` arguments let tests hand in poisoned buffers to prove every element gets written.
"""
from __future__ import annotations

import ctypes
from typing import Any, Optional

import torch

from ...constants import BOUNDARY_MODES as BOUNDARY_CODES  # noqa: F401  (re-exported to cpu, cuda)
from .. import pending, reference


class Backend:
    name: str = "?"

    def unavailable_reason(self) -> Optional[str]:
        """None when usable here, else a sentence saying why not."""
        raise NotImplementedError

    def rasterize(self, pos: torch.Tensor, tri: torch.Tensor, height: int, width: int,
                  cull_backfaces: bool, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def coverage(self, rast: torch.Tensor) -> torch.Tensor:
        """(B, H, W) 1 where the raster has a triangle, else 0, in rast's dtype."""
        return reference.coverage(rast)

    def rasterize_backward(self, pos: torch.Tensor, tri: torch.Tensor, rast: torch.Tensor,
                           grad_rast: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def interpolate(self, attr: torch.Tensor, attr_batched: bool, rast: torch.Tensor,
                    tri: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def interpolate_backward(self, attr: torch.Tensor, attr_batched: bool, rast: torch.Tensor,
                             tri: torch.Tensor, grad_out: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def sample_texture(self, tex: torch.Tensor, tex_batched: bool, uv: torch.Tensor,
                       boundary: str, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def sample_texture_backward(self, tex: torch.Tensor, tex_batched: bool, uv: torch.Tensor,
                                boundary: str, grad_out: torch.Tensor
                                ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def antialias(self, color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor,
                  tri: torch.Tensor, topology: torch.Tensor, out: Optional[torch.Tensor] = None
                  ) -> torch.Tensor:
        raise NotImplementedError

    def antialias_backward(self, color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor,
                           tri: torch.Tensor, topology: torch.Tensor, grad_out: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """(grad_color, grad_pos); grad_pos's z column is zero."""
        raise NotImplementedError

    # The mip-mapping ops. A backend without kernels for them says so by name (the others
    # above are required of every backend).
    def interpolate_derivatives(self, attr: torch.Tensor, attr_batched: bool, rast: torch.Tensor,
                                tri: torch.Tensor, pos: torch.Tensor,
                                out: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise self._missing("interpolate_derivatives")

    def interpolate_derivatives_backward(self, attr: torch.Tensor, attr_batched: bool,
                                         rast: torch.Tensor, tri: torch.Tensor, pos: torch.Tensor,
                                         grad_out: torch.Tensor) -> torch.Tensor:
        raise self._missing("interpolate_derivatives")

    def sample_texture_mip(self, packed: torch.Tensor, tex_batched: bool, uv: torch.Tensor,
                           uv_da: torch.Tensor, boundary: str, shape: tuple[int, int, int],
                           out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """packed: (Bt, texels, C), every level of an image back to back (level 0 first);
        shape: (tex_h, tex_w, max_level) of level 0 and the coarsest level."""
        raise self._missing("sample_texture with uv_da (mip-mapped)")

    def sample_texture_mip_backward(self, packed: torch.Tensor, tex_batched: bool, uv: torch.Tensor,
                                    uv_da: torch.Tensor, boundary: str, shape: tuple[int, int, int],
                                    grad_out: torch.Tensor
                                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise self._missing("sample_texture with uv_da (mip-mapped)")

    def _missing(self, op: str) -> NotImplementedError:
        return NotImplementedError(f"backend '{self.name}' has no {op} kernel yet; "
                                   "use backend='cpu', 'cuda' or 'reference'")

    # render_textured's shading pass: interpolate (uv) -> sample_texture -> composite, fused.
    def render_textured(self, rast: torch.Tensor, tri: torch.Tensor, attr: torch.Tensor,
                        attr_batched: bool, tex: torch.Tensor, tex_batched: bool,
                        background: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                        boundary: str, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The (B, H, W, C) image: tex sampled at the uv `attr` (B or 1, V, 2) interpolates,
        times m = coverage x mask, plus background (zero when None) times 1 - m."""
        raise self._missing("render_textured")

    def render_textured_backward(self, rast: torch.Tensor, tri: torch.Tensor, attr: torch.Tensor,
                                 attr_batched: bool, tex: torch.Tensor, tex_batched: bool,
                                 background: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                                 boundary: str, grad_out: torch.Tensor, want_background: bool,
                                 want_mask: bool, want_uv: bool
                                 ) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor],
                                            torch.Tensor, Optional[torch.Tensor]]:
        """(grad_tex, grad_background, grad_mask, grad_rast, grad_uv), None where not wanted;
        grad_uv (B, H, W, 2) is the pixels' uv gradient (the caller scatters it to attr)."""
        raise self._missing("render_textured")


def empty_or(out: Optional[torch.Tensor], shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A fresh output buffer, or the caller's after checking it fits."""
    if out is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    if tuple(out.shape) != tuple(shape) or out.dtype != like.dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {like.dtype} tensor of shape {shape}, "
                         f"got {out.dtype} {tuple(out.shape)}")
    return out


class ExtensionBackend(Backend):
    """The backends whose kernels live in the compiled extension nl3dmm._C (csrc/): the CPU
    ones (module nl3dmm._C) and the CUDA ones (nl3dmm._C.cuda). Both take the same keyword
    arguments, which csrc/bindings.cpp turns into one argument struct per op
    (csrc/render_args.h), so allocating outputs and launching is written once, here.

    Subclasses say where the kernels are (`_kernels`), which devices they accept (`_require`),
    whether the kernels need scratch (`needs_scratch`) and the launch stream (`_stream`).
    Every kernel writes every element of its outputs, so none is zero-filled first.
    """

    needs_scratch = False

    def _kernels(self) -> Any:
        raise NotImplementedError

    def _require(self, **tensors: torch.Tensor) -> None:
        raise NotImplementedError

    def _stream(self, like: torch.Tensor) -> int:
        return 0

    def _output(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.empty(shape, dtype=like.dtype, device=like.device)

    def _scratch(self, nbytes: int, like: torch.Tensor) -> Optional[torch.Tensor]:
        if not self.needs_scratch or nbytes == 0:
            return None
        return torch.empty((nbytes + 7) // 8, dtype=torch.int64, device=like.device)

    def _launch(self, op: str, like: torch.Tensor, zbuf_pixels: int = 0, sums: int = 0,
                **args: Any) -> None:
        """Call kernel `op`; raise if it reported bad indices. zbuf_pixels and sums size the
        scratch (z-buffer keys, fixed-point gradient sums)."""
        ext = _extension()
        status = torch.zeros(1, dtype=torch.int32, device=like.device)
        scratch = self._scratch(zbuf_pixels * ext.ZBUF_BYTES_PER_PIXEL + sums * ext.SUM_BYTES_PER_VALUE, like)
        if scratch is not None:
            args["scratch"] = scratch
        self._call(op, like, status=status, **args)
        self._check_status(status, op)

    def _call(self, op: str, like: torch.Tensor, **args: Any) -> None:
        """The call itself: tensors go by address, with the launch stream."""
        kwargs = {k: (v.data_ptr() if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
        getattr(self._kernels(), op)(**kwargs, stream=self._stream(like))

    def _check_status(self, status: torch.Tensor, op: str) -> None:
        if status.is_cuda:
            # Reading the word would sync the device once per op: count it with the deferred
            # checks instead, reported by nl3dmm.render.check_pending() (and by later ops).
            pending.record("kernel", "indices", status[0] != 0)
            return
        # A CPU status word is plain host memory with nothing to wait for: read it by address,
        # which also keeps the CPU path free of the tensor reads the no-sync test counts.
        bits = ctypes.c_int32.from_address(status.data_ptr()).value
        if bits:
            raise ValueError(describe_status(bits, op))

    def rasterize(self, pos, tri, height, width, cull_backfaces, out=None):
        self._require(pos=pos, tri=tri)
        B, V, _ = pos.shape
        rast = empty_or(out, (B, height, width, 4), pos)
        self._launch("rasterize_forward", pos, zbuf_pixels=B * height * width,
                     f64=_is_f64(pos), pos=pos, tri=tri, B=B, V=V, F=tri.shape[0], H=height, W=width,
                     cull=bool(cull_backfaces), rast=rast)
        return rast

    def rasterize_backward(self, pos, tri, rast, grad_rast):
        self._require(pos=pos, tri=tri, rast=rast, grad_rast=grad_rast)
        B, V, _ = pos.shape
        _, H, W, _ = rast.shape
        grad_pos = self._output(tuple(pos.shape), pos)
        self._launch("rasterize_backward", pos, sums=grad_pos.numel(),
                     f64=_is_f64(pos), pos=pos, tri=tri, B=B, V=V, F=tri.shape[0], H=H, W=W,
                     rast=rast, grad_rast=grad_rast, grad_pos=grad_pos)
        return grad_pos

    def interpolate(self, attr, attr_batched, rast, tri, out=None):
        self._require(attr=attr, rast=rast, tri=tri)
        B, H, W, _ = rast.shape
        _, V, C = attr.shape
        result = empty_or(out, (B, H, W, C), rast)
        self._launch("interpolate_forward", rast, f64=_is_f64(rast), attr=attr, attr_batched=attr_batched,
                     rast=rast, tri=tri, B=B, V=V, F=tri.shape[0], C=C, H=H, W=W, out=result)
        return result

    def interpolate_backward(self, attr, attr_batched, rast, tri, grad_out):
        self._require(attr=attr, rast=rast, tri=tri, grad_out=grad_out)
        B, H, W, _ = rast.shape
        _, V, C = attr.shape
        grad_attr = self._output(tuple(attr.shape), attr)
        grad_rast = self._output(tuple(rast.shape), rast)
        self._launch("interpolate_backward", rast, sums=grad_attr.numel(),
                     f64=_is_f64(rast), attr=attr, attr_batched=attr_batched, rast=rast, tri=tri, B=B,
                     V=V, F=tri.shape[0], C=C, H=H, W=W, grad_out=grad_out, grad_attr=grad_attr,
                     grad_rast=grad_rast)
        return grad_attr, grad_rast

    def sample_texture(self, tex, tex_batched, uv, boundary, out=None):
        self._require(tex=tex, uv=uv)
        B, H, W, _ = uv.shape
        _, Ht, Wt, C = tex.shape
        result = empty_or(out, (B, H, W, C), uv)
        self._launch("sample_texture_forward", uv, f64=_is_f64(uv), tex=tex, tex_batched=tex_batched,
                     uv=uv, B=B, tex_h=Ht, tex_w=Wt, C=C, H=H, W=W, mode=BOUNDARY_CODES[boundary],
                     out=result)
        return result

    def sample_texture_backward(self, tex, tex_batched, uv, boundary, grad_out):
        self._require(tex=tex, uv=uv, grad_out=grad_out)
        B, H, W, _ = uv.shape
        _, Ht, Wt, C = tex.shape
        grad_tex = self._output(tuple(tex.shape), tex)
        grad_uv = self._output(tuple(uv.shape), uv)
        self._launch("sample_texture_backward", uv, sums=grad_tex.numel(),
                     f64=_is_f64(uv), tex=tex, tex_batched=tex_batched, uv=uv, B=B, tex_h=Ht,
                     tex_w=Wt, C=C, H=H, W=W, mode=BOUNDARY_CODES[boundary], grad_out=grad_out,
                     grad_tex=grad_tex, grad_uv=grad_uv)
        return grad_tex, grad_uv

    def antialias(self, color, rast, pos, tri, topology, out=None):
        self._require(color=color, rast=rast, pos=pos, tri=tri, topology=topology)
        B, H, W, C = color.shape
        result = empty_or(out, (B, H, W, C), color)
        self._launch("antialias_forward", color, f64=_is_f64(color), color=color, rast=rast, pos=pos,
                     tri=tri, topology=topology, B=B, V=pos.shape[1], F=tri.shape[0], C=C, H=H, W=W,
                     out=result)
        return result

    def antialias_backward(self, color, rast, pos, tri, topology, grad_out):
        self._require(color=color, rast=rast, pos=pos, tri=tri, topology=topology, grad_out=grad_out)
        B, H, W, C = color.shape
        grad_color = self._output(tuple(color.shape), color)
        grad_pos = self._output(tuple(pos.shape), pos)
        self._launch("antialias_backward", color, sums=grad_pos.numel(), f64=_is_f64(color), color=color,
                     rast=rast, pos=pos, tri=tri, topology=topology, B=B, V=pos.shape[1], F=tri.shape[0],
                     C=C, H=H, W=W, grad_out=grad_out, grad_color=grad_color, grad_pos=grad_pos)
        return grad_color, grad_pos

    def interpolate_derivatives(self, attr, attr_batched, rast, tri, pos, out=None):
        self._require(attr=attr, rast=rast, tri=tri, pos=pos)
        B, H, W, _ = rast.shape
        _, V, C = attr.shape
        result = empty_or(out, (B, H, W, 2 * C), rast)
        self._launch("interpolate_derivatives_forward", rast, f64=_is_f64(rast), attr=attr,
                     attr_batched=attr_batched, rast=rast, tri=tri, pos=pos, B=B, V=V, F=tri.shape[0],
                     C=C, H=H, W=W, out=result)
        return result

    def interpolate_derivatives_backward(self, attr, attr_batched, rast, tri, pos, grad_out):
        self._require(attr=attr, rast=rast, tri=tri, pos=pos, grad_out=grad_out)
        B, H, W, _ = rast.shape
        _, V, C = attr.shape
        grad_attr = self._output(tuple(attr.shape), attr)
        self._launch("interpolate_derivatives_backward", rast, sums=grad_attr.numel(),
                     f64=_is_f64(rast), attr_batched=attr_batched, rast=rast, tri=tri, pos=pos, B=B,
                     V=V, F=tri.shape[0], C=C, H=H, W=W, grad_out=grad_out, grad_attr=grad_attr)
        return grad_attr

    def sample_texture_mip(self, packed, tex_batched, uv, uv_da, boundary, shape, out=None):
        self._require(tex=packed, uv=uv, uv_da=uv_da)
        B, H, W, _ = uv.shape
        tex_h, tex_w, max_level = shape
        result = empty_or(out, (B, H, W, packed.shape[2]), uv)
        self._launch("sample_texture_mip_forward", uv, f64=_is_f64(uv), tex=packed,
                     tex_batched=tex_batched, uv=uv, uv_da=uv_da, B=B, tex_h=tex_h, tex_w=tex_w,
                     max_level=max_level, C=packed.shape[2], H=H, W=W, mode=BOUNDARY_CODES[boundary],
                     out=result)
        return result

    def sample_texture_mip_backward(self, packed, tex_batched, uv, uv_da, boundary, shape, grad_out):
        self._require(tex=packed, uv=uv, uv_da=uv_da, grad_out=grad_out)
        B, H, W, _ = uv.shape
        tex_h, tex_w, max_level = shape
        grad_packed = self._output(tuple(packed.shape), packed)
        grad_uv = self._output(tuple(uv.shape), uv)
        grad_uv_da = self._output(tuple(uv_da.shape), uv_da)
        self._launch("sample_texture_mip_backward", uv, sums=grad_packed.numel(), f64=_is_f64(uv),
                     tex=packed, tex_batched=tex_batched, uv=uv, uv_da=uv_da, B=B, tex_h=tex_h,
                     tex_w=tex_w, max_level=max_level, C=packed.shape[2], H=H, W=W,
                     mode=BOUNDARY_CODES[boundary], grad_out=grad_out, grad_tex=grad_packed,
                     grad_uv=grad_uv, grad_uv_da=grad_uv_da)
        return grad_packed, grad_uv, grad_uv_da

    def render_textured(self, rast, tri, attr, attr_batched, tex, tex_batched, background, mask,
                        boundary, out=None):
        optional = {k: v for k, v in (("background", background), ("mask", mask)) if v is not None}
        self._require(rast=rast, tri=tri, attr=attr, tex=tex, **optional)
        B, H, W, _ = rast.shape
        _, Ht, Wt, C = tex.shape
        result = empty_or(out, (B, H, W, C), rast)
        self._launch("render_textured_forward", rast, f64=_is_f64(rast), rast=rast, tri=tri, attr=attr,
                     attr_batched=attr_batched, tex=tex, tex_batched=tex_batched, B=B, V=attr.shape[1],
                     F=tri.shape[0], C=C, tex_h=Ht, tex_w=Wt, H=H, W=W, mode=BOUNDARY_CODES[boundary],
                     out=result, **optional)
        return result

    def render_textured_backward(self, rast, tri, attr, attr_batched, tex, tex_batched, background,
                                 mask, boundary, grad_out, want_background, want_mask, want_uv):
        optional = {k: v for k, v in (("background", background), ("mask", mask)) if v is not None}
        self._require(rast=rast, tri=tri, attr=attr, tex=tex, grad_out=grad_out, **optional)
        B, H, W, _ = rast.shape
        _, Ht, Wt, C = tex.shape
        wanted = {"grad_background": self._output((B, H, W, C), rast) if want_background else None,
                  "grad_mask": self._output((B, H, W), rast) if want_mask else None,
                  "grad_uv": self._output((B, H, W, 2), rast) if want_uv else None}
        grad_tex = self._output(tuple(tex.shape), tex)
        grad_rast = self._output(tuple(rast.shape), rast)
        self._launch("render_textured_backward", rast, sums=grad_tex.numel(), f64=_is_f64(rast), rast=rast,
                     tri=tri, attr=attr, attr_batched=attr_batched, tex=tex, tex_batched=tex_batched, B=B,
                     V=attr.shape[1], F=tri.shape[0], C=C, tex_h=Ht, tex_w=Wt, H=H, W=W,
                     mode=BOUNDARY_CODES[boundary], grad_out=grad_out, grad_tex=grad_tex, grad_rast=grad_rast,
                     **optional, **{k: v for k, v in wanted.items() if v is not None})
        return grad_tex, wanted["grad_background"], wanted["grad_mask"], grad_rast, wanted["grad_uv"]


def _is_f64(t: torch.Tensor) -> bool:
    return t.dtype == torch.float64


def _extension() -> Any:
    from nl3dmm import _C  # only reached once a backend has found the extension
    return _C


def describe_status(bits: int, op: str) -> str:
    """The ValueError message for a kernel's status bits (csrc/render_args.h)."""
    ext = _extension()
    known = ((ext.STATUS_BAD_VERTEX_INDEX, "tri holds a vertex index outside 0..V-1"),
             (ext.STATUS_BAD_TRIANGLE_ID, "rast[..., 3] holds a value that is not a triangle id 0..F (0 = empty)"),
             (ext.STATUS_BAD_TEX_COORD, "uv (or uv_da) holds NaN or Inf"),
             (ext.STATUS_BAD_NEIGHBOUR, "topology holds a vertex index outside -1..V-1"))
    problems = [text for bit, text in known if bits & bit] or [f"status bits {bits:#x}"]
    return (f"{op}: {'; '.join(problems)}. The inputs passed validation earlier, so they were "
            "changed in place behind torch's back (for example through .numpy() or .data); "
            "the kernel skipped those elements instead of reading out of bounds")
