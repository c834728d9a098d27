"""antialias and its backward pass in Triton: one program per block of pixels of one image.

The pixel-pair analysis of csrc/antialias_pair.h, lane by lane: each pixel looks at its four
pairs (left, right, up, down) and gathers the blends into it (forward) or what its colour
gave to the blends (backward, colour gradient); each pixel also sends the vertex gradient of
the two pairs it starts (right, down) to the front triangle's silhouette edge, summed in fixed
point by two launches (kernels/fixed_sum.py: integer atomics, bit-deterministic on the GPU).
Float64 inside, rounded once to the image's dtype, as the C++ kernels; launched without fused
multiply-adds so that every decision rounds as there.

Indices that fail their checks (raster ids outside 0..F, vertex or topology indices outside
their range) make the pair blend nothing; nothing is read out of bounds.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import fixed_sum
from .fixed_sum import scatter_add
from .render_math import (ANTIALIAS_SLACK, crossing_distance, crossing_distance_backward,
                          edge_straddles, leaves_across_edge, load_clip_vertex, screen_point,
                          vertex_side, visible_ends)
from .runtime import cdiv, launch, pixel_block


@triton.jit
def _pick(k, v0, v1, v2):
    return tl.where(k == 0, v0, tl.where(k == 1, v1, v2))


@triton.jit
def _analyse_pair(rast_ptr, pos_ptr, tri_ptr, opp_ptr, row, col, live, num_vertices,
                  num_triangles, height, width, DOWN: tl.constexpr):
    """analyse_pair for the pairs starting at (row, col) of one image (rast_ptr, pos_ptr at that
    image): (hit, front, t, clamped, ca, cb, step, vertex p, vertex q) of the silhouette edge."""
    if DOWN:
        live = live & (row + 1 < height) & (row >= 0)
    else:
        live = live & (col + 1 < width) & (col >= 0)
    p0 = row.to(tl.int64) * width + col
    if DOWN:
        p1 = p0 + width
    else:
        p1 = p0 + 1
    id0 = tl.load(rast_ptr + tl.where(live, p0, 0) * 4 + 3, mask=live, other=0.0)
    id1 = tl.load(rast_ptr + tl.where(live, p1, 0) * 4 + 3, mask=live, other=0.0)
    d0 = tl.load(rast_ptr + tl.where(live, p0, 0) * 4 + 2, mask=live, other=0.0)
    d1 = tl.load(rast_ptr + tl.where(live, p1, 0) * 4 + 2, mask=live, other=0.0)
    ok = live & (id0 >= 0) & (id0 <= num_triangles) & (id1 >= 0) & (id1 <= num_triangles)
    f0 = tl.where(ok, id0, 0.0).to(tl.int64) - 1
    f1 = tl.where(ok, id1, 0.0).to(tl.int64) - 1
    front = tl.where(f0 < 0, 1, tl.where(f1 < 0, 0, tl.where(d0 <= d1, 0, 1)))
    f = tl.where(front == 1, f1, f0)
    active = ok & (f0 != f1)
    f = tl.where(active, f, 0)
    i0 = tl.load(tri_ptr + f * 3 + 0, mask=active, other=0)
    i1 = tl.load(tri_ptr + f * 3 + 1, mask=active, other=0)
    i2 = tl.load(tri_ptr + f * 3 + 2, mask=active, other=0)
    active = active & (i0 >= 0) & (i0 < num_vertices) & (i1 >= 0) & (i1 < num_vertices)
    active = active & (i2 >= 0) & (i2 < num_vertices)
    i0 = tl.where(active, i0, 0).to(tl.int64)
    i1 = tl.where(active, i1, 0).to(tl.int64)
    i2 = tl.where(active, i2, 0).to(tl.int64)
    x0, y0, z0, w0 = load_clip_vertex(pos_ptr + i0 * 4, active, -1.0, -1.0)
    x1, y1, z1, w1 = load_clip_vertex(pos_ptr + i1 * 4, active, 1.0, -1.0)
    x2, y2, z2, w2 = load_clip_vertex(pos_ptr + i2 * 4, active, -1.0, 1.0)
    sx0, sy0, _, ok0 = screen_point(x0, y0, w0, height, width)
    sx1, sy1, _, ok1 = screen_point(x1, y1, w1, height, width)
    sx2, sy2, _, ok2 = screen_point(x2, y2, w2, height, width)
    # Each edge's visible part by its screen ends (edge k: vertex k+1 -> k+2; the whole edge
    # where both project), and whether it is a candidate at all.
    ax0, ay0, bx0, by0, u0 = visible_ends(x1, y1, z1, w1, sx1, sy1, ok1, x2, y2, z2, w2, sx2, sy2,
                                          ok2, height, width)
    ax1, ay1, bx1, by1, u1 = visible_ends(x2, y2, z2, w2, sx2, sy2, ok2, x0, y0, z0, w0, sx0, sy0,
                                          ok0, height, width)
    ax2, ay2, bx2, by2, u2 = visible_ends(x0, y0, z0, w0, sx0, sy0, ok0, x1, y1, z1, w1, sx1, sy1,
                                          ok1, height, width)
    if DOWN:
        ca = (row + tl.where(front == 1, 1, 0)).to(tl.float64) + 0.5
        cb = col.to(tl.float64) + 0.5
        pa0, pa1, pa2, qa0, qa1, qa2 = ay0, ay1, ay2, by0, by1, by2
        pb0, pb1, pb2, qb0, qb1, qb2 = ax0, ax1, ax2, bx0, bx1, bx2
    else:
        ca = (col + tl.where(front == 1, 1, 0)).to(tl.float64) + 0.5
        cb = row.to(tl.float64) + 0.5
        pa0, pa1, pa2, qa0, qa1, qa2 = ax0, ax1, ax2, bx0, bx1, bx2
        pb0, pb1, pb2, qb0, qb1, qb2 = ay0, ay1, ay2, by0, by1, by2
    step = tl.where(front == 1, -1.0, 1.0).to(tl.float64)
    # The straddling edge crossed farthest along the segment, of the candidates (a clipped
    # triangle's cut edges on the clip planes are not blended).
    c0 = u0 & edge_straddles(pb0, qb0, cb)
    c1 = u1 & edge_straddles(pb1, qb1, cb)
    c2 = u2 & edge_straddles(pb2, qb2, cb)
    t0 = crossing_distance(x1, y1, w1, x2, y2, w2, ca, cb, step, c0, height, width, DOWN)
    t1 = crossing_distance(x2, y2, w2, x0, y0, w0, ca, cb, step, c1, height, width, DOWN)
    t2 = crossing_distance(x0, y0, w0, x1, y1, w1, ca, cb, step, c2, height, width, DOWN)
    k = tl.where(c0, 0, -1)
    t = tl.where(c0, t0, 0.0)
    take = c1 & ((k < 0) | (t1 > t))
    k = tl.where(take, 1, k)
    t = tl.where(take, t1, t)
    take = c2 & ((k < 0) | (t2 > t))
    k = tl.where(take, 2, k)
    t = tl.where(take, t2, t)
    active = active & (k >= 0) & (t >= -ANTIALIAS_SLACK) & (t <= 1.0 + ANTIALIAS_SLACK)
    ki = tl.where(k == 2, 0, k + 1)
    kj = tl.where(k == 0, 2, k - 1)
    pa = _pick(k, pa0, pa1, pa2)
    pb = _pick(k, pb0, pb1, pb2)
    qa = _pick(k, qa0, qa1, qa2)
    qb = _pick(k, qb0, qb1, qb2)
    active = active & (tl.abs(qb - pb) >= tl.abs(qa - pa))
    psx = _pick(k, ax0, ax1, ax2)
    psy = _pick(k, ay0, ay1, ay2)
    qsx = _pick(k, bx0, bx1, bx2)
    qsy = _pick(k, by0, by1, by2)
    # The third vertex; a clipped triangle's may have no projection: its side from the
    # homogeneous one.
    own = vertex_side(psx, psy, qsx, qsy, _pick(k, sx0, sx1, sx2), _pick(k, sy0, sy1, sy2),
                      _pick(k, ok0, ok1, ok2), _pick(k, x0, x1, x2), _pick(k, y0, y1, y2),
                      _pick(k, w0, w1, w2), height, width)
    active = active & (own != 0.0) & leaves_across_edge(pb, qb, step, own, DOWN)
    other = tl.load(opp_ptr + f * 3 + tl.where(active, k, 0), mask=active, other=-1)
    active = active & (other >= -1) & (other < num_vertices)
    has_other = active & (other >= 0)
    ox, oy, _, ow = load_clip_vertex(pos_ptr + tl.where(has_other, other, 0).to(tl.int64) * 4,
                                      has_other, 0.0, 0.0)
    osx, osy, _, ovalid = screen_point(ox, oy, ow, height, width)
    # A neighbour with a vertex behind the eye or beyond the band is drawn clipped: its side of
    # the edge comes from the homogeneous vertex instead of its projection.
    side = vertex_side(psx, psy, qsx, qsy, osx, osy, ovalid, ox, oy, ow, height, width)
    hit = active & ((~has_other) | tl.where(own > 0.0, side >= 0.0, side <= 0.0))
    clamped = (t < 0.0) | (t > 1.0)
    t = tl.where(t < 0.0, 0.0, tl.where(t > 1.0, 1.0, t))
    vp = _pick(ki, i0, i1, i2)
    vq = _pick(kj, i0, i1, i2)
    return hit, front, t, clamped, ca, cb, step, vp, vq, p0, p1


@triton.jit
def _blend(rast_ptr, pos_ptr, tri_ptr, opp_ptr, row, col, live, num_vertices, num_triangles,
           height, width, SIDE: tl.constexpr, DOWN: tl.constexpr):
    """One of a pixel's pairs (the pixel is its pixel SIDE): (into_this, weight, other pixel),
    weight 0 where the pair blends nothing."""
    if SIDE == 1:
        if DOWN:
            row = row - 1
        else:
            col = col - 1
    hit, front, t, _, _, _, _, _, _, p0, p1 = _analyse_pair(
        rast_ptr, pos_ptr, tri_ptr, opp_ptr, row, col, live, num_vertices, num_triangles, height,
        width, DOWN)
    target = tl.where(t < 0.5, front, 1 - front)
    weight = tl.where(hit, tl.where(t < 0.5, 0.5 - t, t - 0.5), 0.0)
    if SIDE == 1:
        other = p0
    else:
        other = p1
    return hit & (target == SIDE), weight, tl.where(hit, other, 0)


@triton.jit
def _pixel_blends(rast_ptr, pos_ptr, tri_ptr, opp_ptr, row, col, live, num_vertices,
                  num_triangles, height, width):
    """pixel_blends: the pixel's pairs left, right, up, down, each (into_this, weight, other)."""
    in_l, w_l, o_l = _blend(rast_ptr, pos_ptr, tri_ptr, opp_ptr, row, col, live, num_vertices,
                            num_triangles, height, width, 1, False)
    in_r, w_r, o_r = _blend(rast_ptr, pos_ptr, tri_ptr, opp_ptr, row, col, live, num_vertices,
                            num_triangles, height, width, 0, False)
    in_u, w_u, o_u = _blend(rast_ptr, pos_ptr, tri_ptr, opp_ptr, row, col, live, num_vertices,
                            num_triangles, height, width, 1, True)
    in_d, w_d, o_d = _blend(rast_ptr, pos_ptr, tri_ptr, opp_ptr, row, col, live, num_vertices,
                            num_triangles, height, width, 0, True)
    return in_l, w_l, o_l, in_r, w_r, o_r, in_u, w_u, o_u, in_d, w_d, o_d


