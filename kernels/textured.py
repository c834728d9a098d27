"""render_textured's shading pass in Triton: interpolate (uv) -> sample_texture (bilinear) ->
composite over a background, one program per block of pixels of one image, writing only the
image (csrc/textured_pixel.h is the C++ form).

The steps are those of kernels/interpolate.py and kernels/texture.py, in the same precision,
so that (interpreted) the image is bit-equal to the unfused chain's: uv in the attributes'
dtype, the tap sum in float64 rounded once, the composite colour * m + background * (1 - m) in
the image's dtype. On a GPU, Triton's fused multiply-adds (enable_fp_fusion) may round the
unfused and the fused kernels differently in the last bit. Backward: the gathers (grad_rast
through uv, and where wanted the background's, the mask multiplier's and the pixel uv's
gradients) per pixel, the texture gradient a scatter to the four taps summed in fixed point
(kernels/fixed_sum.py) by two launches, as sample_texture's backward.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from nl3dmm.constants import BOUNDARY_MODES

from . import fixed_sum
from .interpolate import _load_pixel
from .texture import channel_backward
from .render_math import bilinear_taps, bilinear_weight_grads, bilinear_weights
from .runtime import cdiv, launch, pixel_block


@triton.jit
def _round(x, F64: tl.constexpr):
    """x rounded to the image's dtype (float64 stays). One return: the compiler types every
    return statement of a function, constexpr branches included."""
    if not F64:
        x = x.to(tl.float32)
    return x


@triton.jit
def _sample(rast_ptr, tri_ptr, attr_ptr, mask_ptr, pixel, live, num_vertices, num_triangles, tex_h,
            tex_w, HAS_MASK: tl.constexpr, MODE: tl.constexpr):
    """The pixel's composite weight m (coverage x multiplier), whether it is covered (hit) and
    shaded (covered, finite uv), uv's four taps and fraction, and its corner uvs (interpolate's arithmetic)."""
    w0, w1, hit, i0, i1, i2 = _load_pixel(rast_ptr, tri_ptr, pixel, live, num_vertices,
                                          num_triangles)
    w2 = 1.0 - w0 - w1
    a0u = tl.load(attr_ptr + i0 * 2 + 0, mask=hit, other=0.0)
    a1u = tl.load(attr_ptr + i1 * 2 + 0, mask=hit, other=0.0)
    a2u = tl.load(attr_ptr + i2 * 2 + 0, mask=hit, other=0.0)
    a0v = tl.load(attr_ptr + i0 * 2 + 1, mask=hit, other=0.0)
    a1v = tl.load(attr_ptr + i1 * 2 + 1, mask=hit, other=0.0)
    a2v = tl.load(attr_ptr + i2 * 2 + 1, mask=hit, other=0.0)
    u = tl.where(hit, w0 * a0u + w1 * a1u + w2 * a2u, 0.0)
    v = tl.where(hit, w0 * a0v + w1 * a1v + w2 * a2v, 0.0)
    shaded = hit & (u - u == 0.0) & (v - v == 0.0)  # NaN/Inf uv only from a foreign raster
    coverage = tl.where(hit, 1.0, 0.0).to(w0.dtype)
    if HAS_MASK:
        m = coverage * tl.load(mask_ptr + pixel, mask=live, other=0.0)
    else:
        m = coverage
    i00, i01, i10, i11, in00, in01, in10, in11, fx, fy = bilinear_taps(
        tl.where(shaded, u, 0.0).to(tl.float64), tl.where(shaded, v, 0.0).to(tl.float64), tex_h,
        tex_w, MODE)
    return (m, hit, shaded, i00, i01, i10, i11, in00, in01, in10, in11, fx, fy,
            a0u, a1u, a2u, a0v, a1v, a2v)


@triton.jit
def _forward_kernel(rast_ptr, tri_ptr, attr_ptr, tex_ptr, background_ptr, mask_ptr, out_ptr,
                    num_vertices, num_triangles, tex_h, tex_w, height, width,
                    ATTR_BATCHED: tl.constexpr, TEX_BATCHED: tl.constexpr, HAS_BACKGROUND: tl.constexpr,
                    HAS_MASK: tl.constexpr, F64: tl.constexpr, MODE: tl.constexpr,
                    CHANNELS: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < height * width
    pixel = b * height * width + p
    if ATTR_BATCHED:
        attr_ptr += b * num_vertices * 2
    if TEX_BATCHED:
        tex_ptr += b * tex_h * tex_w * CHANNELS
    (m, hit, shaded, i00, i01, i10, i11, in00, in01, in10, in11, fx, fy,
     a0u, a1u, a2u, a0v, a1v, a2v) = _sample(rast_ptr, tri_ptr, attr_ptr, mask_ptr, pixel, live,
                                             num_vertices, num_triangles, tex_h, tex_w, HAS_MASK, MODE)
    w00, w01, w10, w11 = bilinear_weights(fx, fy, in00, in01, in10, in11)
    look = live & shaded
    for c in tl.static_range(CHANNELS):
        t00 = tl.load(tex_ptr + i00 * CHANNELS + c, mask=look, other=0.0).to(tl.float64)
        t01 = tl.load(tex_ptr + i01 * CHANNELS + c, mask=look, other=0.0).to(tl.float64)
        t10 = tl.load(tex_ptr + i10 * CHANNELS + c, mask=look, other=0.0).to(tl.float64)
        t11 = tl.load(tex_ptr + i11 * CHANNELS + c, mask=look, other=0.0).to(tl.float64)
        colour = _round(w00 * t00 + w01 * t01 + w10 * t10 + w11 * t11, F64)
        colour = tl.where(look, colour, 0.0)
        value = colour * m
        if HAS_BACKGROUND:
            bg = tl.load(background_ptr + pixel * CHANNELS + c, mask=live, other=0.0)
            value = value + bg * (1.0 - m)
        else:
            value = value + 0.0
        tl.store(out_ptr + pixel * CHANNELS + c, value, mask=live)


@triton.jit
def _backward_kernel(rast_ptr, tri_ptr, attr_ptr, tex_ptr, background_ptr, mask_ptr, grad_out_ptr,
                     meta_ptr, acc_ptr, grad_background_ptr, grad_mask_ptr, grad_rast_ptr, grad_uv_ptr,
                     num_values, num_vertices, num_triangles, tex_h, tex_w, height, width,
                     ATTR_BATCHED: tl.constexpr, TEX_BATCHED: tl.constexpr, HAS_BACKGROUND: tl.constexpr,
                     HAS_MASK: tl.constexpr, WANT_BACKGROUND: tl.constexpr, WANT_MASK: tl.constexpr,
                     WANT_UV: tl.constexpr, F64: tl.constexpr, MODE: tl.constexpr,
                     CHANNELS: tl.constexpr, BLOCK: tl.constexpr, PASS: tl.constexpr):
    """grad_tex: one pass of kernels/fixed_sum.py into num_values sums; the gathers are written
    by the last pass only."""
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < height * width
    pixel = b * height * width + p
    base = b * 0
    if ATTR_BATCHED:
        attr_ptr += b * num_vertices * 2
    if TEX_BATCHED:
        tex_ptr += b * tex_h * tex_w * CHANNELS
        base = b * tex_h * tex_w * CHANNELS
    (m, hit, shaded, i00, i01, i10, i11, in00, in01, in10, in11, fx, fy,
     a0u, a1u, a2u, a0v, a1v, a2v) = _sample(rast_ptr, tri_ptr, attr_ptr, mask_ptr, pixel, live,
                                             num_vertices, num_triangles, tex_h, tex_w, HAS_MASK, MODE)
    look = live & shaded
    w00, w01, w10, w11 = bilinear_weights(fx, fy, in00, in01, in10, in11)
    du00, du01, du10, du11, dv00, dv01, dv10, dv11 = bilinear_weight_grads(
        fx, fy, in00, in01, in10, in11, tex_h, tex_w)
    g_u = tl.full([BLOCK], 0.0, tl.float64)
    g_v = tl.full([BLOCK], 0.0, tl.float64)
    g_m = tl.full([BLOCK], 0.0, tl.float64)
    for c in tl.static_range(CHANNELS):
        g = tl.load(grad_out_ptr + pixel * CHANNELS + c, mask=live, other=0.0)
        # The colour's gradient g * m, in the image's dtype as the unfused chain holds it.
        gc = tl.where(look, g * m, 0.0).to(tl.float64)
        t00 = tl.load(tex_ptr + i00 * CHANNELS + c, mask=look, other=0.0).to(tl.float64)
        t01 = tl.load(tex_ptr + i01 * CHANNELS + c, mask=look, other=0.0).to(tl.float64)
        t10 = tl.load(tex_ptr + i10 * CHANNELS + c, mask=look, other=0.0).to(tl.float64)
        t11 = tl.load(tex_ptr + i11 * CHANNELS + c, mask=look, other=0.0).to(tl.float64)
        g_u, g_v = channel_backward(meta_ptr, acc_ptr, num_values, base + c, i00, i01, i10, i11,
                                    w00, w01, w10, w11, du00, du01, du10, du11, dv00, dv01, dv10, dv11,
                                    t00, t01, t10, t11, gc, look, g_u, g_v, CHANNELS, PASS)
        if WANT_MASK:
            colour = _round(w00 * t00 + w01 * t01 + w10 * t10 + w11 * t11, F64).to(tl.float64)
            colour = tl.where(look, colour, 0.0)
            if HAS_BACKGROUND:
                bg = tl.load(background_ptr + pixel * CHANNELS + c, mask=live, other=0.0).to(tl.float64)
            else:
                bg = tl.full([BLOCK], 0.0, tl.float64)
            g_m += tl.where(hit, g.to(tl.float64) * (colour - bg), 0.0)
        if PASS != 0:
            if WANT_BACKGROUND:
                tl.store(grad_background_ptr + pixel * CHANNELS + c, g * (1.0 - m), mask=live)
    if PASS == 0:
        return
    # The pixel uv's gradient in the image's dtype (sample_texture's grad_uv), then
    # interpolate's backward: d uv / d(b0, b1) = (a0 - a2, a1 - a2).
    g_u = tl.where(look, _round(g_u, F64), 0.0)
    g_v = tl.where(look, _round(g_v, F64), 0.0)
    g_uu = g_u.to(tl.float64)
    g_vv = g_v.to(tl.float64)
    g_b0 = g_uu * (a0u.to(tl.float64) - a2u.to(tl.float64))
    g_b0 += g_vv * (a0v.to(tl.float64) - a2v.to(tl.float64))
    g_b1 = g_uu * (a1u.to(tl.float64) - a2u.to(tl.float64))
    g_b1 += g_vv * (a1v.to(tl.float64) - a2v.to(tl.float64))
    zero = tl.full([BLOCK], 0.0, tl.float64)
    tl.store(grad_rast_ptr + pixel * 4 + 0, tl.where(look, g_b0, zero), mask=live)
    tl.store(grad_rast_ptr + pixel * 4 + 1, tl.where(look, g_b1, zero), mask=live)
    tl.store(grad_rast_ptr + pixel * 4 + 2, zero, mask=live)
    tl.store(grad_rast_ptr + pixel * 4 + 3, zero, mask=live)
    if WANT_UV:
        tl.store(grad_uv_ptr + pixel * 2 + 0, g_u, mask=live)
        tl.store(grad_uv_ptr + pixel * 2 + 1, g_v, mask=live)
    if WANT_MASK:
        tl.store(grad_mask_ptr + pixel, g_m, mask=live)


def _flags(attr_batched: bool, tex_batched: bool, background: Optional[torch.Tensor],
           mask: Optional[torch.Tensor], rast: torch.Tensor, boundary: str, C: int) -> dict:
    return dict(ATTR_BATCHED=bool(attr_batched), TEX_BATCHED=bool(tex_batched),
                HAS_BACKGROUND=background is not None, HAS_MASK=mask is not None,
                F64=rast.dtype == torch.float64, MODE=BOUNDARY_MODES[boundary], CHANNELS=C)


def render_textured(rast: torch.Tensor, tri: torch.Tensor, attr: torch.Tensor, attr_batched: bool,
                    tex: torch.Tensor, tex_batched: bool, background: Optional[torch.Tensor],
                    mask: Optional[torch.Tensor], boundary: str, out: torch.Tensor) -> torch.Tensor:
    """rast (B, H, W, 4), tri (F, 3) int32, attr (B or 1, V, 2), tex (B or 1, Ht, Wt, C),
    background (B, H, W, C) or None, mask (B, H, W) or None, contiguous on one device and (but
    tri) of one dtype; writes the (B, H, W, C) image into out and returns it."""
    B, H, W, _ = rast.shape
    _, Ht, Wt, C = tex.shape
    block = pixel_block(rast.device, H * W)
    launch(_forward_kernel, (cdiv(H * W, block), B), rast.device, rast, tri, attr, tex,
           rast if background is None else background, rast if mask is None else mask, out,
           attr.shape[1], tri.shape[0], Ht, Wt, H, W,
           **_flags(attr_batched, tex_batched, background, mask, rast, boundary, C), BLOCK=block)
    return out


def render_textured_backward(rast: torch.Tensor, tri: torch.Tensor, attr: torch.Tensor,
                             attr_batched: bool, tex: torch.Tensor, tex_batched: bool,
                             background: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                             boundary: str, grad_out: torch.Tensor, want_background: bool,
                             want_mask: bool, want_uv: bool
                             ) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor],
                                        torch.Tensor, Optional[torch.Tensor]]:
    """(grad_tex, grad_background or None, grad_mask or None, grad_rast, grad_uv or None)."""
    B, H, W, _ = rast.shape
    _, Ht, Wt, C = tex.shape
    fixed_sum.check_term_count(4 * H * W * (1 if tex_batched else B))  # clamp: 4 taps, 1 texel
    meta, acc = fixed_sum.scratch(tex.numel(), tex.device)
    grad_rast = torch.empty_like(rast)
    grad_background = torch.empty((B, H, W, C), dtype=rast.dtype, device=rast.device) if want_background else None
    grad_mask = torch.empty((B, H, W), dtype=rast.dtype, device=rast.device) if want_mask else None
    grad_uv = torch.empty((B, H, W, 2), dtype=rast.dtype, device=rast.device) if want_uv else None
    block = pixel_block(rast.device, H * W)
    for p in fixed_sum.passes():
        launch(_backward_kernel, (cdiv(H * W, block), B), rast.device, rast, tri, attr, tex,
               rast if background is None else background, rast if mask is None else mask, grad_out,
               meta, acc, grad_rast if grad_background is None else grad_background,
               grad_rast if grad_mask is None else grad_mask, grad_rast,
               grad_rast if grad_uv is None else grad_uv, tex.numel(), attr.shape[1], tri.shape[0],
               Ht, Wt, H, W, **_flags(attr_batched, tex_batched, background, mask, rast, boundary, C),
               WANT_BACKGROUND=bool(want_background), WANT_MASK=bool(want_mask), WANT_UV=bool(want_uv),
               BLOCK=block, PASS=p)
    grad_tex = fixed_sum.finish(meta, acc).view(tex.shape).to(tex.dtype)
    return grad_tex, grad_background, grad_mask, grad_rast, grad_uv
