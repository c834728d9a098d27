"""rasterize and its backward pass in Triton.

Forward, two passes over a (B, H * W) int64 z-buffer initialised to EMPTY_KEY:
  1. coverage, one program per block of triangles of one image: project the vertices, set up
     the snapped triangles, walk their bounding boxes and tl.atomic_min the packed
     (depth | triangle) key of every covered pixel. A minimum does not depend on the order in
     which the atomics land, so the result is bit-deterministic on the GPU too.
  2. resolve, one program per block of pixels: read the winning triangle and recompute
     (b0, b1, depth) in float64 from the unsnapped vertices; write (b0, b1, depth, id + 1),
     or zeros on empty pixels, so every element of the output is written.
Backward, one program per block of pixels: the gradient of (b0, b1, depth) with respect to the
winning triangle's three vertices, summed into (B, V, 4) in fixed point by two launches
(kernels/fixed_sum.py: integer atomics, so bit-deterministic on the GPU too).
The math is kernels/render_math.py (= csrc/render_math.h).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import fixed_sum
from .fixed_sum import scatter_add
from .render_math import (CLIP_PLANES, EMPTY_KEY, MAX_CLIP_VERTICES, clip_distance_of, fragment_key,
                          guard_ratios, inside_clip_volume, load_clip_vertex, pixel_bounds,
                          project_vertex, resolve_pixel, resolve_pixel_backward, setup_triangle)
from .runtime import cdiv, clip_triangle_tile, launch, pixel_block, triangle_tile

_EMPTY = torch.iinfo(torch.int64).max
INF = tl.constexpr(float("inf"))  # the filler _slot takes the minimum over
BIG = tl.constexpr(torch.iinfo(torch.int64).max)  # its integer counterpart


@triton.jit
def _triangle_vertices(tri_ptr, f, active, num_vertices):
    """Vertex indices of triangles f and whether the lane may use them: active and every
    index in 0..V-1 (0 on other lanes). The ops validate tri, but a write that bypasses the
    validation cache (through .numpy()) must give a wrong image, never a read out of bounds."""
    i0 = tl.load(tri_ptr + f * 3 + 0, mask=active, other=0)
    i1 = tl.load(tri_ptr + f * 3 + 1, mask=active, other=0)
    i2 = tl.load(tri_ptr + f * 3 + 2, mask=active, other=0)
    ok = active & (i0 >= 0) & (i0 < num_vertices) & (i1 >= 0) & (i1 < num_vertices)
    ok = ok & (i2 >= 0) & (i2 < num_vertices)
    return tl.where(ok, i0, 0), tl.where(ok, i1, 0), tl.where(ok, i2, 0), ok


@triton.jit
def _load_projected(pos_ptr, index, active, height, width):
    """Screen data (sx, sy, depth, fx, fy, inside) of the vertices `index` of one image;
    inactive lanes read vertex (0, 0, 0, 1). inside: in the clip volume (then also valid)."""
    x, y, z, w = load_clip_vertex(pos_ptr + index * 4, active, 0.0, 0.0)
    sx, sy, depth, fx, fy, valid = project_vertex(x, y, z, w, height, width)
    return sx, sy, depth, fx, fy, valid & inside_clip_volume(x, y, z, w, height, width)


@triton.jit
def _load_triangle(pos_ptr, i0, i1, i2, active):
    """Clip coordinates (float64) of three vertices, 12 values; inactive lanes get the
    harmless triangle (-1, -1), (1, -1), (-1, 1) at w = 1."""
    x0, y0, z0, w0 = load_clip_vertex(pos_ptr + i0 * 4, active, -1.0, -1.0)
    x1, y1, z1, w1 = load_clip_vertex(pos_ptr + i1 * 4, active, 1.0, -1.0)
    x2, y2, z2, w2 = load_clip_vertex(pos_ptr + i2 * 4, active, -1.0, 1.0)
    return x0, y0, z0, w0, x1, y1, z1, w1, x2, y2, z2, w2


@triton.jit
def _scatter_vertex(meta_ptr, acc_ptr, count, index, gx, gy, gz, gw, active, PASS: tl.constexpr):
    """Add one vertex's (x, y, z, w) gradient to values index..index + 3 (kernels/fixed_sum.py)."""
    scatter_add(meta_ptr, acc_ptr, count, index + 0, gx, active, PASS)
    scatter_add(meta_ptr, acc_ptr, count, index + 1, gy, active, PASS)
    scatter_add(meta_ptr, acc_ptr, count, index + 2, gz, active, PASS)
    scatter_add(meta_ptr, acc_ptr, count, index + 3, gw, active, PASS)


