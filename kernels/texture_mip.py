"""Trilinear (mip-mapped) texture lookup and its backward pass in Triton: one program per
block of pixels of one image, as kernels/texture.py.

The texture arrives as its packed pyramid (every level of an image back to back, level 0
first; engine/render/mipmap.py builds the levels) with a small table of each level's (texel
offset, rows, columns). Per pixel, mip_blend turns uv's screen derivatives into two levels and
a blend weight (render_math.h's mip_blend); the value is the blend of the two levels' bilinear
samples, summed in float64 over the eight taps in the C++ kernel's order and rounded once.
Backward: d out / d uv and d out / d uv_da are per-pixel gathers (float64); d out / d pyramid
is a scatter to the eight taps, summed in fixed point (kernels/fixed_sum.py, two launches).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from nl3dmm.constants import BOUNDARY_MODES

from . import fixed_sum
from .fixed_sum import scatter_add
from .render_math import bilinear_taps, bilinear_weight_grads, bilinear_weights, mip_blend
from .runtime import cdiv, launch, pixel_block


@triton.jit
def _level(table_ptr, level, live):
    """(texel offset (int64), rows, columns) of pyramid level `level` per lane."""
    offset = tl.load(table_ptr + level * 3 + 0, mask=live, other=0).to(tl.int64)
    rows = tl.load(table_ptr + level * 3 + 1, mask=live, other=1)
    cols = tl.load(table_ptr + level * 3 + 2, mask=live, other=1)
    return offset, rows, cols


@triton.jit
def _blend(uv_ptr, da_ptr, pixel, live, tex_h, tex_w, max_level):
    u = tl.load(uv_ptr + pixel * 2 + 0, mask=live, other=0.0).to(tl.float64)
    v = tl.load(uv_ptr + pixel * 2 + 1, mask=live, other=0.0).to(tl.float64)
    dudx = tl.load(da_ptr + pixel * 4 + 0, mask=live, other=0.0).to(tl.float64)
    dudy = tl.load(da_ptr + pixel * 4 + 1, mask=live, other=0.0).to(tl.float64)
    dvdx = tl.load(da_ptr + pixel * 4 + 2, mask=live, other=0.0).to(tl.float64)
    dvdy = tl.load(da_ptr + pixel * 4 + 3, mask=live, other=0.0).to(tl.float64)
    level0, level1, frac, df0, df1, df2, df3 = mip_blend(dudx, dudy, dvdx, dvdy, tex_h, tex_w, max_level)
    return u, v, level0, level1, frac, df0, df1, df2, df3


@triton.jit
def _level_taps(table_ptr, level, u, v, live, MODE: tl.constexpr):
    """One level's bilinear taps (indices into the image's pyramid), their weights and the
    weights' derivatives in u and v (bilinear_weights, bilinear_weight_grads)."""
    offset, rows, cols = _level(table_ptr, level, live)
    i00, i01, i10, i11, in00, in01, in10, in11, fx, fy = bilinear_taps(u, v, rows, cols, MODE)
    w00, w01, w10, w11 = bilinear_weights(fx, fy, in00, in01, in10, in11)
    u00, u01, u10, u11, v00, v01, v10, v11 = bilinear_weight_grads(fx, fy, in00, in01, in10, in11, rows, cols)
    return (offset + i00, offset + i01, offset + i10, offset + i11, w00, w01, w10, w11,
            u00, u01, u10, u11, v00, v01, v10, v11)


@triton.jit
def _level_value(value, tex_c, i00, i01, i10, i11, w00, w01, w10, w11, share, live,
                 CHANNELS: tl.constexpr):
    """value plus one level's share of a channel, tap by tap in trilinear_taps' order."""
    value += share * w00 * tl.load(tex_c + i00 * CHANNELS, mask=live, other=0.0).to(tl.float64)
    value += share * w01 * tl.load(tex_c + i01 * CHANNELS, mask=live, other=0.0).to(tl.float64)
    value += share * w10 * tl.load(tex_c + i10 * CHANNELS, mask=live, other=0.0).to(tl.float64)
    value += share * w11 * tl.load(tex_c + i11 * CHANNELS, mask=live, other=0.0).to(tl.float64)
    return value


