"""Pure-torch reference of the rendering ops: slow, vectorised, obviously correct.

Gradients come from torch autograd, so this module is the oracle the kernels' hand-written
backward passes are tested against. It restates the conventions of csrc/render_math.h
operation for operation (fixed-point coverage, the fill rule, the packed depth|id z-test,
float64 resolve), so triangle ids match the kernels exactly and values to rounding.

antialias restates csrc/antialias_pair.h the same way: every decision (which pairs, front
triangle, exit edge, silhouette, slack window) is taken on detached float64 values computed in
the kernels' order, and only the crossing distance t carries autograd to pos.

Rasterization enumerates (triangle, pixel) candidate pairs from each triangle's pixel bounding
box and keeps the minimum packed key per pixel with scatter_reduce: memory grows with the
total bounding-box area, which is fine for tests and for the paper mesh at 224x224.
"""
from __future__ import annotations

import math

import torch

from ..constants import (ANTIALIAS_SLACK, BOUNDARY_MODES, CLIP_PLANES, GUARD_BAND_PIXELS, MAX_CLIP_VERTICES,
                         MIN_W, SUBPIXEL_SCALE)

SUBPIXEL = SUBPIXEL_SCALE
HALF = SUBPIXEL_SCALE // 2  # a pixel centre's offset in fixed point
GUARD_BAND = float(GUARD_BAND_PIXELS)
_EMPTY = torch.iinfo(torch.int64).max


def _screen(pos: torch.Tensor, height: int, width: int):
    """Clip -> screen in float64: (sx, sy, depth, inv_w, valid). pos: (V, 4)."""
    p = pos.double()
    w = p[:, 3]
    valid = w >= MIN_W
    inv_w = torch.where(valid, 1.0 / torch.where(valid, w, torch.ones_like(w)), torch.zeros_like(w))
    sx = (p[:, 0] * inv_w + 1.0) * 0.5 * width
    sy = (p[:, 1] * inv_w + 1.0) * 0.5 * height
    depth = p[:, 2] * inv_w
    valid = valid & (sx.abs() < GUARD_BAND) & (sy.abs() < GUARD_BAND)
    return sx, sy, depth, inv_w, valid


