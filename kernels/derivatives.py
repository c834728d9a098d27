"""interpolate_derivatives and its backward pass in Triton: one program per block of pixels
of one image, as kernels/interpolate.py.

Per pixel, the perspective-correct barycentrics' screen derivatives are recomputed from the
triangle's clip positions (render_math: barycentric_derivatives, in float64) and mixed with
the corner attributes: out[2c] = d attr_c / dx, out[2c + 1] = d attr_c / dy, zero on empty
pixels. Backward: to attr only, a scatter to the triangle's corners summed in fixed point
(kernels/fixed_sum.py, two launches); pos gets no gradient from this op in any backend.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import fixed_sum
from .fixed_sum import scatter_add
from .interpolate import _load_pixel
from .render_math import barycentric_derivatives, load_clip_vertex
from .runtime import cdiv, launch, pixel_block


@triton.jit
def _pixel_derivatives(rast_ptr, tri_ptr, pos_ptr, b, p, pixel, live, num_vertices, num_triangles,
                       height, width):
    """(db0/dx, db0/dy, db1/dx, db1/dy, hit, i0, i1, i2) of pixels."""
    _, _, hit, i0, i1, i2 = _load_pixel(rast_ptr, tri_ptr, pixel, live, num_vertices, num_triangles)
    pos_ptr += b * num_vertices * 4
    x0, y0, _, w0 = load_clip_vertex(pos_ptr + i0.to(tl.int64) * 4, hit, -1.0, -1.0)
    x1, y1, _, w1 = load_clip_vertex(pos_ptr + i1.to(tl.int64) * 4, hit, 1.0, -1.0)
    x2, y2, _, w2 = load_clip_vertex(pos_ptr + i2.to(tl.int64) * 4, hit, -1.0, 1.0)
    px = (p % width).to(tl.float64) + 0.5
    py = (p // width).to(tl.float64) + 0.5
    d0x, d0y, d1x, d1y = barycentric_derivatives(x0, y0, w0, x1, y1, w1, x2, y2, w2, px, py, height, width)
    return d0x, d0y, d1x, d1y, hit, i0, i1, i2


@triton.jit
def _forward_kernel(attr_ptr, rast_ptr, tri_ptr, pos_ptr, out_ptr, num_vertices, num_triangles, height,
                    width,
                    BATCHED: tl.constexpr, CHANNELS: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < height * width
    pixel = b * height * width + p
    d0x, d0y, d1x, d1y, hit, i0, i1, i2 = _pixel_derivatives(rast_ptr, tri_ptr, pos_ptr, b, p, pixel, live,
                                                             num_vertices, num_triangles, height, width)
    if BATCHED:
        attr_ptr += b * num_vertices * CHANNELS
    for c in tl.static_range(CHANNELS):
        a0 = tl.load(attr_ptr + i0 * CHANNELS + c, mask=hit, other=0.0).to(tl.float64)
        a1 = tl.load(attr_ptr + i1 * CHANNELS + c, mask=hit, other=0.0).to(tl.float64)
        a2 = tl.load(attr_ptr + i2 * CHANNELS + c, mask=hit, other=0.0).to(tl.float64)
        e0 = a0 - a2
        e1 = a1 - a2
        tl.store(out_ptr + pixel * (2 * CHANNELS) + 2 * c, tl.where(hit, d0x * e0 + d1x * e1, 0.0), mask=live)
        tl.store(out_ptr + pixel * (2 * CHANNELS) + 2 * c + 1, tl.where(hit, d0y * e0 + d1y * e1, 0.0),
                 mask=live)


@triton.jit
def _backward_kernel(rast_ptr, tri_ptr, pos_ptr, grad_out_ptr, meta_ptr, acc_ptr, num_values, num_vertices,
                     num_triangles, height, width,
                     BATCHED: tl.constexpr, CHANNELS: tl.constexpr, BLOCK: tl.constexpr,
                     PASS: tl.constexpr):
    """grad_attr: one pass of kernels/fixed_sum.py into num_values sums."""
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < height * width
    pixel = b * height * width + p
    d0x, d0y, d1x, d1y, hit, i0, i1, i2 = _pixel_derivatives(rast_ptr, tri_ptr, pos_ptr, b, p, pixel, live,
                                                             num_vertices, num_triangles, height, width)
    base = b * 0
    if BATCHED:
        base = b * num_vertices * CHANNELS
    for c in tl.static_range(CHANNELS):
        gx = tl.load(grad_out_ptr + pixel * (2 * CHANNELS) + 2 * c, mask=hit, other=0.0).to(tl.float64)
        gy = tl.load(grad_out_ptr + pixel * (2 * CHANNELS) + 2 * c + 1, mask=hit, other=0.0).to(tl.float64)
        w0 = d0x * gx + d0y * gy  # attribute_derivative_weights
        w1 = d1x * gx + d1y * gy
        w2 = -(w0 + w1)
        scatter_add(meta_ptr, acc_ptr, num_values, base + i0 * CHANNELS + c, w0, hit, PASS)
        scatter_add(meta_ptr, acc_ptr, num_values, base + i1 * CHANNELS + c, w1, hit, PASS)
        scatter_add(meta_ptr, acc_ptr, num_values, base + i2 * CHANNELS + c, w2, hit, PASS)


def interpolate_derivatives(attr: torch.Tensor, attr_batched: bool, rast: torch.Tensor, tri: torch.Tensor,
                            pos: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """attr (B or 1, V, C), rast (B, H, W, 4), tri (F, 3) int32, pos (B, V, 4), contiguous on
    one device and (but tri) of one dtype; writes (B, H, W, 2C) into out and returns it."""
    B, H, W, _ = rast.shape
    _, V, C = attr.shape
    block = pixel_block(rast.device, H * W)
    launch(_forward_kernel, (cdiv(H * W, block), B), rast.device, attr, rast, tri, pos, out, V,
           tri.shape[0], H, W, BATCHED=bool(attr_batched), CHANNELS=C, BLOCK=block)
    return out


def interpolate_derivatives_backward(attr: torch.Tensor, attr_batched: bool, rast: torch.Tensor,
                                     tri: torch.Tensor, pos: torch.Tensor, grad_out: torch.Tensor
                                     ) -> torch.Tensor:
    """grad_attr of attr's shape."""
    B, H, W, _ = rast.shape
    _, V, C = attr.shape
    fixed_sum.check_term_count(3 * H * W * (1 if attr_batched else B))
    meta, acc = fixed_sum.scratch(attr.numel(), attr.device)
    block = pixel_block(rast.device, H * W)
    for p in fixed_sum.passes():
        launch(_backward_kernel, (cdiv(H * W, block), B), rast.device, rast, tri, pos, grad_out, meta, acc,
               attr.numel(), V, tri.shape[0], H, W, BATCHED=bool(attr_batched), CHANNELS=C, BLOCK=block,
               PASS=p)
    return fixed_sum.finish(meta, acc).view(attr.shape).to(attr.dtype)
