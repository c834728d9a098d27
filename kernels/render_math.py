"""The per-vertex, per-triangle and per-pixel math of the rendering layer, in Triton.

This restates csrc/render_math.h (the C++/CUDA kernels' header) helper by helper, with the
same names and the same order of floating-point operations, so that the Triton kernels decide
coverage and visibility exactly as the C++ kernels do (integer edge functions, the same
float32-rounded depth key) and produce the same values to rounding. Change both together;
tests/test_triton.py holds them equal. Conventions are documented in engine/render/ops.py.

Every helper works elementwise on blocks of any shape. Two Triton typing rules shape the code:
  * an integer tensor combined with a Python float gives float32, so integers that enter the
    float64 math are converted with `.to(tl.float64)` or multiply a float64 tensor;
  * Python float literals may become float32 constants, so the only constant that float32
    cannot hold exactly, 1/3, is computed in float64 (`one / 3.0`).
Lanes that hold no triangle are given harmless values by the callers (w = 1, a non-degenerate
dummy triangle), so that no helper divides by zero: the GPU would not care, but the CPU
interpreter (numpy) would warn.
"""
import triton
import triton.language as tl

from nl3dmm import constants

# Globals a @triton.jit function reads must be tl.constexpr; the values are nl3dmm.constants'.
SUBPIXEL_BITS = tl.constexpr(constants.SUBPIXEL_BITS)
SUBPIXEL_SCALE = tl.constexpr(float(constants.SUBPIXEL_SCALE))  # fixed point in 1/256 pixel
PIXEL_CENTRE = tl.constexpr(constants.SUBPIXEL_SCALE // 2)  # a pixel centre in fixed point
GUARD_BAND = tl.constexpr(float(constants.GUARD_BAND_PIXELS))  # edge functions stay in int64
MIN_W = tl.constexpr(constants.MIN_W)  # smaller w: behind the eye (1/w would overflow float32)
CLIP_PLANES = tl.constexpr(constants.CLIP_PLANES)  # near, far, four guard band planes
MAX_CLIP_VERTICES = tl.constexpr(constants.MAX_CLIP_VERTICES)  # a clipped triangle's polygon
# The z-buffer holds ((sortable depth bits - 2^31) << 32) | triangle as a *signed* int64 (the
# GPU's atomic_min is signed), i.e. render_math.h's unsigned key shifted by -2^63: same order.
EMPTY_KEY = tl.constexpr(0x7FFFFFFFFFFFFFFF)
CLAMP = tl.constexpr(constants.BOUNDARY_MODES["clamp"])  # BoundaryMode
ZERO = tl.constexpr(constants.BOUNDARY_MODES["zero"])
WRAP = tl.constexpr(constants.BOUNDARY_MODES["wrap"])


# ---- coverage: projection, fixed-point edge functions, fill rule, depth key ---------------

@triton.jit
def floor_to_int(x):
    """floor() of a float64 as int64, as render_math.h's floor_to_int (truncate, then fix)."""
    i = x.to(tl.int64)
    return i - (x < i.to(tl.float64)).to(tl.int64)


@triton.jit
def screen_point(x, y, w, height, width):
    """Where float64 clip vertices land on screen: (sx, sy, inv_w, valid), valid: w > 0 and
    inside the guard band (screen_point: project_vertex's first half)."""
    valid = w >= MIN_W
    inv_w = tl.where(valid, 1.0 / tl.where(valid, w, 1.0), 0.0)
    sx = (x * inv_w + 1.0) * 0.5 * width
    sy = (y * inv_w + 1.0) * 0.5 * height
    valid = valid & (tl.abs(sx) < GUARD_BAND) & (tl.abs(sy) < GUARD_BAND)
    return sx, sy, inv_w, valid


@triton.jit
def project_vertex(x, y, z, w, height, width):
    """Clip -> screen of float64 vertices: (sx, sy, depth, fx, fy, valid), fx, fy snapped to
    1/256 pixel (int64). valid: w > 0 and inside the guard band (project_vertex)."""
    sx, sy, inv_w, valid = screen_point(x, y, w, height, width)
    depth = z * inv_w
    # Invalid vertices are snapped from 0.0 so that no huge value meets the int conversion.
    fx = tl.where(valid, floor_to_int(tl.where(valid, sx, 0.0) * SUBPIXEL_SCALE + 0.5), 0)
    fy = tl.where(valid, floor_to_int(tl.where(valid, sy, 0.0) * SUBPIXEL_SCALE + 0.5), 0)
    return sx, sy, depth, fx, fy, valid


@triton.jit
def clip_distance(x, y, z, w, PLANE: tl.constexpr, gx, gy):
    """Signed distance to clip plane PLANE, >= 0 inside (clip_distance): 0 near, 1 far, 2..5
    the guard band planes."""
    if PLANE == 0:
        d = w + z
    elif PLANE == 1:
        d = w - z
    elif PLANE == 2:
        d = gx * w - x
    elif PLANE == 3:
        d = gx * w + x
    elif PLANE == 4:
        d = gy * w - y
    else:
        d = gy * w + y
    return d


@triton.jit
def clip_distance_of(x, y, z, w, plane, gx, gy):
    """clip_distance for a run-time plane index (a loop variable): the same six formulas,
    selected, so a kernel can loop over the planes instead of unrolling them."""
    d = tl.where(plane == 4, gy * w - y, gy * w + y)
    d = tl.where(plane == 3, gx * w + x, d)
    d = tl.where(plane == 2, gx * w - x, d)
    d = tl.where(plane == 1, w - z, d)
    return tl.where(plane == 0, w + z, d)


@triton.jit
def guard_ratios(height, width):
    """(gx, gy) = 2^20 / (W, H) in float64, the guard band planes' slopes (guard_ratio)."""
    gx = tl.full((), GUARD_BAND, tl.float64) / width
    gy = tl.full((), GUARD_BAND, tl.float64) / height
    return gx, gy


@triton.jit
def inside_clip_volume(x, y, z, w, height, width):
    """w >= MIN_W and inside all six clip planes (inside_clip_volume): such a triangle is drawn
    as it is, any other one clipped."""
    gx, gy = guard_ratios(height, width)
    inside = w >= MIN_W
    inside = inside & (clip_distance(x, y, z, w, 0, gx, gy) >= 0.0)
    inside = inside & (clip_distance(x, y, z, w, 1, gx, gy) >= 0.0)
    inside = inside & (clip_distance(x, y, z, w, 2, gx, gy) >= 0.0)
    inside = inside & (clip_distance(x, y, z, w, 3, gx, gy) >= 0.0)
    inside = inside & (clip_distance(x, y, z, w, 4, gx, gy) >= 0.0)
    inside = inside & (clip_distance(x, y, z, w, 5, gx, gy) >= 0.0)
    return inside


@triton.jit
def edge(ax, ay, bx, by, px, py):
    """Edge function, > 0 when p is left of a->b (counter-clockwise, y up). Exact on int64
    fixed-point inputs (edge_fixed), float64 otherwise (edge_real)."""
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


@triton.jit
def owns_edge(dx, dy):
    """The fill rule: antisymmetric under edge reversal, so of two triangles sharing an edge
    exactly one owns the pixel centres lying on it."""
    return (dy < 0) | ((dy == 0) & (dx < 0))


@triton.jit
def pixel_bounds(fx0, fy0, fx1, fy1, fx2, fy2, height, width):
    """Pixels whose centres the snapped bounding box contains, clipped to the image:
    (x_lo, x_hi, y_lo, y_hi) inclusive, empty when lo > hi (pixel_bounds)."""
    xmin = tl.minimum(tl.minimum(fx0, fx1), fx2)
    xmax = tl.maximum(tl.maximum(fx0, fx1), fx2)
    ymin = tl.minimum(tl.minimum(fy0, fy1), fy2)
    ymax = tl.maximum(tl.maximum(fy0, fy1), fy2)
    # Pixel k has its centre at k * 256 + 128 in fixed point. An arithmetic right shift is
    # floor division by 256 for negative values too (as in render_math.h), and unlike `//` it
    # is no 64-bit division on the GPU.
    x_lo = tl.maximum(-((PIXEL_CENTRE - xmin) >> SUBPIXEL_BITS), 0)
    x_hi = tl.minimum((xmax - PIXEL_CENTRE) >> SUBPIXEL_BITS, width - 1)
    y_lo = tl.maximum(-((PIXEL_CENTRE - ymin) >> SUBPIXEL_BITS), 0)
    y_hi = tl.minimum((ymax - PIXEL_CENTRE) >> SUBPIXEL_BITS, height - 1)
    return x_lo, x_hi, y_lo, y_hi


@triton.jit
def setup_triangle(fx0, fy0, fx1, fy1, fx2, fy2, CULL: tl.constexpr):
    """(area2, orient, owns0, owns1, owns2, draws) of snapped triangles (setup_triangle).
    area2 is twice the snapped area made positive (1 where the triangle draws nothing, so it
    can divide); edge k runs from vertex k+1 to vertex k+2; draws is false for zero area and
    for culled back faces."""
    area2 = edge(fx0, fy0, fx1, fy1, fx2, fy2)
    draws = area2 != 0
    if CULL:
        draws = draws & (area2 > 0)
    orient = tl.where(area2 > 0, 1, -1).to(tl.int64)
    owns0 = owns_edge(orient * (fx2 - fx1), orient * (fy2 - fy1))
    owns1 = owns_edge(orient * (fx0 - fx2), orient * (fy0 - fy2))
    owns2 = owns_edge(orient * (fx1 - fx0), orient * (fy1 - fy0))
    area2 = tl.where(draws, orient * area2, 1)
    return area2, orient, owns0, owns1, owns2, draws


@triton.jit
def depth_key(depth32, triangle):
    """The z-buffer key of a float32 depth and an int triangle index: smaller is nearer, ties
    go to the smaller index. Equal to ((sortable_float_bits(depth32) - 2^31) << 32) | triangle:
    for bits >= 0 that is bits itself; for negative floats it is ~bits - 2^31, which in int32
    is bits ^ 0x7FFFFFFF."""
    bits = depth32.to(tl.int32, bitcast=True)
    high = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (high.to(tl.int64) << 32) | triangle.to(tl.int64)


@triton.jit
def fragment_key(fx0, fy0, fx1, fy1, fx2, fy2, d0, d1, d2, area2, orient, owns0, owns1, owns2,
                 row, col, triangle):
    """(key, covered) of pixel (row, col) for a set-up triangle (fragment_key): covered when
    the pixel centre is inside (fill rule on the edges) and the depth, interpolated in float64
    from the exact integer edge values and rounded to float32, lies in [-1, 1]."""
    px = (col.to(tl.int64) << SUBPIXEL_BITS) + PIXEL_CENTRE
    py = (row.to(tl.int64) << SUBPIXEL_BITS) + PIXEL_CENTRE
    e0 = orient * edge(fx1, fy1, fx2, fy2, px, py)
    e1 = orient * edge(fx2, fy2, fx0, fy0, px, py)
    e2 = orient * edge(fx0, fy0, fx1, fy1, px, py)
    covered = (e0 > 0) | ((e0 == 0) & owns0)
    covered = covered & ((e1 > 0) | ((e1 == 0) & owns1))
    covered = covered & ((e2 > 0) | ((e2 == 0) & owns2))
    depth = (e0.to(tl.float64) * d0 + e1.to(tl.float64) * d1 + e2.to(tl.float64) * d2
             ) / area2.to(tl.float64)
    depth32 = depth.to(tl.float32)
    covered = covered & (depth32 >= -1.0) & (depth32 <= 1.0)
    return depth_key(depth32, triangle), covered


# ---- resolve: perspective-correct barycentrics and depth in float64, and their gradient ----

@triton.jit
def load_clip_vertex(vertex_ptr, active, dummy_x, dummy_y):
    """(x, y, z, w) in float64 of the vertices at vertex_ptr; inactive lanes read nothing and
    get (dummy_x, dummy_y, 0, 1), a corner of a harmless triangle."""
    x = tl.load(vertex_ptr + 0, mask=active, other=dummy_x).to(tl.float64)
    y = tl.load(vertex_ptr + 1, mask=active, other=dummy_y).to(tl.float64)
    z = tl.load(vertex_ptr + 2, mask=active, other=0.0).to(tl.float64)
    w = tl.load(vertex_ptr + 3, mask=active, other=1.0).to(tl.float64)
    return x, y, z, w


@triton.jit
def homogeneous_offset(c, w, half, centre):
    """homogeneous_offset: a clip coordinate c (x or y) as its screen coordinate relative to
    `centre`, times w: (c + w) half - centre w; valid for any sign of w."""
    return (c + w) * half - centre * w


@triton.jit
def homogeneous_terms(x0, y0, w0, x1, y1, w1, x2, y2, w2, px, py, height, width):
    """a_k = (X_k - px w_k, Y_k - py w_k), X = (x + w) W / 2, and cross_k = cross(a_i, a_j)
    (homogeneous_pixel), float64: 9 values ax0, ax1, ax2, ay0, ay1, ay2, c0, c1, c2."""
    hx = 0.5 * width
    hy = 0.5 * height
    ax0 = homogeneous_offset(x0, w0, hx, px)
    ax1 = homogeneous_offset(x1, w1, hx, px)
    ax2 = homogeneous_offset(x2, w2, hx, px)
    ay0 = homogeneous_offset(y0, w0, hy, py)
    ay1 = homogeneous_offset(y1, w1, hy, py)
    ay2 = homogeneous_offset(y2, w2, hy, py)
    c0 = ax1 * ay2 - ay1 * ax2
    c1 = ax2 * ay0 - ay2 * ax0
    c2 = ax0 * ay1 - ay0 * ax1
    return ax0, ax1, ax2, ay0, ay1, ay2, c0, c1, c2


@triton.jit
def homogeneous_weights(c0, c1, c2, z0, w0, z1, w1, z2, w2):
    """(flat, total, b0, b1, b2, den, edge_on, depth) of homogeneous_pixel: b = cross / total
    (1/3 each when the triangle is seen edge-on, total 0), depth = sum b z / sum b w (0 where
    that denominator is 0)."""
    total = c0 + c1 + c2
    flat = total == 0.0
    safe = tl.where(flat, 1.0, total)
    third = tl.full(total.shape, 1.0, tl.float64) / 3.0
    b0 = tl.where(flat, third, c0 / safe)
    b1 = tl.where(flat, third, c1 / safe)
    b2 = tl.where(flat, third, c2 / safe)
    num = b0 * z0 + b1 * z1 + b2 * z2
    den = b0 * w0 + b1 * w1 + b2 * w2
    edge_on = den == 0.0
    depth = tl.where(edge_on, 0.0, num / tl.where(edge_on, 1.0, den))
    return flat, safe, b0, b1, b2, den, edge_on, depth


@triton.jit
def resolve_pixel(x0, y0, z0, w0, x1, y1, z1, w1, x2, y2, z2, w2, px, py, height, width):
    """(b0, b1, depth) at screen point (px, py) of the unsnapped triangle (resolve_pixel): the
    2D-homogeneous form, valid whatever the signs of w; for w > 0 the perspective-correct
    barycentrics and the screen-linear z / w."""
    _, _, _, _, _, _, c0, c1, c2 = homogeneous_terms(x0, y0, w0, x1, y1, w1, x2, y2, w2, px, py,
                                                     height, width)
    _, _, b0, b1, _, _, _, depth = homogeneous_weights(c0, c1, c2, z0, w0, z1, w1, z2, w2)
    return b0, b1, depth


@triton.jit
def _cross_grads(g_c, axi, ayi, axj, ayj):
    """cross = ax_i ay_j - ay_i ax_j: its gradient (times g_c) to ax_i, ay_i, ax_j, ay_j."""
    return g_c * ayj, 0.0 - g_c * axj, 0.0 - g_c * ayi, g_c * axi


@triton.jit
def resolve_pixel_backward(x0, y0, z0, w0, x1, y1, z1, w1, x2, y2, z2, w2, px, py, height, width,
                           g_b0, g_b1, g_depth):
    """Gradient of resolve_pixel's (b0, b1, depth) with respect to the clip coordinates, as 12
    values (dx0, dy0, dz0, dw0, dx1, ..., dw2); zero for a triangle seen edge-on, no depth
    term where its denominator is 0 (resolve_pixel_backward in render_math.h, whose serial
    scatter multiplies by 1 / sum where these lanes divide: the two differ in the last bits)."""
    ax0, ax1, ax2, ay0, ay1, ay2, c0, c1, c2 = homogeneous_terms(
        x0, y0, w0, x1, y1, w1, x2, y2, w2, px, py, height, width)
    flat, total, b0, b1, b2, den, edge_on, depth = homogeneous_weights(c0, c1, c2, z0, w0, z1, w1,
                                                                       z2, w2)
    g_d = tl.where(edge_on, 0.0, g_depth / tl.where(edge_on, 1.0, den))
    gb0 = g_b0 + g_d * (z0 - depth * w0)
    gb1 = g_b1 + g_d * (z1 - depth * w1)
    gb2 = 0.0 + g_d * (z2 - depth * w2)
    gb_dot_b = gb0 * b0 + gb1 * b1 + gb2 * b2
    # In render_math.h's order: k = 0 (i = 1, j = 2), k = 1 (i = 2, j = 0), k = 2 (i = 0, j = 1),
    # each adding to ax_i, ay_i, ax_j, ay_j.
    g_c0 = (gb0 - gb_dot_b) / total
    g_ax1, g_ay1, g_ax2, g_ay2 = _cross_grads(g_c0, ax1, ay1, ax2, ay2)
    g_c1 = (gb1 - gb_dot_b) / total
    t_ax2, t_ay2, g_ax0, g_ay0 = _cross_grads(g_c1, ax2, ay2, ax0, ay0)
    g_ax2 += t_ax2
    g_ay2 += t_ay2
    g_c2 = (gb2 - gb_dot_b) / total
    t_ax0, t_ay0, t_ax1, t_ay1 = _cross_grads(g_c2, ax0, ay0, ax1, ay1)
    g_ax0 += t_ax0
    g_ay0 += t_ay0
    g_ax1 += t_ax1
    g_ay1 += t_ay1
    gx0, gy0, gz0, gw0 = vertex_backward(g_ax0, g_ay0, g_d, b0, depth, px, py, height, width)
    gx1, gy1, gz1, gw1 = vertex_backward(g_ax1, g_ay1, g_d, b1, depth, px, py, height, width)
    gx2, gy2, gz2, gw2 = vertex_backward(g_ax2, g_ay2, g_d, b2, depth, px, py, height, width)
    zero = tl.full(px.shape, 0.0, tl.float64)
    return (tl.where(flat, zero, gx0), tl.where(flat, zero, gy0), tl.where(flat, zero, gz0),
            tl.where(flat, zero, gw0), tl.where(flat, zero, gx1), tl.where(flat, zero, gy1),
            tl.where(flat, zero, gz1), tl.where(flat, zero, gw1), tl.where(flat, zero, gx2),
            tl.where(flat, zero, gy2), tl.where(flat, zero, gz2), tl.where(flat, zero, gw2))


@triton.jit
def vertex_backward(g_ax, g_ay, g_d, b, depth, px, py, height, width):
    """Chain rule through one vertex's ax = (x + w) hx - px w, ay = (y + w) hy - py w and its
    direct share of depth: gradient of (x, y, z, w)."""
    hx = 0.5 * width
    hy = 0.5 * height
    gx = g_ax * hx
    gy = g_ay * hy
    gz = g_d * b
    gw = g_ax * (hx - px) + g_ay * (hy - py) - g_d * depth * b
    return gx, gy, gz, gw


# ---- bilinear texture lookup ---------------------------------------------------------------
# Texel (i, j) of an Ht x Wt texture has its centre at uv = ((j + 0.5) / Wt, (i + 0.5) / Ht).

@triton.jit
def wrap_index(i, n):
    r = i % n
    return tl.where(r < 0, r + n, r)


@triton.jit
def bilinear_tap(yy, xx, tex_h, tex_w, MODE: tl.constexpr):
    """(row-major texel index, inside) of one tap after the boundary rule; a tap outside the
    texture in ZERO mode reads texel 0 with inside = False (its weight becomes 0)."""
    if MODE == WRAP:
        yy = wrap_index(yy, tex_h)
        xx = wrap_index(xx, tex_w)
    elif MODE == CLAMP:
        yy = tl.minimum(tl.maximum(yy, 0), tex_h - 1)
        xx = tl.minimum(tl.maximum(xx, 0), tex_w - 1)
    inside = (yy >= 0) & (yy < tex_h) & (xx >= 0) & (xx < tex_w)  # always true but in ZERO
    return tl.where(inside, yy * tex_w + xx, 0), inside


@triton.jit
def bilinear_taps(u, v, tex_h, tex_w, MODE: tl.constexpr):
    """The four taps of float64 (u, v) (bilinear_taps): texel indices and inside flags of
    (y0, x0), (y0, x1), (y1, x0), (y1, x1), then the fractional position (fx, fy)."""
    if MODE == WRAP:  # one period first: exact, and no huge uv overflows u * tex_w to inf
        u = u - tl.floor(u)
        v = v - tl.floor(v)
    x = u * tex_w - 0.5
    y = v * tex_h - 0.5
    if MODE != WRAP:
        # Beyond 3 texels outside, both taps are clamped (or zero) whatever the fraction, so
        # clamping x first changes nothing and keeps inf (u * tex_w overflowing) out of fx.
        lim_x = tex_w + 3.0  # exact even in float32: textures are at most 16384 texels wide
        lim_y = tex_h + 3.0
        x = tl.where(x < -3.0, -3.0, tl.where(x > lim_x, lim_x, x))
        y = tl.where(y < -3.0, -3.0, tl.where(y > lim_y, lim_y, y))
    xf = tl.floor(x)
    yf = tl.floor(y)
    fx = x - xf
    fy = y - yf
    if MODE == WRAP:  # x in [-0.5, tex_w): xf wraps to a texel in range
        x0 = (xf - tex_w * tl.floor(xf / tex_w)).to(tl.int64)
        y0 = (yf - tex_h * tl.floor(yf / tex_h)).to(tl.int64)
    else:
        x0 = xf.to(tl.int64)
        y0 = yf.to(tl.int64)
    i00, in00 = bilinear_tap(y0, x0, tex_h, tex_w, MODE)
    i01, in01 = bilinear_tap(y0, x0 + 1, tex_h, tex_w, MODE)
    i10, in10 = bilinear_tap(y0 + 1, x0, tex_h, tex_w, MODE)
    i11, in11 = bilinear_tap(y0 + 1, x0 + 1, tex_h, tex_w, MODE)
    return i00, i01, i10, i11, in00, in01, in10, in11, fx, fy


@triton.jit
def bilinear_weights(fx, fy, in00, in01, in10, in11):
    """Tap weights in the order of bilinear_taps; 0 for taps outside (bilinear_weights)."""
    w00 = (1.0 - fy) * (1.0 - fx)
    w01 = (1.0 - fy) * fx
    w10 = fy * (1.0 - fx)
    w11 = fy * fx
    return (tl.where(in00, w00, 0.0), tl.where(in01, w01, 0.0), tl.where(in10, w10, 0.0),
            tl.where(in11, w11, 0.0))


@triton.jit
def bilinear_weight_grads(fx, fy, in00, in01, in10, in11, tex_h, tex_w):
    """d(weights)/du then d(weights)/dv, 8 values (bilinear_weight_grads)."""
    du00 = -(1.0 - fy) * tex_w
    du01 = (1.0 - fy) * tex_w
    du10 = -fy * tex_w
    du11 = fy * tex_w
    dv00 = -(1.0 - fx) * tex_h
    dv01 = -fx * tex_h
    dv10 = (1.0 - fx) * tex_h
    dv11 = fx * tex_h
    return (tl.where(in00, du00, 0.0), tl.where(in01, du01, 0.0), tl.where(in10, du10, 0.0),
            tl.where(in11, du11, 0.0), tl.where(in00, dv00, 0.0), tl.where(in01, dv01, 0.0),
            tl.where(in10, dv10, 0.0), tl.where(in11, dv11, 0.0))


# ---- antialiasing: silhouette crossings between pixel centres (render_math.h) ----------------
# In a pixel pair's frame: `a` along the segment joining the two centres, `b` across it.

ANTIALIAS_SLACK = tl.constexpr(constants.ANTIALIAS_SLACK)


@triton.jit
def edge_straddles(pb, qb, cb):
    """Whether the edge p -> q crosses the line b = cb (half-open, as edge_straddles)."""
    return (pb < cb) != (qb < cb)


@triton.jit
def visible_part(px, py, pz, pw, qx, qy, qz, qw, height, width):
    """visible_part: (s0, s1, some), the fractions of the way from p to q where the part of the
    edge inside the clip volume starts and ends; some: more than a point of it is inside."""
    gx, gy = guard_ratios(height, width)
    s0 = tl.full(px.shape, 0.0, tl.float64)
    s1 = s0 + 1.0
    some = s0 == 0.0
    for plane in tl.static_range(6):
        dp = clip_distance(px, py, pz, pw, plane, gx, gy)
        dq = clip_distance(qx, qy, qz, qw, plane, gx, gy)
        some = some & ((dp >= 0.0) | (dq >= 0.0))
        cut = (dp < 0.0) | (dq < 0.0)
        s = tl.where(cut, dp / tl.where(cut, dp - dq, 1.0), 0.0)
        s0 = tl.where((dp < 0.0) & (s > s0), s, s0)
        s1 = tl.where((dq < 0.0) & (s < s1), s, s1)
    return s0, s1, some & (s0 < s1)


@triton.jit
def point_along(p, q, s):
    """One coordinate of point_along: p + s (q - p), p and q themselves at s = 0 and 1."""
    return tl.where(s == 0.0, p, tl.where(s == 1.0, q, p + s * (q - p)))


@triton.jit
def visible_ends(xi, yi, zi, wi, sxi, syi, oki, xj, yj, zj, wj, sxj, syj, okj, height, width):
    """The screen ends (ax, ay, bx, by) of edge i -> j's visible part and whether it is a
    candidate (antialias_pair.h analyse_pair): the projections sx, sy themselves where both
    ends project (ok), else those of the part inside the clip volume."""
    s0, s1, some = visible_part(xi, yi, zi, wi, xj, yj, zj, wj, height, width)
    ax, ay, _, ok0 = screen_point(point_along(xi, xj, s0), point_along(yi, yj, s0),
                                  point_along(wi, wj, s0), height, width)
    bx, by, _, ok1 = screen_point(point_along(xi, xj, s1), point_along(yi, yj, s1),
                                  point_along(wi, wj, s1), height, width)
    whole = oki & okj
    return (tl.where(whole, sxi, ax), tl.where(whole, syi, ay), tl.where(whole, sxj, bx),
            tl.where(whole, syj, by), whole | (some & ok0 & ok1))


@triton.jit
def frame_vertex(x, y, w, ca, cb, height, width, DOWN: tl.constexpr):
    """frame_vertex without its w: the clip vertex's 2D-homogeneous (a, b) in the pair's frame,
    relative to the centre (ca, cb)."""
    if DOWN:
        fa = homogeneous_offset(y, w, 0.5 * height, ca)
        fb = homogeneous_offset(x, w, 0.5 * width, cb)
    else:
        fa = homogeneous_offset(x, w, 0.5 * width, ca)
        fb = homogeneous_offset(y, w, 0.5 * height, cb)
    return fa, fb


@triton.jit
def crossing_distance(px, py, pw, qx, qy, qw, ca, cb, step, crosses, height, width,
                      DOWN: tl.constexpr):
    """crossing_distance: from (ca, cb) along step (+-1) to where the screen line of the edge
    p -> q (clip x, y, w, any signs of w) crosses b = cb; lanes where it does not cross get a
    harmless value."""
    pa, pb = frame_vertex(px, py, pw, ca, cb, height, width, DOWN)
    qa, qb = frame_vertex(qx, qy, qw, ca, cb, height, width, DOWN)
    return step * ((pb * qa - pa * qb) / tl.where(crosses, pb * qw - pw * qb, 1.0))


@triton.jit
def crossing_distance_backward(px, py, pw, qx, qy, qw, ca, cb, step, height, width, g_t,
                               DOWN: tl.constexpr):
    """Gradient of crossing_distance (times g_t) with respect to the edge's clip (x, y, w) of
    p and then q (crossing_distance_backward; z gets none)."""
    pa, pb = frame_vertex(px, py, pw, ca, cb, height, width, DOWN)
    qa, qb = frame_vertex(qx, qy, qw, ca, cb, height, width, DOWN)
    den = pb * qw - pw * qb
    r = (pb * qa - pa * qb) / den
    g = step * g_t / den
    g_pa = -qb * g
    g_pb = (qa - r * qw) * g
    g_pw = r * qb * g
    g_qa = pb * g
    g_qb = (r * pw - pa) * g
    g_qw = -r * pb * g
    if DOWN:
        half_a = 0.5 * height
        half_b = 0.5 * width
    else:
        half_a = 0.5 * width
        half_b = 0.5 * height
    gwp = g_pw + g_pa * (half_a - ca) + g_pb * (half_b - cb)
    gwq = g_qw + g_qa * (half_a - ca) + g_qb * (half_b - cb)
    if DOWN:
        return g_pb * half_b, g_pa * half_a, gwp, g_qb * half_b, g_qa * half_a, gwq
    else:
        return g_pa * half_a, g_pb * half_b, gwp, g_qa * half_a, g_qb * half_b, gwq


@triton.jit
def homogeneous_side(px, py, qx, qy, x, y, w, height, width):
    """homogeneous_side: which side of the screen line p -> q a neighbour's third vertex (clip
    x, y, w) lies on, w times edge(p, q, its projection), for any sign of w."""
    ox = homogeneous_offset(x, w, 0.5 * width, px)
    oy = homogeneous_offset(y, w, 0.5 * height, py)
    return (qx - px) * oy - (qy - py) * ox


@triton.jit
def vertex_side(px, py, qx, qy, sx, sy, projected, x, y, w, height, width):
    """vertex_side: the side of p -> q a vertex lies on, from its projection (sx, sy) where
    `projected`, else from its clip x, y, w (homogeneous_side)."""
    return tl.where(projected, edge(px, py, qx, qy, sx, sy),
                    homogeneous_side(px, py, qx, qy, x, y, w, height, width))


@triton.jit
def leaves_across_edge(pb, qb, step, own, DOWN: tl.constexpr):
    """leaves_across_edge: the segment along step crosses the straddling edge p -> q out of the
    triangle whose side of it is own (not into it, as at a clipped triangle's entry)."""
    if DOWN:
        change = step * (qb - pb)
    else:
        change = -step * (qb - pb)
    return tl.where(own > 0.0, change < 0.0, change > 0.0)


# ---- screen derivatives of the barycentrics (interpolate_derivatives) ----------------------

@triton.jit
def barycentric_derivatives(x0, y0, w0, x1, y1, w1, x2, y2, w2, px, py, height, width):
    """(db0/dx, db0/dy, db1/dx, db1/dy) per pixel step at screen point (px, py), float64, from
    the homogeneous form (barycentric_derivatives), so clipped triangles get them too; zero
    for a triangle seen edge-on."""
    ax0, ax1, ax2, ay0, ay1, ay2, c0, c1, c2 = homogeneous_terms(
        x0, y0, w0, x1, y1, w1, x2, y2, w2, px, py, height, width)
    total = c0 + c1 + c2
    none = total == 0.0
    total = tl.where(none, 1.0, total)
    b0 = c0 / total
    b1 = c1 / total
    # d cross_k / d px = w_j ay_i - w_i ay_j, d cross_k / d py = w_i ax_j - w_j ax_i.
    dcx0 = w2 * ay1 - w1 * ay2
    dcy0 = w1 * ax2 - w2 * ax1
    dcx1 = w0 * ay2 - w2 * ay0
    dcy1 = w2 * ax0 - w0 * ax2
    dcx2 = w1 * ay0 - w0 * ay1
    dcy2 = w0 * ax1 - w1 * ax0
    sum_x = dcx0 + dcx1 + dcx2
    sum_y = dcy0 + dcy1 + dcy2
    return (tl.where(none, 0.0, (dcx0 - b0 * sum_x) / total), tl.where(none, 0.0, (dcy0 - b0 * sum_y) / total),
            tl.where(none, 0.0, (dcx1 - b1 * sum_x) / total), tl.where(none, 0.0, (dcy1 - b1 * sum_y) / total))


# ---- trilinear (mip-mapped) lookup -----------------------------------------------------------

@triton.jit
def mip_blend(dudx, dudy, dvdx, dvdy, tex_h, tex_w, max_level):
    """(level0, level1, frac, dfrac/d(du/dx, du/dy, dv/dx, dv/dy)) of float64 uv derivatives
    (mip_blend): lod = log2 of the longer pixel footprint in level-0 texels, clamped to
    [0, max_level]; level1 = level0 + 1 blended in with weight frac."""
    ax = dudx * tex_w
    ay = dvdx * tex_h
    bx = dudy * tex_w
    by = dvdy * tex_h
    ma = ax * ax + ay * ay
    mb = bx * bx + by * by
    along_x = ma >= mb
    m = tl.where(along_x, ma, mb)
    small = (m <= 1.0) | (m != m) | (max_level == 0)
    m = tl.where(small, 2.0, m)
    lod = 0.5 * tl.log2(m)
    top = lod >= max_level
    first = tl.floor(lod).to(tl.int32)
    level0 = tl.where(small, 0, tl.where(top, max_level, first))
    level1 = tl.where(small, 0, tl.where(top, max_level, first + 1))
    blended = ~(small | top)
    frac = tl.where(blended, lod - first.to(tl.float64), 0.0)
    # d lod / d m = 1 / (2 m ln 2); ln 2 computed in float64 (a literal may become float32).
    s = 1.0 / (m * tl.log(tl.full(m.shape, 2.0, tl.float64)))
    on_x = blended & along_x
    on_y = blended & ~along_x
    return (level0, level1, frac, tl.where(on_x, s * ax * tex_w, 0.0), tl.where(on_y, s * bx * tex_w, 0.0),
            tl.where(on_x, s * ay * tex_h, 0.0), tl.where(on_y, s * by * tex_h, 0.0))