@triton.jit
def _program_pixels(height, width, BLOCK: tl.constexpr):
    """(image, pixel, live, row, col) of this program's block of pixels."""
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < height * width
    row = p // width
    col = p % width
    return b, p, live, row, col


@triton.jit
def _forward_kernel(color_ptr, rast_ptr, pos_ptr, tri_ptr, opp_ptr, out_ptr, num_vertices,
                    num_triangles, height, width, CHANNELS: tl.constexpr, BLOCK: tl.constexpr):
    b, p, live, row, col = _program_pixels(height, width, BLOCK)
    rast_ptr += b * height * width * 4
    pos_ptr += b * num_vertices * 4
    color_ptr += b * height * width * CHANNELS
    out_ptr += b * height * width * CHANNELS
    (in_l, w_l, o_l, in_r, w_r, o_r, in_u, w_u, o_u, in_d, w_d, o_d) = _pixel_blends(
        rast_ptr, pos_ptr, tri_ptr, opp_ptr, row, col, live, num_vertices, num_triangles, height, width)
    for c in tl.static_range(CHANNELS):
        own = tl.load(color_ptr + p * CHANNELS + c, mask=live, other=0.0).to(tl.float64)
        v = own
        v = _gather_blend(v, own, color_ptr, o_l, w_l, in_l, c, CHANNELS)
        v = _gather_blend(v, own, color_ptr, o_r, w_r, in_r, c, CHANNELS)
        v = _gather_blend(v, own, color_ptr, o_u, w_u, in_u, c, CHANNELS)
        v = _gather_blend(v, own, color_ptr, o_d, w_d, in_d, c, CHANNELS)
        tl.store(out_ptr + p * CHANNELS + c, v, mask=live)