def _inside(pos: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bool (V,): w >= MIN_W and inside every clip plane (render_math.h inside_clip_volume)."""
    p = pos.double()
    x, y, z, w = p.unbind(-1)
    gx, gy = GUARD_BAND / width, GUARD_BAND / height
    return ((w >= MIN_W) & (w + z >= 0) & (w - z >= 0) & (gx * w - x >= 0) & (gx * w + x >= 0)
            & (gy * w - y >= 0) & (gy * w + y >= 0))


def _clip_distance(v: tuple, plane: int, gx: float, gy: float) -> float:
    x, y, z, w = v
    return (w + z, w - z, gx * w - x, gx * w + x, gy * w - y, gy * w + y)[plane]


def _clip_edge(p: tuple, dp: float, q: tuple, dq: float) -> tuple:
    """From the inside end p, so two triangles sharing an edge cut it at the same point."""
    t = dp / (dp - dq)
    return tuple(a + t * (b - a) for a, b in zip(p, q))


def clip_triangle(v: list[tuple], height: int, width: int) -> list[tuple]:
    """Sutherland-Hodgman of one triangle ((x, y, z, w) Python floats, i.e. float64) against
    near, far and the guard band planes, as render_math.h's clip_triangle: the polygon's
    vertices, [] when nothing is left."""
    gx, gy = GUARD_BAND / width, GUARD_BAND / height
    poly = list(v)
    for plane in range(CLIP_PLANES):
        out = []
        n = len(poly)
        for i in range(n):
            p, q = poly[i], poly[(i + 1) % n]
            dp, dq = _clip_distance(p, plane, gx, gy), _clip_distance(q, plane, gx, gy)
            # The kernels' bound on the polygon (never reached by a convex one), checked the same way.
            if dp >= 0.0 and len(out) < MAX_CLIP_VERTICES:
                out.append(p)
            if (dp >= 0.0) != (dq >= 0.0) and len(out) < MAX_CLIP_VERTICES:
                out.append(_clip_edge(p, dp, q, dq) if dp >= 0.0 else _clip_edge(q, dq, p, dp))
        poly = out
        if not poly:
            return []
    return poly


def _project_clipped(v: tuple, height: int, width: int):
    """(fx, fy, depth) of a polygon vertex as project_vertex gives it, None if not valid."""
    x, y, z, w = v
    if not w >= MIN_W:
        return None
    inv_w = 1.0 / w
    sx = (x * inv_w + 1.0) * 0.5 * width
    sy = (y * inv_w + 1.0) * 0.5 * height
    if not (abs(sx) < GUARD_BAND and abs(sy) < GUARD_BAND):
        return None
    return math.floor(sx * SUBPIXEL + 0.5), math.floor(sy * SUBPIXEL + 0.5), z * inv_w


def _clipped_fans(pos: torch.Tensor, tri: torch.Tensor, faces: torch.Tensor, height: int,
                  width: int):
    """Sub-triangles (fx, fy, depth: (N, 3) each) and their original triangle ids (N,) of the
    triangles `faces`, clipped and fanned from the polygon's first vertex."""
    fx, fy, depth, ids = [], [], [], []
    p = pos.double().tolist()
    for f in faces.tolist():
        poly = clip_triangle([tuple(p[i]) for i in tri[f].tolist()], height, width)
        proj = [_project_clipped(v, height, width) for v in poly]
        if any(s is None for s in proj):
            continue
        for k in range(1, len(proj) - 1):
            a, b, c = proj[0], proj[k], proj[k + 1]
            fx.append([a[0], b[0], c[0]])
            fy.append([a[1], b[1], c[1]])
            depth.append([a[2], b[2], c[2]])
            ids.append(f)
    dev = pos.device
    return (torch.tensor(fx, dtype=torch.int64, device=dev).view(-1, 3),
            torch.tensor(fy, dtype=torch.int64, device=dev).view(-1, 3),
            torch.tensor(depth, dtype=torch.float64, device=dev).view(-1, 3),
            torch.tensor(ids, dtype=torch.int64, device=dev))


def _edge(ax, ay, bx, by, px, py):
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def _vertex_side(px, py, qx, qy, v: torch.Tensor, projected: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """render_math.h vertex_side: the side of p -> q that clip vertices v (N, 4) lie on, from
    their projection where `projected`, else w times it (homogeneous_side, any sign of w)."""
    x, y, w = v[..., 0], v[..., 1], v[..., 3]
    inv_w = 1.0 / torch.where(projected, w, torch.ones_like(w))
    sx, sy = (x * inv_w + 1.0) * 0.5 * W, (y * inv_w + 1.0) * 0.5 * H
    hx, hy = _homogeneous_offset(x, w, 0.5 * W, px), _homogeneous_offset(y, w, 0.5 * H, py)
    return torch.where(projected, _edge(px, py, qx, qy, sx, sy), (qx - px) * hy - (qy - py) * hx)


def _owns_edge(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    return (dy < 0) | ((dy == 0) & (dx < 0))


def _sortable(depth32: torch.Tensor) -> torch.Tensor:
    """float32 -> int64 in [0, 2^32) ordered like the floats (as csrc's sortable_float_bits)."""
    bits = depth32.contiguous().view(torch.int32).long() & 0xFFFFFFFF
    negative = (bits & 0x80000000) != 0
    return torch.where(negative, (~bits) & 0xFFFFFFFF, bits | 0x80000000)


def triangle_ids(pos: torch.Tensor, tri: torch.Tensor, height: int, width: int,
                 cull_backfaces: bool = False) -> torch.Tensor:
    """Visible triangle per pixel, (B, H, W) int64, -1 where empty. Not differentiable."""
    B = pos.shape[0]
    T = tri.long()
    out = torch.full((B, height * width), -1, dtype=torch.int64, device=pos.device)
    for b in range(B):
        sx, sy, depth, _, valid = _screen(pos[b].detach(), height, width)
        fx = torch.where(valid, torch.floor(sx * SUBPIXEL + 0.5), torch.zeros_like(sx)).long()
        fy = torch.where(valid, torch.floor(sy * SUBPIXEL + 0.5), torch.zeros_like(sy)).long()
        # Triangles inside the clip volume are drawn as they are; the others are clipped and
        # fanned into sub-triangles that carry their id (render_math.h).
        whole = _inside(pos[b].detach(), height, width)[T].all(1)
        CX, CY, CD, cid = _clipped_fans(pos[b].detach(), T, (~whole).nonzero().squeeze(1),
                                        height, width)
        X, Y, D = torch.cat([fx[T][whole], CX]), torch.cat([fy[T][whole], CY]), torch.cat([depth[T][whole], CD])
        tid = torch.cat([whole.nonzero().squeeze(1), cid])
        area2 = _edge(X[:, 0], Y[:, 0], X[:, 1], Y[:, 1], X[:, 2], Y[:, 2])
        keep = area2 != 0
        if cull_backfaces:
            keep &= area2 > 0
        orient = torch.where(area2 > 0, 1, -1)
        cx0 = -torch.div(-(X.min(1).values - HALF), SUBPIXEL, rounding_mode="floor")
        cx1 = torch.div(X.max(1).values - HALF, SUBPIXEL, rounding_mode="floor")
        cy0 = -torch.div(-(Y.min(1).values - HALF), SUBPIXEL, rounding_mode="floor")
        cy1 = torch.div(Y.max(1).values - HALF, SUBPIXEL, rounding_mode="floor")
        cx0, cy0 = cx0.clamp(min=0), cy0.clamp(min=0)
        cx1, cy1 = cx1.clamp(max=width - 1), cy1.clamp(max=height - 1)
        keep &= (cx0 <= cx1) & (cy0 <= cy1)
        f = keep.nonzero().squeeze(1)
        if f.numel() == 0:
            continue
        bw = cx1[f] - cx0[f] + 1
        counts = bw * (cy1[f] - cy0[f] + 1)
        t = torch.repeat_interleave(f, counts)
        start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        off = torch.arange(t.numel(), device=pos.device) - start
        bw_t = torch.repeat_interleave(bw, counts)
        col = cx0[t] + off % bw_t
        row = cy0[t] + torch.div(off, bw_t, rounding_mode="floor")
        px, py = col * SUBPIXEL + HALF, row * SUBPIXEL + HALF
        Xt, Yt, o = X[t], Y[t], orient[t]
        inside = torch.ones_like(t, dtype=torch.bool)
        e = []
        for k in range(3):
            i, j = (k + 1) % 3, (k + 2) % 3
            ek = o * _edge(Xt[:, i], Yt[:, i], Xt[:, j], Yt[:, j], px, py)
            owns = _owns_edge(o * (Xt[:, j] - Xt[:, i]), o * (Yt[:, j] - Yt[:, i]))
            inside &= (ek > 0) | ((ek == 0) & owns)
            e.append(ek)
        area = (o * area2[t]).double()
        Dt = D[t]
        dz = (e[0].double() * Dt[:, 0] + e[1].double() * Dt[:, 1] + e[2].double() * Dt[:, 2]) / area
        d32 = dz.float()
        inside &= (d32 >= -1.0) & (d32 <= 1.0)
        key = ((_sortable(d32) - (1 << 31)) << 32) | tid[t]
        key = torch.where(inside, key, torch.full_like(key, _EMPTY))
        zbuf = torch.full((height * width,), _EMPTY, dtype=torch.int64, device=pos.device)
        zbuf.scatter_reduce_(0, row * width + col, key, reduce="amin")
        hit = zbuf != _EMPTY
        out[b, hit] = zbuf[hit] & 0xFFFFFFFF
    return out.view(B, height, width)


def _homogeneous_offset(c: torch.Tensor, w: torch.Tensor, half: float, centre) -> torch.Tensor:
    """render_math.h homogeneous_offset: clip coordinate c as its screen coordinate relative to
    `centre`, times w, (c + w) half - centre w; valid for any sign of w."""
    return (c + w) * half - centre * w


def _homogeneous_terms(v: torch.Tensor, px: torch.Tensor, py: torch.Tensor, H: int, W: int):
    """a_k = (X_k - px w_k, Y_k - py w_k) with X = (x + w) W / 2, and cross_k = cross(a_i, a_j)
    (render_math.h homogeneous_pixel). v: (..., 3, 4) float64."""
    hx, hy = 0.5 * W, 0.5 * H
    ax = [_homogeneous_offset(v[..., k, 0], v[..., k, 3], hx, px) for k in range(3)]
    ay = [_homogeneous_offset(v[..., k, 1], v[..., k, 3], hy, py) for k in range(3)]
    cross = [ax[(k + 1) % 3] * ay[(k + 2) % 3] - ay[(k + 1) % 3] * ax[(k + 2) % 3] for k in range(3)]
    return ax, ay, cross


def _homogeneous(v: torch.Tensor, px: torch.Tensor, py: torch.Tensor, H: int, W: int):
    """Barycentrics [b0, b1, b2] and depth of the original triangle at the pixel centre, valid
    whatever the signs of w (2D-homogeneous form; for w > 0 the perspective-correct ones)."""
    _, _, cross = _homogeneous_terms(v, px, py, H, W)
    total = cross[0] + cross[1] + cross[2]
    flat = total == 0
    safe = torch.where(flat, torch.ones_like(total), total)
    third = torch.full_like(total, 1.0 / 3.0)
    b = [torch.where(flat, third, c / safe) for c in cross]
    num = b[0] * v[..., 0, 2] + b[1] * v[..., 1, 2] + b[2] * v[..., 2, 2]
    den = b[0] * v[..., 0, 3] + b[1] * v[..., 1, 3] + b[2] * v[..., 2, 3]
    edge_on = den == 0
    depth = torch.where(edge_on, torch.zeros_like(den), num / torch.where(edge_on, torch.ones_like(den), den))
    return b, depth


def resolve(pos: torch.Tensor, tri: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Differentiable raster (b0, b1, depth, id + 1) for the given per-pixel triangle ids."""
    B, H, W = ids.shape
    hit = ids >= 0
    safe = ids.clamp(min=0)
    rows = torch.arange(H, device=pos.device, dtype=torch.float64).view(1, H, 1).expand(B, H, W)
    cols = torch.arange(W, device=pos.device, dtype=torch.float64).view(1, 1, W).expand(B, H, W)
    px, py = cols + 0.5, rows + 0.5
    corners = tri.long()[safe]  # (B, H, W, 3)
    batch = torch.arange(B, device=pos.device).view(B, 1, 1, 1)
    v = pos.double()[batch, corners]  # (B, H, W, 3, 4)
    # Empty pixels gather an arbitrary triangle; swap in a harmless one so that a vertex with
    # w <= 0 cannot leak inf/NaN into the gradient through torch.where's unused branch.
    dummy = torch.tensor([[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]],
                         dtype=torch.float64, device=pos.device)
    v = torch.where(hit[..., None, None], v, dummy)
    b, z = _homogeneous(v, px, py, H, W)
    out = torch.stack([b[0], b[1], z, (ids + 1).double()], -1)
    out = torch.where(hit.unsqueeze(-1), out, torch.zeros_like(out))
    return out.to(pos.dtype)


def coverage(rast: torch.Tensor) -> torch.Tensor:
    """(B, H, W) 1 where the raster has a triangle (id + 1 > 0), else 0, in rast's dtype."""
    return (rast[..., 3] > 0).to(rast.dtype)


def rasterize(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int],
              cull_backfaces: bool = False) -> torch.Tensor:
    height, width = resolution
    ids = triangle_ids(pos, tri, height, width, cull_backfaces)
    return resolve(pos, tri, ids)


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """attr (B or 1, V, C) -> (B, H, W, C); zero where no triangle."""
    B = rast.shape[0]
    if attr.dim() == 2:
        attr = attr.unsqueeze(0)
    attr = attr.expand(B, -1, -1)
    ids = rast[..., 3].detach().round().long() - 1
    hit = ids >= 0
    corners = tri.long()[ids.clamp(min=0)]  # (B, H, W, 3)
    batch = torch.arange(B, device=rast.device).view(B, 1, 1, 1)
    a = attr[batch, corners]  # (B, H, W, 3, C)
    b0, b1 = rast[..., 0:1], rast[..., 1:2]
    out = b0 * a[..., 0, :] + b1 * a[..., 1, :] + (1 - b0 - b1) * a[..., 2, :]
    return torch.where(hit.unsqueeze(-1), out, torch.zeros_like(out))


def sample_texture(tex: torch.Tensor, uv: torch.Tensor, boundary: str = "clamp") -> torch.Tensor:
    """Bilinear lookup of uv (B, H, W, 2) in tex (B or 1, Ht, Wt, C), texel centres at
    ((j + 0.5) / Wt, (i + 0.5) / Ht). In float64 like the kernels, rounded once to tex's
    dtype; wrap reduces uv to one period first and the other modes clamp x, y to 3 texels
    outside before the integer conversion, so any finite uv (1e10, 1.7e308) is exact."""
    if boundary not in BOUNDARY_MODES:
        raise ValueError(f"boundary must be one of {tuple(BOUNDARY_MODES)}, got {boundary!r}")
    B = uv.shape[0]
    tex = tex.expand(B, -1, -1, -1)
    _, Ht, Wt, C = tex.shape
    u, v = uv[..., 0].double(), uv[..., 1].double()
    if boundary == "wrap":  # u - floor(u) is exact, and its gradient is 1
        u, v = u - torch.floor(u.detach()), v - torch.floor(v.detach())
    x, y = u * Wt - 0.5, v * Ht - 0.5
    if boundary != "wrap":  # beyond 3 texels outside every tap is clamped or zero anyway
        x, y = x.clamp(-3.0, Wt + 3.0), y.clamp(-3.0, Ht + 3.0)
    x0f, y0f = torch.floor(x.detach()), torch.floor(y.detach())
    fx, fy = x - x0f, y - y0f
    x0, y0 = x0f.long(), y0f.long()
    flat = tex.reshape(B, Ht * Wt, C).double()
    out = 0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xx, yy = x0 + dx, y0 + dy
            weight = wy * wx
            if boundary == "clamp":
                xx, yy = xx.clamp(0, Wt - 1), yy.clamp(0, Ht - 1)
            elif boundary == "wrap":
                xx, yy = xx % Wt, yy % Ht
            else:
                inside = (xx >= 0) & (xx < Wt) & (yy >= 0) & (yy < Ht)
                weight = torch.where(inside, weight, torch.zeros_like(weight))
                xx, yy = xx.clamp(0, Wt - 1), yy.clamp(0, Ht - 1)
            idx = (yy * Wt + xx).reshape(B, -1, 1).expand(-1, -1, C)
            texel = torch.gather(flat, 1, idx).reshape(*uv.shape[:3], C)
            out = out + weight.unsqueeze(-1) * texel
    return out.to(tex.dtype)


def _visible_part(p: torch.Tensor, q: torch.Tensor, height: int, width: int):
    """render_math.h visible_part for edges p -> q (N, 4): (s0, s1, nonempty), the fractions of
    the way from p to q where the part inside the clip volume starts and ends."""
    gx, gy = GUARD_BAND / width, GUARD_BAND / height
    s0, s1 = torch.zeros_like(p[:, 0]), torch.ones_like(p[:, 0])
    some = torch.ones_like(s0, dtype=torch.bool)
    for plane in range(CLIP_PLANES):
        dp, dq = _clip_distance(p.unbind(-1), plane, gx, gy), _clip_distance(q.unbind(-1), plane, gx, gy)
        cut = (dp < 0) != (dq < 0)
        s = dp / torch.where(cut, dp - dq, torch.ones_like(dp))
        some &= (dp >= 0) | (dq >= 0)
        s0 = torch.where(cut & (dp < 0) & (s > s0), s, s0)
        s1 = torch.where(cut & (dq < 0) & (s < s1), s, s1)
    return s0, s1, some & (s0 < s1)


def _point_along(p: torch.Tensor, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """render_math.h point_along: p + s (q - p), p and q themselves at s = 0 and 1."""
    s = s.unsqueeze(-1)
    return torch.where(s == 0, p, torch.where(s == 1, q, p + s * (q - p)))


def _crossing_ratio(p: torch.Tensor, q: torch.Tensor, down: bool, ca: torch.Tensor, cb: torch.Tensor,
                    crosses: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """render_math.h crossing_distance without its step: where the screen line of edges p -> q
    (N, 4 clip vertices, any signs of w) crosses b = cb, relative to ca, from their
    2D-homogeneous frame vertices relative to the centre (1 on lanes that do not cross)."""
    def frame(v: torch.Tensor):
        x, y, w = v[:, 0], v[:, 1], v[:, 3]
        if down:
            return _homogeneous_offset(y, w, 0.5 * height, ca), _homogeneous_offset(x, w, 0.5 * width, cb), w
        return _homogeneous_offset(x, w, 0.5 * width, ca), _homogeneous_offset(y, w, 0.5 * height, cb), w
    (pa, pb, pw), (qa, qb, qw) = frame(p), frame(q)
    num = torch.where(crosses, pb * qa - pa * qb, torch.ones_like(pa))
    return num / torch.where(crosses, pb * qw - pw * qb, torch.ones_like(pa))


def _pair_sides(ids: torch.Tensor, down: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat pixel indices (within an image) of pixel 0 and pixel 1 of every pair of one direction."""
    _, H, W = ids.shape
    rows = torch.arange(H - (1 if down else 0), device=ids.device)
    cols = torch.arange(W - (0 if down else 1), device=ids.device)
    p0 = (rows.view(-1, 1) * W + cols.view(1, -1)).reshape(-1)
    return p0, p0 + (W if down else 1)


def _antialias_pairs(rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor, topology: torch.Tensor,
                     down: bool):
    """The blending pairs of one direction: (batch, target pixel, source pixel, weight), the
    weight differentiable in pos (csrc/antialias_pair.h analyse_pair, vectorised)."""
    B, H, W, _ = rast.shape
    ids = rast[..., 3].detach().long() - 1  # validated integral
    depth = rast[..., 2].detach().reshape(B, -1)
    p0, p1 = _pair_sides(ids, down)
    flat = ids.reshape(B, -1)
    f0, f1 = flat[:, p0], flat[:, p1]
    front = torch.where(f0 < 0, 1, torch.where(f1 < 0, 0, torch.where(depth[:, p0] <= depth[:, p1], 0, 1)))
    b, n = (f0 != f1).nonzero(as_tuple=True)
    front, pix0, pix1 = front[b, n], p0[n], p1[n]
    f = torch.where(front == 1, f1[b, n], f0[b, n])
    corners = tri.long()[f]  # (N, 3)
    v = pos.double()[b.view(-1, 1), corners]  # (N, 3, 4)
    w = v[..., 3]
    inv_w = 1.0 / torch.where(w >= MIN_W, w, torch.ones_like(w))
    sx = (v[..., 0] * inv_w + 1.0) * 0.5 * W
    sy = (v[..., 1] * inv_w + 1.0) * 0.5 * H
    projected = (w.detach() >= MIN_W) & (sx.detach().abs() < GUARD_BAND) & (sy.detach().abs() < GUARD_BAND)
    # Each edge's visible part (edge k: vertex k+1 -> k+2) by its projected ends: the whole edge
    # where both vertices project, else the part inside the clip volume (render_math.h
    # visible_part). ex, ey: (N, 3 edges, 2 ends) screen x and y, for the decisions only.
    ex, ey, usable = [], [], []
    vd, sxd, syd = v.detach(), sx.detach(), sy.detach()
    for k in range(3):
        i, j = (k + 1) % 3, (k + 2) % 3
        whole = projected[:, i] & projected[:, j]
        s0, s1, some = _visible_part(vd[:, i], vd[:, j], H, W)
        cx, cy, ok = [], [], some
        for s_end in (s0, s1):
            csx, csy, _, _, cvalid = _screen(_point_along(vd[:, i], vd[:, j], s_end), H, W)
            cx.append(csx)
            cy.append(csy)
            ok = ok & cvalid
        ex.append(torch.stack([torch.where(whole, sxd[:, i], cx[0]), torch.where(whole, sxd[:, j], cx[1])], 1))
        ey.append(torch.stack([torch.where(whole, syd[:, i], cy[0]), torch.where(whole, syd[:, j], cy[1])], 1))
        usable.append(whole | ok)
    ex, ey = torch.stack(ex, 1), torch.stack(ey, 1)
    front_pixel = torch.where(front == 1, pix1, pix0)
    row, col = (front_pixel // W).double(), (front_pixel % W).double()
    ca, cb = (row + 0.5, col + 0.5) if down else (col + 0.5, row + 0.5)
    step = torch.where(front == 1, -1.0, 1.0).double()
    ea, eb = (ey, ex) if down else (ex, ey)
    ts, straddle = [], []
    for k in range(3):
        crosses = usable[k] & ((eb[:, k, 0] < cb) != (eb[:, k, 1] < cb))
        ts.append(step * _crossing_ratio(v[:, (k + 1) % 3], v[:, (k + 2) % 3], down, ca, cb, crosses, H, W))
        straddle.append(crosses)
    t_all, straddle_all = torch.stack(ts, 1), torch.stack(straddle, 1)
    ranked = torch.where(straddle_all, t_all.detach(), torch.full_like(t_all.detach(), -float("inf")))
    edge = ranked.argmax(1)  # the first of equal maxima, as the kernels' strict comparison
    ok = straddle_all.any(1)
    t = t_all.gather(1, edge.view(-1, 1)).squeeze(1)
    td = t.detach()
    ok &= (td >= -ANTIALIAS_SLACK) & (td <= 1.0 + ANTIALIAS_SLACK)
    rows_n = torch.arange(edge.numel(), device=edge.device)

    def end(x: torch.Tensor, e: int) -> torch.Tensor:
        return x[rows_n, edge, e]

    ok &= (end(eb, 1) - end(eb, 0)).abs() >= (end(ea, 1) - end(ea, 0)).abs()
    px, py, qx, qy = end(ex, 0), end(ey, 0), end(ex, 1), end(ey, 1)
    # A clipped triangle's or neighbour's vertex without a projection: its side of the edge from
    # the homogeneous vertex (render_math.h vertex_side).
    own = _vertex_side(px, py, qx, qy, v.detach()[rows_n, edge], projected[rows_n, edge], H, W)
    ok &= own != 0.0
    # The segment must cross the edge out of the triangle (render_math.h leaves_across_edge):
    # a clipped triangle's edge may be where the segment enters it.
    change = (step if down else -step) * (end(eb, 1) - end(eb, 0))
    ok &= torch.where(own > 0, change < 0, change > 0)
    other = topology.long()[f, edge]
    has_other = other >= 0
    ov = pos.detach().double()[b, other.clamp(min=0)]
    _, _, _, _, ovalid = _screen(ov, H, W)
    e_other = _vertex_side(px, py, qx, qy, ov, ovalid, H, W)
    silhouette = ~has_other | torch.where(own > 0, e_other >= 0, e_other <= 0)
    ok &= silhouette
    keep = ok.nonzero().squeeze(1)
    t = t[keep].clamp(0.0, 1.0)
    front, pix0, pix1, b = front[keep], pix0[keep], pix1[keep], b[keep]
    into_front = t.detach() < 0.5
    weight = torch.where(into_front, 0.5 - t, t - 0.5)
    front_px, back_px = torch.where(front == 1, pix1, pix0), torch.where(front == 1, pix0, pix1)
    target = torch.where(into_front, front_px, back_px)
    source = torch.where(into_front, back_px, front_px)
    return b, target, source, weight


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              topology: torch.Tensor) -> torch.Tensor:
    """color (B, H, W, C) blended across silhouette edges (see engine/render/ops.py antialias);
    float64 inside, rounded once to color's dtype. Differentiable in color and pos."""
    B, H, W, C = color.shape
    flat = color.double().reshape(B * H * W, C)
    out = flat
    for down in (False, True):
        b, target, source, weight = _antialias_pairs(rast, pos, tri, topology, down)
        target, source = b * H * W + target, b * H * W + source
        out = out.index_add(0, target, weight.unsqueeze(1) * (flat[source] - flat[target]))
    return out.reshape(B, H, W, C).to(color.dtype)


def interpolate_derivatives(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor,
                            pos: torch.Tensor) -> torch.Tensor:
    """Screen-space derivatives of the interpolated attributes, (B, H, W, 2C) laid out as
    (d a_0/dx, d a_0/dy, d a_1/dx, ...), per pixel step (x: a column right, y: a row down).
    The barycentrics' derivatives come from the clip positions pos (B, V, 4) given to
    rasterize, as csrc/render_math.h's barycentric_derivatives; pos gets no gradient here (as
    in the kernels), attr does."""
    B, H, W, _ = rast.shape
    if attr.dim() == 2:
        attr = attr.unsqueeze(0)
    attr = attr.expand(B, -1, -1)
    C = attr.shape[2]
    ids = rast[..., 3].detach().round().long() - 1
    hit = ids >= 0
    corners = tri.long()[ids.clamp(min=0)]  # (B, H, W, 3)
    batch = torch.arange(B, device=rast.device).view(B, 1, 1, 1)
    v = pos.detach().double()[batch, corners]  # (B, H, W, 3, 4)
    dummy = torch.tensor([[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]],
                         dtype=torch.float64, device=rast.device)
    v = torch.where(hit[..., None, None], v, dummy)
    px = torch.arange(W, device=rast.device, dtype=torch.float64).view(1, 1, W) + 0.5
    py = torch.arange(H, device=rast.device, dtype=torch.float64).view(1, H, 1) + 0.5
    ax, ay, cross = _homogeneous_terms(v, px, py, H, W)
    w = [v[..., k, 3] for k in range(3)]
    total = cross[0] + cross[1] + cross[2]
    safe = torch.where(total == 0, torch.ones_like(total), total)
    dcx = [w[(k + 2) % 3] * ay[(k + 1) % 3] - w[(k + 1) % 3] * ay[(k + 2) % 3] for k in range(3)]
    dcy = [w[(k + 1) % 3] * ax[(k + 2) % 3] - w[(k + 2) % 3] * ax[(k + 1) % 3] for k in range(3)]
    sum_x, sum_y = dcx[0] + dcx[1] + dcx[2], dcy[0] + dcy[1] + dcy[2]
    db = [[(dc[k] - cross[k] / safe * s) / safe for dc, s in ((dcx, sum_x), (dcy, sum_y))]
          for k in range(2)]
    usable = (hit & (total != 0)).unsqueeze(-1)
    a = attr.double()[batch, corners]  # (B, H, W, 3, C)
    e0, e1 = a[..., 0, :] - a[..., 2, :], a[..., 1, :] - a[..., 2, :]
    ddx = db[0][0].unsqueeze(-1) * e0 + db[1][0].unsqueeze(-1) * e1
    ddy = db[0][1].unsqueeze(-1) * e0 + db[1][1].unsqueeze(-1) * e1
    out = torch.stack([ddx, ddy], -1).reshape(B, H, W, 2 * C)
    return torch.where(usable, out, torch.zeros_like(out)).to(rast.dtype)


def mip_blend(uv_da: torch.Tensor, tex_h: int, tex_w: int, max_level: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(first level (long), weight of the next level) per pixel, from uv's screen derivatives
    (B, H, W, 4) = (du/dx, du/dy, dv/dx, dv/dy), as csrc/render_math.h's mip_blend: lod =
    log2 of the longer pixel footprint in level-0 texels, clamped to [0, max_level]."""
    da = uv_da.double()
    ax, ay = da[..., 0] * tex_w, da[..., 2] * tex_h
    bx, by = da[..., 1] * tex_w, da[..., 3] * tex_h
    ma, mb = ax * ax + ay * ay, bx * bx + by * by
    m = torch.where(ma >= mb, ma, mb)
    if max_level == 0:
        lod = torch.zeros_like(m)
    else:
        lod = (0.5 * torch.log2(m.clamp(min=1.0))).clamp(max=float(max_level))
    first = torch.floor(lod.detach()).long()
    frac = torch.where(first >= max_level, torch.zeros_like(lod), lod - first)
    return first, frac


def sample_texture_mip(levels: list[torch.Tensor], uv: torch.Tensor, uv_da: torch.Tensor,
                       boundary: str = "clamp") -> torch.Tensor:
    """Trilinear lookup: the bilinear samples (sample_texture) of levels floor(lod) and the
    next, blended by lod's fraction. levels: [tex, level 1, ..., level L] (mipmap.mip_levels)."""
    max_level = len(levels) - 1
    first, frac = mip_blend(uv_da, levels[0].shape[1], levels[0].shape[2], max_level)
    out = 0
    for level, texels in enumerate(levels):
        weight = (torch.where(first == level, 1.0 - frac, torch.zeros_like(frac))
                  + torch.where(first + 1 == level, frac, torch.zeros_like(frac)))
        out = out + weight.unsqueeze(-1) * sample_texture(texels.double(), uv, boundary)
    return out.to(levels[0].dtype)