@triton.jit
def _cover(fx0, fy0, fx1, fy1, fx2, fy2, d0, d1, d2, t, active, zbuf_ptr, height, width,
           CULL: tl.constexpr, PIXELS: tl.constexpr):
    """Z-test the snapped triangles (one per lane, `active` ones) into one image's z-buffer
    under the ids t: pixel bounds, setup, then every covered pixel's atomic_min."""
    x_lo, x_hi, y_lo, y_hi = pixel_bounds(fx0, fy0, fx1, fy1, fx2, fy2, height, width)
    area2, orient, owns0, owns1, owns2, draws = setup_triangle(fx0, fy0, fx1, fy1, fx2, fy2, CULL)
    draws = draws & active & (x_lo <= x_hi) & (y_lo <= y_hi)

    # Walk every triangle's bounding box PIXELS pixels at a time, as a flat index into it;
    # the block loops as long as its largest box needs. (A while loop: Triton 3.6's
    # interpreter cannot take a tensor as a range() bound.)
    # The box is clipped to the image (at most 16384^2 = 2^28 pixels) and its corners lie
    # within the guard band (2^20 px), so int32 holds them: the division below that turns
    # the flat index into (row, col) is then a 32-bit one (a 64-bit div/rem is a ~70
    # instruction software routine on NVIDIA GPUs, and it ran on every pixel step).
    x_lo = x_lo.to(tl.int32)
    y_lo = y_lo.to(tl.int32)
    box_w = tl.where(draws, x_hi.to(tl.int32) - x_lo + 1, 1)
    box_area = tl.where(draws, box_w * (y_hi.to(tl.int32) - y_lo + 1), 0)
    largest = tl.reduce(box_area, 0, tl.standard._elementwise_max)
    start = tl.full((), 0, tl.int32)
    while start < largest:
        k = start + tl.arange(0, PIXELS)[None, :]
        in_box = k < box_area[:, None]
        box_row = k // box_w[:, None]
        row = y_lo[:, None] + box_row
        col = x_lo[:, None] + (k - box_row * box_w[:, None])
        key, covered = fragment_key(fx0[:, None], fy0[:, None], fx1[:, None], fy1[:, None],
                                    fx2[:, None], fy2[:, None], d0[:, None], d1[:, None],
                                    d2[:, None], area2[:, None], orient[:, None], owns0[:, None],
                                    owns1[:, None], owns2[:, None], row, col, t[:, None])
        tl.atomic_min(zbuf_ptr + row * width + col, key, mask=in_box & covered, sem="relaxed")
        start += PIXELS




@triton.jit
def _coverage_kernel(pos_ptr, tri_ptr, zbuf_ptr, num_vertices, num_triangles, height, width,
                     CULL: tl.constexpr, TRIS: tl.constexpr, PIXELS: tl.constexpr):
    """Pass 1. Program (i, b): triangles [i * TRIS, (i + 1) * TRIS) of image b."""
    b = tl.program_id(1).to(tl.int64)
    t = tl.program_id(0) * TRIS + tl.arange(0, TRIS)
    live = t < num_triangles
    pos_ptr += b * num_vertices * 4
    zbuf_ptr += b * height * width

    v0, v1, v2, live = _triangle_vertices(tri_ptr, t, live, num_vertices)
    _, _, d0, fx0, fy0, ok0 = _load_projected(pos_ptr, v0, live, height, width)
    _, _, d1, fx1, fy1, ok1 = _load_projected(pos_ptr, v1, live, height, width)
    _, _, d2, fx2, fy2, ok2 = _load_projected(pos_ptr, v2, live, height, width)
    _cover(fx0, fy0, fx1, fy1, fx2, fy2, d0, d1, d2, t, live & ok0 & ok1 & ok2, zbuf_ptr, height,
           width, CULL, PIXELS)


