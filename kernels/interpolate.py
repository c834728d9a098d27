"""interpolate and its backward pass in Triton: one program per block of pixels of one image.

Forward: out = b0 * a0 + b1 * a1 + (1 - b0 - b1) * a2 in the attributes' dtype, as the C++
kernel; zero on empty pixels. The channel count is a compile-time constant and its loop is
unrolled (attributes here have 2 to 4 channels). Backward: d out / d(b0, b1) is a per-pixel
gather summed over channels in float64; d out / d attr is a scatter to the triangle's
vertices, summed in fixed point into values of attr's shape by two launches
(kernels/fixed_sum.py: integer atomics, bit-deterministic on the GPU; shared (1, V, C)
attributes collect every image's share).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import fixed_sum
from .fixed_sum import scatter_add
from .runtime import cdiv, launch, pixel_block


@triton.jit
def _load_pixel(rast_ptr, tri_ptr, pixel, live, num_vertices, num_triangles):
    """(b0, b1, hit, i0, i1, i2): barycentrics, coverage and vertex indices of pixels. The ops
    validate rast and tri, but writes that bypass the validation cache (through .numpy())
    must not make the kernel read out of bounds: ids outside 1..F and vertex indices outside
    0..V-1 count as empty pixels."""
    b0 = tl.load(rast_ptr + pixel * 4 + 0, mask=live, other=0.0)
    b1 = tl.load(rast_ptr + pixel * 4 + 1, mask=live, other=0.0)
    f = tl.load(rast_ptr + pixel * 4 + 3, mask=live, other=0.0).to(tl.int32) - 1
    hit = live & (f >= 0) & (f < num_triangles)
    f = tl.where(hit, f, 0)
    i0 = tl.load(tri_ptr + f * 3 + 0, mask=hit, other=0)
    i1 = tl.load(tri_ptr + f * 3 + 1, mask=hit, other=0)
    i2 = tl.load(tri_ptr + f * 3 + 2, mask=hit, other=0)
    hit = hit & (i0 >= 0) & (i0 < num_vertices) & (i1 >= 0) & (i1 < num_vertices)
    hit = hit & (i2 >= 0) & (i2 < num_vertices)
    return b0, b1, hit, tl.where(hit, i0, 0), tl.where(hit, i1, 0), tl.where(hit, i2, 0)


@triton.jit
def _forward_kernel(attr_ptr, rast_ptr, tri_ptr, out_ptr, num_vertices, num_triangles, height,
                    width,
                    BATCHED: tl.constexpr, CHANNELS: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < height * width
    pixel = b * height * width + p
    w0, w1, hit, i0, i1, i2 = _load_pixel(rast_ptr, tri_ptr, pixel, live, num_vertices,
                                          num_triangles)
    w2 = 1.0 - w0 - w1
    if BATCHED:
        attr_ptr += b * num_vertices * CHANNELS
    for c in tl.static_range(CHANNELS):
        a0 = tl.load(attr_ptr + i0 * CHANNELS + c, mask=hit, other=0.0)
        a1 = tl.load(attr_ptr + i1 * CHANNELS + c, mask=hit, other=0.0)
        a2 = tl.load(attr_ptr + i2 * CHANNELS + c, mask=hit, other=0.0)
        value = w0 * a0 + w1 * a1 + w2 * a2
        tl.store(out_ptr + pixel * CHANNELS + c, tl.where(hit, value, 0.0), mask=live)


@triton.jit
def _backward_kernel(attr_ptr, rast_ptr, tri_ptr, grad_out_ptr, meta_ptr, acc_ptr, grad_rast_ptr,
                     num_values, num_vertices, num_triangles, height, width,
                     BATCHED: tl.constexpr, CHANNELS: tl.constexpr, BLOCK: tl.constexpr,
                     PASS: tl.constexpr):
    """grad_attr: one pass of kernels/fixed_sum.py into num_values sums; grad_rast (a gather)
    is written by the last pass only."""
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < height * width
    pixel = b * height * width + p
    b0, b1, hit, i0, i1, i2 = _load_pixel(rast_ptr, tri_ptr, pixel, live, num_vertices,
                                          num_triangles)
    w0 = b0.to(tl.float64)
    w1 = b1.to(tl.float64)
    w2 = 1.0 - w0 - w1
    base = b * 0
    if BATCHED:
        attr_ptr += b * num_vertices * CHANNELS
        base = b * num_vertices * CHANNELS
    g_b0 = tl.full([BLOCK], 0.0, tl.float64)
    g_b1 = tl.full([BLOCK], 0.0, tl.float64)
    for c in tl.static_range(CHANNELS):
        g = tl.load(grad_out_ptr + pixel * CHANNELS + c, mask=hit, other=0.0).to(tl.float64)
        a0 = tl.load(attr_ptr + i0 * CHANNELS + c, mask=hit, other=0.0).to(tl.float64)
        a1 = tl.load(attr_ptr + i1 * CHANNELS + c, mask=hit, other=0.0).to(tl.float64)
        a2 = tl.load(attr_ptr + i2 * CHANNELS + c, mask=hit, other=0.0).to(tl.float64)
        g_b0 += g * (a0 - a2)
        g_b1 += g * (a1 - a2)
        scatter_add(meta_ptr, acc_ptr, num_values, base + i0 * CHANNELS + c, w0 * g, hit, PASS)
        scatter_add(meta_ptr, acc_ptr, num_values, base + i1 * CHANNELS + c, w1 * g, hit, PASS)
        scatter_add(meta_ptr, acc_ptr, num_values, base + i2 * CHANNELS + c, w2 * g, hit, PASS)
    if PASS == 0:
        return
    zero = tl.full([BLOCK], 0.0, tl.float64)
    tl.store(grad_rast_ptr + pixel * 4 + 0, tl.where(hit, g_b0, zero), mask=live)
    tl.store(grad_rast_ptr + pixel * 4 + 1, tl.where(hit, g_b1, zero), mask=live)
    tl.store(grad_rast_ptr + pixel * 4 + 2, zero, mask=live)
    tl.store(grad_rast_ptr + pixel * 4 + 3, zero, mask=live)


def interpolate(attr: torch.Tensor, attr_batched: bool, rast: torch.Tensor, tri: torch.Tensor,
                out: torch.Tensor) -> torch.Tensor:
    """attr (B or 1, V, C), rast (B, H, W, 4), tri (F, 3) int32, all contiguous on one device
    and (but tri) of one dtype; writes (B, H, W, C) into out and returns it."""
    B, H, W, _ = rast.shape
    _, V, C = attr.shape
    block = pixel_block(rast.device, H * W)
    launch(_forward_kernel, (cdiv(H * W, block), B), rast.device, attr, rast, tri, out, V,
           tri.shape[0], H, W, BATCHED=bool(attr_batched), CHANNELS=C, BLOCK=block)
    return out


def interpolate_backward(attr: torch.Tensor, attr_batched: bool, rast: torch.Tensor,
                         tri: torch.Tensor, grad_out: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_attr of attr's shape, grad_rast of rast's shape, zero in depth and id)."""
    B, H, W, _ = rast.shape
    _, V, C = attr.shape
    fixed_sum.check_term_count(3 * H * W * (1 if attr_batched else B))
    meta, acc = fixed_sum.scratch(attr.numel(), attr.device)
    grad_rast = torch.empty_like(rast)
    block = pixel_block(rast.device, H * W)
    for p in fixed_sum.passes():
        launch(_backward_kernel, (cdiv(H * W, block), B), rast.device, attr, rast, tri, grad_out,
               meta, acc, grad_rast, attr.numel(), V, tri.shape[0], H, W,
               BATCHED=bool(attr_batched), CHANNELS=C, BLOCK=block, PASS=p)
    return fixed_sum.finish(meta, acc).view(attr.shape).to(attr.dtype), grad_rast