@triton.jit
def _forward_kernel(tex_ptr, uv_ptr, da_ptr, table_ptr, out_ptr, texels, tex_h, tex_w, max_level,
                    height, width,
                    BATCHED: tl.constexpr, MODE: tl.constexpr, CHANNELS: tl.constexpr,
                    BLOCK: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < height * width
    pixel = b * height * width + p
    u, v, level0, level1, frac, _, _, _, _ = _blend(uv_ptr, da_ptr, pixel, live, tex_h, tex_w, max_level)
    a00, a01, a10, a11, wa00, wa01, wa10, wa11, _, _, _, _, _, _, _, _ = _level_taps(
        table_ptr, level0, u, v, live, MODE)
    b00, b01, b10, b11, wb00, wb01, wb10, wb11, _, _, _, _, _, _, _, _ = _level_taps(
        table_ptr, level1, u, v, live, MODE)
    if BATCHED:
        tex_ptr += b * texels * CHANNELS
    for c in tl.static_range(CHANNELS):
        value = tl.full([BLOCK], 0.0, tl.float64)
        value = _level_value(value, tex_ptr + c, a00, a01, a10, a11, wa00, wa01, wa10, wa11, 1.0 - frac,
                             live, CHANNELS)
        value = _level_value(value, tex_ptr + c, b00, b01, b10, b11, wb00, wb01, wb10, wb11, frac, live,
                             CHANNELS)
        tl.store(out_ptr + pixel * CHANNELS + c, value, mask=live)


@triton.jit
def _tap_backward(tex_c, grad_c, index, g, w, du, dv, share, dshare, live, g_u, g_v, g_f,
                  meta_ptr, acc_ptr, num_values, CHANNELS: tl.constexpr, PASS: tl.constexpr):
    """One tap of one channel: scatter its weight times g to the texel, and add g * texel
    times the weight's derivatives in u, v and frac (trilinear_taps' dwdu, dwdv, dwdf)."""
    gt = g * tl.load(tex_c + index * CHANNELS, mask=live, other=0.0).to(tl.float64)
    weight = share * w
    scatter_add(meta_ptr, acc_ptr, num_values, grad_c + index * CHANNELS, weight * g, live & (weight != 0.0),
                PASS)
    return g_u + share * du * gt, g_v + share * dv * gt, g_f + dshare * w * gt


@triton.jit
def _level_backward(tex_c, grad_c, g, i00, i01, i10, i11, w00, w01, w10, w11, u00, u01, u10, u11,
                    v00, v01, v10, v11, share, dshare, live, g_u, g_v, g_f, meta_ptr, acc_ptr, num_values,
                    CHANNELS: tl.constexpr, PASS: tl.constexpr):
    """The four taps of one level for one channel, in trilinear_taps' order."""
    g_u, g_v, g_f = _tap_backward(tex_c, grad_c, i00, g, w00, u00, v00, share, dshare, live, g_u, g_v, g_f,
                                  meta_ptr, acc_ptr, num_values, CHANNELS, PASS)
    g_u, g_v, g_f = _tap_backward(tex_c, grad_c, i01, g, w01, u01, v01, share, dshare, live, g_u, g_v, g_f,
                                  meta_ptr, acc_ptr, num_values, CHANNELS, PASS)
    g_u, g_v, g_f = _tap_backward(tex_c, grad_c, i10, g, w10, u10, v10, share, dshare, live, g_u, g_v, g_f,
                                  meta_ptr, acc_ptr, num_values, CHANNELS, PASS)
    return _tap_backward(tex_c, grad_c, i11, g, w11, u11, v11, share, dshare, live, g_u, g_v, g_f,
                         meta_ptr, acc_ptr, num_values, CHANNELS, PASS)


@triton.jit
def _backward_kernel(tex_ptr, uv_ptr, da_ptr, table_ptr, grad_out_ptr, meta_ptr, acc_ptr, grad_uv_ptr,
                     grad_da_ptr, num_values, texels, tex_h, tex_w, max_level, height, width,
                     BATCHED: tl.constexpr, MODE: tl.constexpr, CHANNELS: tl.constexpr,
                     BLOCK: tl.constexpr, PASS: tl.constexpr):
    """The pyramid's gradient: one pass of kernels/fixed_sum.py into num_values sums; grad_uv
    and grad_uv_da (gathers) are written by the last pass only."""
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < height * width
    pixel = b * height * width + p
    u, v, level0, level1, frac, df0, df1, df2, df3 = _blend(uv_ptr, da_ptr, pixel, live, tex_h, tex_w,
                                                           max_level)
    a00, a01, a10, a11, wa00, wa01, wa10, wa11, ua00, ua01, ua10, ua11, va00, va01, va10, va11 = _level_taps(
        table_ptr, level0, u, v, live, MODE)
    b00, b01, b10, b11, wb00, wb01, wb10, wb11, ub00, ub01, ub10, ub11, vb00, vb01, vb10, vb11 = _level_taps(
        table_ptr, level1, u, v, live, MODE)
    keep = 1.0 - frac
    base = b * 0
    if BATCHED:
        tex_ptr += b * texels * CHANNELS
        base = b * texels * CHANNELS
    g_u = tl.full([BLOCK], 0.0, tl.float64)
    g_v = tl.full([BLOCK], 0.0, tl.float64)
    g_f = tl.full([BLOCK], 0.0, tl.float64)
    for c in tl.static_range(CHANNELS):
        g = tl.load(grad_out_ptr + pixel * CHANNELS + c, mask=live, other=0.0).to(tl.float64)
        g_u, g_v, g_f = _level_backward(tex_ptr + c, base + c, g, a00, a01, a10, a11, wa00, wa01, wa10, wa11,
                                        ua00, ua01, ua10, ua11, va00, va01, va10, va11, keep, -1.0, live,
                                        g_u, g_v, g_f, meta_ptr, acc_ptr, num_values, CHANNELS, PASS)
        g_u, g_v, g_f = _level_backward(tex_ptr + c, base + c, g, b00, b01, b10, b11, wb00, wb01, wb10, wb11,
                                        ub00, ub01, ub10, ub11, vb00, vb01, vb10, vb11, frac, 1.0, live,
                                        g_u, g_v, g_f, meta_ptr, acc_ptr, num_values, CHANNELS, PASS)
    if PASS == 0:
        return
    tl.store(grad_uv_ptr + pixel * 2 + 0, g_u, mask=live)
    tl.store(grad_uv_ptr + pixel * 2 + 1, g_v, mask=live)
    tl.store(grad_da_ptr + pixel * 4 + 0, g_f * df0, mask=live)
    tl.store(grad_da_ptr + pixel * 4 + 1, g_f * df1, mask=live)
    tl.store(grad_da_ptr + pixel * 4 + 2, g_f * df2, mask=live)
    tl.store(grad_da_ptr + pixel * 4 + 3, g_f * df3, mask=live)


def level_table(tex_h: int, tex_w: int, max_level: int, device: torch.device) -> torch.Tensor:
    """(max_level + 1, 3) int32: (texel offset, rows, columns) of each level of the packed
    pyramid (render_math.h: mip_level_offset, mip_level_size)."""
    rows, offset = [], 0
    for level in range(max_level + 1):
        h, w = max(1, tex_h >> level), max(1, tex_w >> level)
        rows.append((offset, h, w))
        offset += h * w
    return torch.tensor(rows, dtype=torch.int32, device=device)


def sample_texture_mip(packed: torch.Tensor, tex_batched: bool, uv: torch.Tensor, uv_da: torch.Tensor,
                       boundary: str, shape: tuple[int, int, int], out: torch.Tensor) -> torch.Tensor:
    """packed (B or 1, texels, C), uv (B, H, W, 2), uv_da (B, H, W, 4), contiguous on one device
    and of one dtype; shape = (tex_h, tex_w, max_level). Writes (B, H, W, C) into out."""
    B, H, W, _ = uv.shape
    _, texels, C = packed.shape
    tex_h, tex_w, max_level = shape
    table = level_table(tex_h, tex_w, max_level, uv.device)
    block = pixel_block(uv.device, H * W)
    launch(_forward_kernel, (cdiv(H * W, block), B), uv.device, packed, uv, uv_da, table, out, texels,
           tex_h, tex_w, max_level, H, W, BATCHED=bool(tex_batched), MODE=BOUNDARY_MODES[boundary],
           CHANNELS=C, BLOCK=block)
    return out


def sample_texture_mip_backward(packed: torch.Tensor, tex_batched: bool, uv: torch.Tensor,
                                uv_da: torch.Tensor, boundary: str, shape: tuple[int, int, int],
                                grad_out: torch.Tensor
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad of packed's shape, grad_uv of uv's shape, grad_uv_da of uv_da's shape)."""
    B, H, W, _ = uv.shape
    _, texels, C = packed.shape
    tex_h, tex_w, max_level = shape
    fixed_sum.check_term_count(8 * H * W * (1 if tex_batched else B))  # 8 taps, one texel at 1 x 1
    table = level_table(tex_h, tex_w, max_level, uv.device)
    meta, acc = fixed_sum.scratch(packed.numel(), packed.device)
    grad_uv = torch.empty_like(uv)
    grad_da = torch.empty_like(uv_da)
    # One pixel per GPU thread: at two, pass 1 (eight taps' fixed-point sums) took 255
    # registers and spilled 288-448 bytes on sm_90; at one, 168-176 and no spill.
    block = pixel_block(uv.device, H * W, per_thread=1)
    for p in fixed_sum.passes():
        launch(_backward_kernel, (cdiv(H * W, block), B), uv.device, packed, uv, uv_da, table, grad_out,
               meta, acc, grad_uv, grad_da, packed.numel(), texels, tex_h, tex_w, max_level, H, W,
               BATCHED=bool(tex_batched), MODE=BOUNDARY_MODES[boundary], CHANNELS=C, BLOCK=block, PASS=p)
    return fixed_sum.finish(meta, acc).view(packed.shape).to(packed.dtype), grad_uv, grad_da