@triton.jit
def _slot(block, select, fill):
    """The entry of the (16,) block where `select` holds, exactly (a minimum over `fill`,
    the type's largest value, elsewhere: -0.0 stays -0.0). Triton's own min combine, which
    the interpreter runs as one numpy reduction (our combine functions it runs element by
    element)."""
    return tl.reduce(tl.where(select, block, fill), 0, tl.standard._elementwise_min)


@triton.jit
def _clip_plane(px_, py_, pz_, pw_, n, slot, gx, gy, plane):
    """One Sutherland-Hodgman step (clip_triangle's loop body) on a polygon of n vertices held
    in the (16,) blocks px_, py_, pz_, pw_: the clipped polygon and its size. One-dimensional
    blocks put one slot on a thread; (1, 16) ones were laid out whole in each thread and kept
    in several copies across the plane loop (255 registers and spills on sm_90)."""
    m = tl.full((), 0, tl.int32)
    zero = tl.full((16,), 0.0, tl.float64)
    nx = zero
    ny = zero
    nz = zero
    nw = zero
    # A convex polygon gains one vertex a plane, but rounding could add more: walk its n
    # vertices (at most 9), exactly as the C++ loop does.
    for i in range(MAX_CLIP_VERTICES):  # a loop, not unrolled: the compiler took > 20 min
        if i < n:
            j = tl.where(i + 1 == n, 0, i + 1)
            ax = _slot(px_, slot == i, INF)
            ay = _slot(py_, slot == i, INF)
            az = _slot(pz_, slot == i, INF)
            aw = _slot(pw_, slot == i, INF)
            bx = _slot(px_, slot == j, INF)
            by = _slot(py_, slot == j, INF)
            bz = _slot(pz_, slot == j, INF)
            bw = _slot(pw_, slot == j, INF)
            da = clip_distance_of(ax, ay, az, aw, plane, gx, gy)
            db = clip_distance_of(bx, by, bz, bw, plane, gx, gy)
            keep = (da >= 0.0) & (m < MAX_CLIP_VERTICES)
            put = tl.where(keep, slot == m, slot < 0)  # (the interpreter cannot & a scalar bool)
            nx = tl.where(put, ax, nx)
            ny = tl.where(put, ay, ny)
            nz = tl.where(put, az, nz)
            nw = tl.where(put, aw, nw)
            m += keep.to(tl.int32)
            cross = ((da >= 0.0) != (db >= 0.0)) & (m < MAX_CLIP_VERTICES)
            # From the inside end (clip_edge), so shared edges are cut identically.
            first = da >= 0.0
            sx_ = tl.where(first, ax, bx)
            sy_ = tl.where(first, ay, by)
            sz_ = tl.where(first, az, bz)
            sw_ = tl.where(first, aw, bw)
            ex = tl.where(first, bx, ax)
            ey = tl.where(first, by, ay)
            ez = tl.where(first, bz, az)
            ew = tl.where(first, bw, aw)
            ds = tl.where(first, da, db)
            de = tl.where(first, db, da)
            s_ = ds / tl.where(cross, ds - de, 1.0)
            put = tl.where(cross, slot == m, slot < 0)
            nx = tl.where(put, sx_ + s_ * (ex - sx_), nx)
            ny = tl.where(put, sy_ + s_ * (ey - sy_), ny)
            nz = tl.where(put, sz_ + s_ * (ez - sz_), nz)
            nw = tl.where(put, sw_ + s_ * (ew - sw_), nw)
            m += cross.to(tl.int32)
    return nx, ny, nz, nw, m