@triton.jit
def _gather_blend(v, own, color_ptr, other, weight, into, c, CHANNELS: tl.constexpr):
    """v + weight (colour(other) - own) on the lanes where the pair blends into this pixel."""
    theirs = tl.load(color_ptr + other * CHANNELS + c, mask=into, other=0.0).to(tl.float64)
    return tl.where(into, v + weight * (theirs - own), v)


@triton.jit
def _gather_grad(g, own, grad_ptr, other, weight, hit, into, c, CHANNELS: tl.constexpr):
    """The colour gradient's share of one pair (antialias_backward_t's gather)."""
    theirs = tl.load(grad_ptr + other * CHANNELS + c, mask=hit & (~into), other=0.0).to(tl.float64)
    g = tl.where(hit & into, g + (-weight) * own, g)
    return tl.where(hit & (~into), g + weight * theirs, g)


@triton.jit
def _pair_gradient(meta_ptr, acc_ptr, num_values, base, color_ptr, grad_ptr, pos_ptr, rast_ptr,
                   tri_ptr, opp_ptr, row, col, live, num_vertices, num_triangles, height, width,
                   CHANNELS: tl.constexpr, DOWN: tl.constexpr, PASS: tl.constexpr):
    """pair_vertex_gradient of the pair starting at (row, col), scattered to its edge."""
    hit, front, t, clamped, ca, cb, step, vp, vq, p0, p1 = _analyse_pair(
        rast_ptr, pos_ptr, tri_ptr, opp_ptr, row, col, live, num_vertices, num_triangles, height,
        width, DOWN)
    active = hit & (~clamped)
    target = tl.where(tl.where(t < 0.5, front, 1 - front) == 0, p0, p1)
    front_px = tl.where(front == 0, p0, p1)
    back_px = tl.where(front == 0, p1, p0)
    g_t = tl.full(t.shape, 0.0, tl.float64)
    for c in tl.static_range(CHANNELS):
        g = tl.load(grad_ptr + target * CHANNELS + c, mask=active, other=0.0).to(tl.float64)
        cf = tl.load(color_ptr + front_px * CHANNELS + c, mask=active, other=0.0).to(tl.float64)
        cbk = tl.load(color_ptr + back_px * CHANNELS + c, mask=active, other=0.0).to(tl.float64)
        g_t += g * (cf - cbk)
    active = active & (g_t != 0.0)
    px, py, _, pw = load_clip_vertex(pos_ptr + vp * 4, active, -1.0, -1.0)
    qx, qy, _, qw = load_clip_vertex(pos_ptr + vq * 4, active, 1.0, 1.0)
    gxp, gyp, gwp, gxq, gyq, gwq = crossing_distance_backward(
        px, py, pw, qx, qy, qw, ca, cb, step, height, width, g_t, DOWN)
    scatter_add(meta_ptr, acc_ptr, num_values, base + vp * 4 + 0, gxp, active, PASS)
    scatter_add(meta_ptr, acc_ptr, num_values, base + vp * 4 + 1, gyp, active, PASS)
    scatter_add(meta_ptr, acc_ptr, num_values, base + vp * 4 + 3, gwp, active, PASS)
    scatter_add(meta_ptr, acc_ptr, num_values, base + vq * 4 + 0, gxq, active, PASS)
    scatter_add(meta_ptr, acc_ptr, num_values, base + vq * 4 + 1, gyq, active, PASS)
    scatter_add(meta_ptr, acc_ptr, num_values, base + vq * 4 + 3, gwq, active, PASS)


