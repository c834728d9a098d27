"""sample_texture and its backward pass in Triton: one program per block of pixels of one image.

Bilinear lookup with the clamp / zero / wrap boundary rules of render_math; the mode and the
channel count are compile-time constants (one kernel variant each, the channel loop unrolled).
Taps and weights are computed in float64 and the sum over taps rounded once to the texture's
dtype, as in the C++ kernel. Backward: d out / d uv is a per-pixel gather (float64); d out /
d tex a scatter to the four taps, summed in fixed point into values of tex's shape by two
launches (kernels/fixed_sum.py: integer atomics, bit-deterministic on the GPU; a shared
(1, Ht, Wt, C) texture collects every image's share).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from nl3dmm.constants import BOUNDARY_MODES

from . import fixed_sum
from .fixed_sum import scatter_add
from .render_math import bilinear_taps, bilinear_weight_grads, bilinear_weights
from .runtime import cdiv, launch, pixel_block


@triton.jit
def _taps(uv_ptr, pixel, live, tex_h, tex_w, MODE: tl.constexpr):
    u = tl.load(uv_ptr + pixel * 2 + 0, mask=live, other=0.0).to(tl.float64)
    v = tl.load(uv_ptr + pixel * 2 + 1, mask=live, other=0.0).to(tl.float64)
    return bilinear_taps(u, v, tex_h, tex_w, MODE)


@triton.jit
def _forward_kernel(tex_ptr, uv_ptr, out_ptr, tex_h, tex_w, height, width,
                    BATCHED: tl.constexpr, MODE: tl.constexpr, CHANNELS: tl.constexpr,
                    BLOCK: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < height * width
    pixel = b * height * width + p
    i00, i01, i10, i11, in00, in01, in10, in11, fx, fy = _taps(uv_ptr, pixel, live, tex_h, tex_w,
                                                               MODE)
    w00, w01, w10, w11 = bilinear_weights(fx, fy, in00, in01, in10, in11)
    if BATCHED:
        tex_ptr += b * tex_h * tex_w * CHANNELS
    for c in tl.static_range(CHANNELS):
        t00 = tl.load(tex_ptr + i00 * CHANNELS + c, mask=live, other=0.0).to(tl.float64)
        t01 = tl.load(tex_ptr + i01 * CHANNELS + c, mask=live, other=0.0).to(tl.float64)
        t10 = tl.load(tex_ptr + i10 * CHANNELS + c, mask=live, other=0.0).to(tl.float64)
        t11 = tl.load(tex_ptr + i11 * CHANNELS + c, mask=live, other=0.0).to(tl.float64)
        tl.store(out_ptr + pixel * CHANNELS + c, w00 * t00 + w01 * t01 + w10 * t10 + w11 * t11,
                 mask=live)


@triton.jit
def channel_backward(meta_ptr, acc_ptr, num_values, grad_c, i00, i01, i10, i11, w00, w01, w10, w11,
                     du00, du01, du10, du11, dv00, dv01, dv10, dv11, t00, t01, t10, t11, g, look, g_u, g_v,
                     CHANNELS: tl.constexpr, PASS: tl.constexpr):
    """One channel of bilinear sampling's backward, shared by sample_texture and render_textured:
    the four taps' texel gradients (w * g) into the fixed-point sums, and the channel's share of
    the uv gradient added to (g_u, g_v) tap by tap, in the CPU's order."""
    gt00 = g * t00
    gt01 = g * t01
    gt10 = g * t10
    gt11 = g * t11
    g_u += du00 * gt00
    g_u += du01 * gt01
    g_u += du10 * gt10
    g_u += du11 * gt11
    g_v += dv00 * gt00
    g_v += dv01 * gt01
    g_v += dv10 * gt10
    g_v += dv11 * gt11
    # Taps with weight 0 (outside in ZERO mode, or exactly on a texel line) add nothing.
    scatter_add(meta_ptr, acc_ptr, num_values, grad_c + i00 * CHANNELS, w00 * g, look & (w00 != 0.0), PASS)
    scatter_add(meta_ptr, acc_ptr, num_values, grad_c + i01 * CHANNELS, w01 * g, look & (w01 != 0.0), PASS)
    scatter_add(meta_ptr, acc_ptr, num_values, grad_c + i10 * CHANNELS, w10 * g, look & (w10 != 0.0), PASS)
    scatter_add(meta_ptr, acc_ptr, num_values, grad_c + i11 * CHANNELS, w11 * g, look & (w11 != 0.0), PASS)
    return g_u, g_v