@triton.jit
def _clip_and_cover(pos_ptr, tri_ptr, zbuf_ptr, f, num_vertices, height, width,
                    CULL: tl.constexpr, PIXELS: tl.constexpr):
    """Triangle f of one image, which reaches outside the clip volume: Sutherland-Hodgman
    against the six planes as render_math.h's clip_triangle, its polygon the 16 slots of four
    (16,) blocks, then the fan (0, k, k + 1) z-tested under the original id, PIXELS pixels a
    step."""
    v0, v1, v2, live = _triangle_vertices(tri_ptr, f, f >= 0, num_vertices)
    x0, y0, z0, w0, x1, y1, z1, w1, x2, y2, z2, w2 = _load_triangle(pos_ptr, v0, v1, v2, live)
    gx, gy = guard_ratios(height, width)
    slot = tl.arange(0, 16)
    zero = tl.full((16,), 0.0, tl.float64)
    px_ = tl.where(slot == 0, x0, tl.where(slot == 1, x1, tl.where(slot == 2, x2, zero)))
    py_ = tl.where(slot == 0, y0, tl.where(slot == 1, y1, tl.where(slot == 2, y2, zero)))
    pz_ = tl.where(slot == 0, z0, tl.where(slot == 1, z1, tl.where(slot == 2, z2, zero)))
    pw_ = tl.where(slot == 0, w0, tl.where(slot == 1, w1, tl.where(slot == 2, w2, zero)))
    n = tl.full((), 3, tl.int32)
    for plane in range(CLIP_PLANES):
        # A plane no polygon vertex is outside of changes nothing: skipped.
        dist = clip_distance_of(px_, py_, pz_, pw_, plane, gx, gy)
        if tl.reduce(((slot < n) & (dist < 0.0)).to(tl.int32), 0, tl.standard._elementwise_max) > 0:
            px_, py_, pz_, pw_, n = _clip_plane(px_, py_, pz_, pw_, n, slot, gx, gy, plane)
    # Unused slots hold w = 0: project_vertex marks them invalid without dividing.
    _, _, dep, fxs, fys, ok = project_vertex(px_, py_, pz_, pw_, height, width)
    draw = live & (tl.reduce(((slot < n) & ~ok).to(tl.int32), 0, tl.standard._elementwise_max) == 0)
    # _cover takes a block of triangles: here a block of one.
    one = tl.arange(0, 1)
    t = f + one
    fxa = _slot(fxs, slot == 0, BIG) + one
    fya = _slot(fys, slot == 0, BIG) + one
    da_ = _slot(dep, slot == 0, INF) + one
    for k in range(1, MAX_CLIP_VERTICES - 1):
        if draw & (k + 1 < n):  # fans the polygon does not have are skipped
            _cover(fxa, fya, _slot(fxs, slot == k, BIG) + one, _slot(fys, slot == k, BIG) + one,
                   _slot(fxs, slot == k + 1, BIG) + one, _slot(fys, slot == k + 1, BIG) + one,
                   da_, _slot(dep, slot == k, INF) + one, _slot(dep, slot == k + 1, INF) + one,
                   t, one == 0, zbuf_ptr, height, width, CULL, PIXELS)