@triton.jit
def _backward_kernel(color_ptr, rast_ptr, pos_ptr, tri_ptr, opp_ptr, grad_out_ptr, meta_ptr,
                     acc_ptr, grad_color_ptr, num_values, num_vertices, num_triangles, height,
                     width, CHANNELS: tl.constexpr, BLOCK: tl.constexpr, PASS: tl.constexpr):
    """grad_pos: one pass of kernels/fixed_sum.py; grad_color (a gather) by the last pass only."""
    b, p, live, row, col = _program_pixels(height, width, BLOCK)
    rast_ptr += b * height * width * 4
    pos_ptr += b * num_vertices * 4
    color_ptr += b * height * width * CHANNELS
    grad_out_ptr += b * height * width * CHANNELS
    grad_color_ptr += b * height * width * CHANNELS
    base = b * num_vertices * 4
    _pair_gradient(meta_ptr, acc_ptr, num_values, base, color_ptr, grad_out_ptr, pos_ptr, rast_ptr,
                   tri_ptr, opp_ptr, row, col, live, num_vertices, num_triangles, height, width,
                   CHANNELS, False, PASS)
    _pair_gradient(meta_ptr, acc_ptr, num_values, base, color_ptr, grad_out_ptr, pos_ptr, rast_ptr,
                   tri_ptr, opp_ptr, row, col, live, num_vertices, num_triangles, height, width,
                   CHANNELS, True, PASS)
    if PASS == 0:
        return
    (in_l, w_l, o_l, in_r, w_r, o_r, in_u, w_u, o_u, in_d, w_d, o_d) = _pixel_blends(
        rast_ptr, pos_ptr, tri_ptr, opp_ptr, row, col, live, num_vertices, num_triangles, height, width)
    for c in tl.static_range(CHANNELS):
        own = tl.load(grad_out_ptr + p * CHANNELS + c, mask=live, other=0.0).to(tl.float64)
        g = own
        g = _gather_grad(g, own, grad_out_ptr, o_l, w_l, w_l > 0.0, in_l, c, CHANNELS)
        g = _gather_grad(g, own, grad_out_ptr, o_r, w_r, w_r > 0.0, in_r, c, CHANNELS)
        g = _gather_grad(g, own, grad_out_ptr, o_u, w_u, w_u > 0.0, in_u, c, CHANNELS)
        g = _gather_grad(g, own, grad_out_ptr, o_d, w_d, w_d > 0.0, in_d, c, CHANNELS)
        tl.store(grad_color_ptr + p * CHANNELS + c, g, mask=live)