@triton.jit
def _backward_kernel(tex_ptr, uv_ptr, grad_out_ptr, meta_ptr, acc_ptr, grad_uv_ptr, num_values,
                     tex_h, tex_w, height, width,
                     BATCHED: tl.constexpr, MODE: tl.constexpr, CHANNELS: tl.constexpr,
                     BLOCK: tl.constexpr, PASS: tl.constexpr):
    """grad_tex: one pass of kernels/fixed_sum.py into num_values sums; grad_uv (a gather) is
    written by the last pass only."""
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < height * width
    pixel = b * height * width + p
    i00, i01, i10, i11, in00, in01, in10, in11, fx, fy = _taps(uv_ptr, pixel, live, tex_h, tex_w,
                                                               MODE)
    w00, w01, w10, w11 = bilinear_weights(fx, fy, in00, in01, in10, in11)
    du00, du01, du10, du11, dv00, dv01, dv10, dv11 = bilinear_weight_grads(
        fx, fy, in00, in01, in10, in11, tex_h, tex_w)
    base = b * 0
    if BATCHED:
        tex_ptr += b * tex_h * tex_w * CHANNELS
        base = b * tex_h * tex_w * CHANNELS
    g_u = tl.full([BLOCK], 0.0, tl.float64)
    g_v = tl.full([BLOCK], 0.0, tl.float64)
    for c in tl.static_range(CHANNELS):
        g = tl.load(grad_out_ptr + pixel * CHANNELS + c, mask=live, other=0.0).to(tl.float64)
        t00 = tl.load(tex_ptr + i00 * CHANNELS + c, mask=live, other=0.0).to(tl.float64)
        t01 = tl.load(tex_ptr + i01 * CHANNELS + c, mask=live, other=0.0).to(tl.float64)
        t10 = tl.load(tex_ptr + i10 * CHANNELS + c, mask=live, other=0.0).to(tl.float64)
        t11 = tl.load(tex_ptr + i11 * CHANNELS + c, mask=live, other=0.0).to(tl.float64)
        g_u, g_v = channel_backward(meta_ptr, acc_ptr, num_values, base + c, i00, i01, i10, i11,
                                    w00, w01, w10, w11, du00, du01, du10, du11, dv00, dv01, dv10, dv11,
                                    t00, t01, t10, t11, g, live, g_u, g_v, CHANNELS, PASS)
    if PASS == 0:
        return
    tl.store(grad_uv_ptr + pixel * 2 + 0, g_u, mask=live)
    tl.store(grad_uv_ptr + pixel * 2 + 1, g_v, mask=live)


def sample_texture(tex: torch.Tensor, tex_batched: bool, uv: torch.Tensor, boundary: str,
                   out: torch.Tensor) -> torch.Tensor:
    """tex (B or 1, Ht, Wt, C), uv (B, H, W, 2), contiguous on one device and of one dtype;
    writes (B, H, W, C) into out and returns it."""
    B, H, W, _ = uv.shape
    _, Ht, Wt, C = tex.shape
    block = pixel_block(uv.device, H * W)
    launch(_forward_kernel, (cdiv(H * W, block), B), uv.device, tex, uv, out, Ht, Wt, H, W,
           BATCHED=bool(tex_batched), MODE=BOUNDARY_MODES[boundary], CHANNELS=C, BLOCK=block)
    return out


def sample_texture_backward(tex: torch.Tensor, tex_batched: bool, uv: torch.Tensor, boundary: str,
                            grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_tex of tex's shape, grad_uv of uv's shape)."""
    B, H, W, _ = uv.shape
    _, Ht, Wt, C = tex.shape
    fixed_sum.check_term_count(4 * H * W * (1 if tex_batched else B))  # clamp: 4 taps, 1 texel
    meta, acc = fixed_sum.scratch(tex.numel(), tex.device)
    grad_uv = torch.empty_like(uv)
    block = pixel_block(uv.device, H * W)
    for p in fixed_sum.passes():
        launch(_backward_kernel, (cdiv(H * W, block), B), uv.device, tex, uv, grad_out, meta, acc,
               grad_uv, tex.numel(), Ht, Wt, H, W, BATCHED=bool(tex_batched),
               MODE=BOUNDARY_MODES[boundary], CHANNELS=C, BLOCK=block, PASS=p)
    return fixed_sum.finish(meta, acc).view(tex.shape).to(tex.dtype), grad_uv