@triton.jit
def _clipped_coverage_kernel(pos_ptr, tri_ptr, zbuf_ptr, num_vertices, num_triangles, height,
                             width, CULL: tl.constexpr, TRIS: tl.constexpr, PIXELS: tl.constexpr):
    """Pass 1 for the triangles not inside the clip volume (the others are _coverage_kernel's).
    Program (i, b) tests triangles [i * TRIS, (i + 1) * TRIS) of image b, one per lane, then
    clips and covers those that need it one at a time with the whole program (_clip_and_cover):
    a polygon per lane held 2 x 64 float64 values per thread and spilled (255 registers on
    sm_90), and a lane walked a screen-sized sub-triangle alone. Most blocks clip nothing."""
    b = tl.program_id(1).to(tl.int64)
    t = tl.program_id(0) * TRIS + tl.arange(0, TRIS)
    live = t < num_triangles
    pos_ptr += b * num_vertices * 4
    zbuf_ptr += b * height * width
    v0, v1, v2, live = _triangle_vertices(tri_ptr, t, live, num_vertices)
    x0, y0, z0, w0, x1, y1, z1, w1, x2, y2, z2, w2 = _load_triangle(pos_ptr, v0, v1, v2, live)
    whole = (inside_clip_volume(x0, y0, z0, w0, height, width)
             & inside_clip_volume(x1, y1, z1, w1, height, width)
             & inside_clip_volume(x2, y2, z2, w2, height, width))
    todo = tl.where(live & ~whole, t, num_triangles)
    f = tl.reduce(todo, 0, tl.standard._elementwise_min)
    while f < num_triangles:
        _clip_and_cover(pos_ptr, tri_ptr, zbuf_ptr, f, num_vertices, height, width, CULL, PIXELS)
        todo = tl.where(t == f, num_triangles, todo)
        f = tl.reduce(todo, 0, tl.standard._elementwise_min)