def block_size(device: torch.device, pixels: int) -> int:
    """Pixels per program: on the GPU one per thread. The pair analysis is inlined up to six
    times per pixel (four gathers and two vertex gradients in the last backward pass), and
    with the clipped edges' visible parts at two pixels per thread that pass spilled on sm_90
    (255 registers, 120 B of spills; bench/results/ptxas-sm90.md)."""
    return pixel_block(device, pixels, per_thread=1)


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              topology: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """color (B, H, W, C), rast (B, H, W, 4), pos (B, V, 4) of one dtype, tri and topology
    (F, 3) int32, all contiguous on one device; writes (B, H, W, C) into out and returns it."""
    B, H, W, C = color.shape
    block = block_size(color.device, H * W)
    launch(_forward_kernel, (cdiv(H * W, block), B), color.device, color, rast, pos, tri, topology,
           out, pos.shape[1], tri.shape[0], H, W, CHANNELS=C, BLOCK=block, enable_fp_fusion=False)
    return out


def antialias_backward(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor,
                       tri: torch.Tensor, topology: torch.Tensor, grad_out: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_color like color, grad_pos like pos with a zero z column)."""
    B, H, W, C = color.shape
    V = pos.shape[1]
    fixed_sum.check_term_count(2 * H * W)  # a pixel's two pairs give a vertex one term each
    meta, acc = fixed_sum.scratch(B * V * 4, color.device)
    grad_color = torch.empty_like(color)
    block = block_size(color.device, H * W)
    for p in fixed_sum.passes():
        launch(_backward_kernel, (cdiv(H * W, block), B), color.device, color, rast, pos, tri,
               topology, grad_out, meta, acc, grad_color, B * V * 4, V, tri.shape[0], H, W,
               CHANNELS=C, BLOCK=block, PASS=p, enable_fp_fusion=False)
    return grad_color, fixed_sum.finish(meta, acc).view(B, V, 4).to(pos.dtype)