@triton.jit
def _resolve_kernel(pos_ptr, tri_ptr, zbuf_ptr, out_ptr, num_vertices, height, width,
                    BLOCK: tl.constexpr):
    """Pass 2. Program (i, b): pixels [i * BLOCK, (i + 1) * BLOCK) of image b."""
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < height * width
    pos_ptr += b * num_vertices * 4
    key = tl.load(zbuf_ptr + b * height * width + p, mask=live, other=EMPTY_KEY)
    hit = key != EMPTY_KEY
    f = tl.where(hit, (key & 0xFFFFFFFF).to(tl.int32), 0)
    i0, i1, i2, hit = _triangle_vertices(tri_ptr, f, hit, num_vertices)
    x0, y0, z0, w0, x1, y1, z1, w1, x2, y2, z2, w2 = _load_triangle(pos_ptr, i0, i1, i2, hit)
    px = (p % width).to(tl.float64) + 0.5
    py = (p // width).to(tl.float64) + 0.5
    b0, b1, depth = resolve_pixel(x0, y0, z0, w0, x1, y1, z1, w1, x2, y2, z2, w2, px, py,
                                  height, width)
    out = out_ptr + (b * height * width + p) * 4
    tl.store(out + 0, tl.where(hit, b0, 0.0), mask=live)
    tl.store(out + 1, tl.where(hit, b1, 0.0), mask=live)
    tl.store(out + 2, tl.where(hit, depth, 0.0), mask=live)
    tl.store(out + 3, tl.where(hit, (f + 1).to(tl.float64), 0.0), mask=live)


@triton.jit
def _backward_kernel(pos_ptr, tri_ptr, rast_ptr, grad_rast_ptr, meta_ptr, acc_ptr, num_values,
                     num_vertices, num_triangles, height, width, BLOCK: tl.constexpr,
                     PASS: tl.constexpr):
    """Program (i, b): pixels [i * BLOCK, (i + 1) * BLOCK) of image b scatter their gradient
    into the num_values = B * V * 4 sums of grad_pos (one pass of kernels/fixed_sum.py)."""
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < height * width
    pos_ptr += b * num_vertices * 4
    base = b * num_vertices * 4
    pixel = (b * height * width + p) * 4
    f = tl.load(rast_ptr + pixel + 3, mask=live, other=0.0).to(tl.int32) - 1
    g_b0 = tl.load(grad_rast_ptr + pixel + 0, mask=live, other=0.0).to(tl.float64)
    g_b1 = tl.load(grad_rast_ptr + pixel + 1, mask=live, other=0.0).to(tl.float64)
    g_depth = tl.load(grad_rast_ptr + pixel + 2, mask=live, other=0.0).to(tl.float64)
    # f < num_triangles: a raster edited behind the validation cache reads no foreign memory.
    active = live & (f >= 0) & (f < num_triangles)
    active = active & ((g_b0 != 0.0) | (g_b1 != 0.0) | (g_depth != 0.0))
    f = tl.where(active, f, 0)
    i0, i1, i2, active = _triangle_vertices(tri_ptr, f, active, num_vertices)
    x0, y0, z0, w0, x1, y1, z1, w1, x2, y2, z2, w2 = _load_triangle(pos_ptr, i0, i1, i2, active)
    px = (p % width).to(tl.float64) + 0.5
    py = (p // width).to(tl.float64) + 0.5
    gx0, gy0, gz0, gw0, gx1, gy1, gz1, gw1, gx2, gy2, gz2, gw2 = resolve_pixel_backward(
        x0, y0, z0, w0, x1, y1, z1, w1, x2, y2, z2, w2, px, py, height, width, g_b0, g_b1, g_depth)
    _scatter_vertex(meta_ptr, acc_ptr, num_values, base + i0 * 4, gx0, gy0, gz0, gw0, active, PASS)
    _scatter_vertex(meta_ptr, acc_ptr, num_values, base + i1 * 4, gx1, gy1, gz1, gw1, active, PASS)
    _scatter_vertex(meta_ptr, acc_ptr, num_values, base + i2 * 4, gx2, gy2, gz2, gw2, active, PASS)


def rasterize(pos: torch.Tensor, tri: torch.Tensor, height: int, width: int, cull_backfaces: bool,
              out: torch.Tensor) -> torch.Tensor:
    """pos (B, V, 4) float32/64 and tri (F, 3) int32, both contiguous on one device; writes
    the (B, H, W, 4) raster into out (pos's dtype) and returns it."""
    B, V, _ = pos.shape
    F = tri.shape[0]
    zbuf = torch.full((B, height * width), _EMPTY, dtype=torch.int64, device=pos.device)
    tris, pixels = triangle_tile(pos.device, F)
    # enable_fp_fusion=False: no fused multiply-adds on the GPU, so the depth that orders the
    # fragments is rounded exactly as in the C++ kernels and the reference.
    launch(_coverage_kernel, (cdiv(F, tris), B), pos.device, pos, tri, zbuf, V, F, height, width,
           CULL=bool(cull_backfaces), TRIS=tris, PIXELS=pixels, enable_fp_fusion=False)
    tris, pixels = clip_triangle_tile(pos.device, F)
    launch(_clipped_coverage_kernel, (cdiv(F, tris), B), pos.device, pos, tri, zbuf, V, F, height,
           width, CULL=bool(cull_backfaces), TRIS=tris, PIXELS=pixels, enable_fp_fusion=False)
    block = pixel_block(pos.device, height * width)
    launch(_resolve_kernel, (cdiv(height * width, block), B), pos.device, pos, tri, zbuf, out, V,
           height, width, BLOCK=block, enable_fp_fusion=False)
    return out


def rasterize_backward(pos: torch.Tensor, tri: torch.Tensor, rast: torch.Tensor,
                       grad_rast: torch.Tensor) -> torch.Tensor:
    """Gradient of the raster's (b0, b1, depth) with respect to pos, in pos's dtype."""
    B, V, _ = pos.shape
    _, H, W, _ = rast.shape
    fixed_sum.check_term_count(3 * H * W)  # a pixel gives a vertex up to 3 terms (repeated index)
    meta, acc = fixed_sum.scratch(B * V * 4, pos.device)
    block = pixel_block(pos.device, H * W)
    for p in fixed_sum.passes():
        launch(_backward_kernel, (cdiv(H * W, block), B), pos.device, pos, tri, rast, grad_rast,
               meta, acc, B * V * 4, V, tri.shape[0], H, W, BLOCK=block, PASS=p)
    return fixed_sum.finish(meta, acc).view(B, V, 4).to(pos.dtype)
