// The per-vertex, per-triangle and per-pixel math of the rendering layer.
//
// Every backend compiled from csrc/ (the OpenMP CPU kernels and the CUDA kernels) includes
// this one header, so the CPU tests exercise exactly the arithmetic the GPU runs. The Triton
// kernels and the pure-torch reference re-state the same formulas; tests hold them equal.
//
// Conventions (documented for users in engine/render/ops.py):
//  * pos is clip space (x, y, z, w). Screen x = (x/w + 1) / 2 * W, screen y = (y/w + 1) / 2 * H,
//    so output row r covers screen y in [r, r+1): row 0 is clip y = -1. Pixel (r, c) is sampled
//    at its centre (c + 0.5, r + 0.5).
//  * Coverage is decided on vertex positions snapped to 1/256 pixel, with exact 64-bit integer
//    edge functions: a shared edge is owned by exactly one of its two triangles (top-left style
//    rule), so meshes are watertight and no pixel is drawn twice by one surface.
//  * Depth is z/w; a fragment is kept when -1 <= depth <= 1. The nearest fragment (smallest
//    depth) wins; equal depths go to the smaller triangle index. This is the packed key
//    (sortable float depth bits << 32 | triangle index), minimised.
//  * Clipping: a triangle with every vertex inside the clip volume (-w <= z <= w, and x, y
//    within the guard band planes |x| <= gx w, |y| <= gy w, gx = 2^20 / W, gy = 2^20 / H) is
//    drawn as it is. Any other triangle is clipped in clip space against those six planes
//    (Sutherland-Hodgman) and the polygon is fanned into sub-triangles that keep the original
//    triangle's id. This replaces dropping: a vertex behind the eye (w <= 0) or far outside the
//    image no longer hides its triangle. The decision uses the same plane distances as the
//    clipper, so an edge between two inside vertices is never cut: neighbours stay watertight.
//  * Front faces are counter-clockwise in clip space (x right, y up): signed area > 0.
//  * Output barycentrics are perspective-correct and recomputed in double precision from the
//    unsnapped clip-space vertices of the original triangle with the 2D-homogeneous formula
//    (resolve_pixel), valid whatever the signs of w, so they are a smooth function of pos
//    (that is what backward differentiates), for clipped triangles too.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define NL_HD __host__ __device__ __forceinline__
#define NL_HD_RARE NL_HD
#else
#define NL_HD inline
#define NL_HD_RARE __attribute__((noinline, cold)) inline
#endif
// NL_HD_RARE: for a rarely taken path, kept out of line on the CPU so that the common path
// around it stays small (inlined into the antialias analysis, it made the compiler call the
// small functions around it out of line: +42 %). Inlined on the GPU: out of line
// (__noinline__) took more registers and stack there, not fewer.

namespace nl3dmm {

constexpr int kSubpixelBits = 8;
constexpr double kSubpixelScale = 256.0;  // 1 << kSubpixelBits
// The guard band: snapped vertices stay within this many pixels of the image, which keeps the
// fixed-point edge functions ((2^20 * 2^8)^2 = 2^56) inside int64. Triangles reaching beyond
// half of it (the clip planes |x| <= (2^20 / W) w) are clipped.
constexpr double kGuardBandPixels = 1048576.0;
// The clip planes: near, far and the four guard band planes; a clipped triangle is a convex
// polygon of at most 3 + 6 vertices.
constexpr int kClipPlanes = 6;
constexpr int kMaxClipVertices = 9;  // 3 + kClipPlanes
constexpr uint64_t kEmptyKey = ~0ull;
// Triangle ids are stored as float32 (id + 1) in the raster; beyond 2^24 they would round.
constexpr int64_t kMaxTriangles = (1ll << 24) - 1;
// A vertex needs w >= the smallest normal float32 (FLT_MIN), in every dtype: below it 1/w
// overflows float32 and the vertex's float32 gradient would be inf.
constexpr double kMinW = 1.1754943508222875e-38;

struct ScreenVertex {
    double x, y;    // continuous screen position, pixels
    double depth;   // z / w
    double inv_w;   // 1 / w
    int64_t fx, fy; // snapped position, 1/256 pixel
    bool valid;     // w > 0, finite, inside the guard band
    bool inside;    // inside every clip plane (clip_distance >= 0) and w >= kMinW
};

struct ClipVertex {
    double x, y, z, w;
};

// Signed distance of v to clip plane `plane` (>= 0: inside): 0 near (z >= -w), 1 far (z <= w),
// 2..5 the guard band planes x <= gx w, -x <= gx w, y <= gy w, -y <= gy w.
NL_HD double clip_distance(double x, double y, double z, double w, int plane, double gx, double gy) {
    switch (plane) {
        case 0: return w + z;
        case 1: return w - z;
        case 2: return gx * w - x;
        case 3: return gx * w + x;
        case 4: return gy * w - y;
        default: return gy * w + y;
    }
}

// The guard band planes' slopes: |x / w| <= 2^20 / W keeps screen x within 2^19 + W / 2 px.
NL_HD double guard_ratio(int size) { return kGuardBandPixels / (double)size; }

NL_HD bool inside_clip_volume(double x, double y, double z, double w, int height, int width) {
    const double gx = guard_ratio(width), gy = guard_ratio(height);
    bool in = w >= kMinW;
    for (int k = 0; k < kClipPlanes; ++k) in = in && clip_distance(x, y, z, w, k, gx, gy) >= 0.0;
    return in;
}

// floor() as an integer without a libm call (x86-64 baseline has no SSE4.1 round).
NL_HD int64_t floor_to_int(double x) {
    const int64_t i = (int64_t)x;
    return i - (int64_t)(x < (double)i);
}

// Where a clip vertex lands on screen and whether it does (w >= kMinW, inside the band):
// project_vertex's first half, all that the antialiasing analysis needs of a vertex.
struct ScreenPoint {
    double x, y, inv_w;
    bool valid;
};

NL_HD ScreenPoint screen_point(double x, double y, double w, int height, int width) {
    ScreenPoint p;
    p.valid = w >= kMinW;
    p.inv_w = p.valid ? 1.0 / w : 0.0;
    p.x = (x * p.inv_w + 1.0) * 0.5 * width;
    p.y = (y * p.inv_w + 1.0) * 0.5 * height;
    p.valid = p.valid && fabs(p.x) < kGuardBandPixels && fabs(p.y) < kGuardBandPixels;
    return p;
}

NL_HD ScreenVertex project_vertex(double x, double y, double z, double w, int height, int width) {
    const ScreenPoint p = screen_point(x, y, w, height, width);
    ScreenVertex v;
    v.x = p.x;
    v.y = p.y;
    v.inv_w = p.inv_w;
    v.valid = p.valid;
    v.depth = z * v.inv_w;
    v.fx = v.valid ? floor_to_int(v.x * kSubpixelScale + 0.5) : 0;
    v.fy = v.valid ? floor_to_int(v.y * kSubpixelScale + 0.5) : 0;
    v.inside = inside_clip_volume(x, y, z, w, height, width);
    return v;
}

// Exact edge function in fixed point: > 0 when p is left of a->b (counter-clockwise, y up).
NL_HD int64_t edge_fixed(int64_t ax, int64_t ay, int64_t bx, int64_t by, int64_t px, int64_t py) {
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax);
}

NL_HD double edge_real(double ax, double ay, double bx, double by, double px, double py) {
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax);
}

// Antisymmetric under edge reversal, which is all a fill rule needs: of two triangles sharing
// an edge (opposite orientations of it), exactly one owns pixels lying exactly on it.
NL_HD bool owns_edge(int64_t dx, int64_t dy) { return dy < 0 || (dy == 0 && dx < 0); }

// The pixels whose centres a triangle's snapped bounding box contains, clipped to the image.
struct PixelBounds {
    int x0, x1, y0, y1;  // inclusive; empty when x0 > x1 or y0 > y1
    NL_HD bool empty() const { return x0 > x1 || y0 > y1; }
};

// Most triangles of a dense face mesh are smaller than a pixel and contain no pixel centre,
// so this cheap test runs first and rejects them before any edge setup.
NL_HD PixelBounds pixel_bounds(const ScreenVertex& a, const ScreenVertex& b, const ScreenVertex& c,
                               int height, int width) {
    PixelBounds r{1, 0, 1, 0};
    if (!(a.valid && b.valid && c.valid)) return r;
    int64_t xmin = a.fx < b.fx ? a.fx : b.fx, xmax = a.fx > b.fx ? a.fx : b.fx;
    int64_t ymin = a.fy < b.fy ? a.fy : b.fy, ymax = a.fy > b.fy ? a.fy : b.fy;
    xmin = c.fx < xmin ? c.fx : xmin;
    xmax = c.fx > xmax ? c.fx : xmax;
    ymin = c.fy < ymin ? c.fy : ymin;
    ymax = c.fy > ymax ? c.fy : ymax;
    // Pixel k has its centre at k * 256 + 128 in fixed point: the covered range is
    // ceil((min - 128) / 256) .. floor((max - 128) / 256).
    // (Arithmetic right shift is floor division by 256 for negative values too.)
    int64_t cx0 = -((128 - xmin) >> kSubpixelBits), cx1 = (xmax - 128) >> kSubpixelBits;
    int64_t cy0 = -((128 - ymin) >> kSubpixelBits), cy1 = (ymax - 128) >> kSubpixelBits;
    r.x0 = (int)(cx0 < 0 ? 0 : cx0);
    r.y0 = (int)(cy0 < 0 ? 0 : cy0);
    r.x1 = (int)(cx1 > width - 1 ? width - 1 : cx1);
    r.y1 = (int)(cy1 > height - 1 ? height - 1 : cy1);
    return r;
}

// What the coverage loop needs of one triangle.
struct TriangleSetup {
    int64_t fx[3], fy[3];
    int64_t area2;   // twice the snapped area, made positive by orient
    int64_t orient;  // +1 or -1: multiplies edge values so that "inside" is >= 0
    double depth[3];
    bool owns[3];    // fill rule per edge (edge k is opposite vertex k)
};

// Returns false when the triangle draws nothing: zero snapped area or a culled back face.
NL_HD bool setup_triangle(const ScreenVertex& a, const ScreenVertex& b, const ScreenVertex& c,
                          bool cull_backfaces, TriangleSetup& t) {
    const ScreenVertex* v[3] = {&a, &b, &c};
    for (int k = 0; k < 3; ++k) {
        t.fx[k] = v[k]->fx;
        t.fy[k] = v[k]->fy;
        t.depth[k] = v[k]->depth;
    }
    const int64_t area2 = edge_fixed(t.fx[0], t.fy[0], t.fx[1], t.fy[1], t.fx[2], t.fy[2]);
    if (area2 == 0) return false;
    if (area2 < 0 && cull_backfaces) return false;
    t.orient = area2 > 0 ? 1 : -1;
    t.area2 = t.orient * area2;
    for (int k = 0; k < 3; ++k) {  // edge k runs from vertex k+1 to vertex k+2
        int i = (k + 1) % 3, j = (k + 2) % 3;
        t.owns[k] = owns_edge(t.orient * (t.fx[j] - t.fx[i]), t.orient * (t.fy[j] - t.fy[i]));
    }
    return true;
}

// Map a float to a uint32 whose unsigned order is the float's numeric order.
NL_HD uint32_t sortable_float_bits(float f) {
    union { float f; uint32_t u; } cvt;
    cvt.f = f;
    return (cvt.u & 0x80000000u) ? ~cvt.u : (cvt.u | 0x80000000u);
}

// Coverage and depth of pixel (row, col) for one triangle. Returns kEmptyKey when the pixel
// is outside the triangle or its depth is clipped; otherwise the packed z-buffer key.
NL_HD uint64_t fragment_key(const TriangleSetup& t, int row, int col, uint32_t triangle) {
    const int64_t px = (int64_t)col * 256 + 128, py = (int64_t)row * 256 + 128;
    int64_t e[3];
    for (int k = 0; k < 3; ++k) {
        int i = (k + 1) % 3, j = (k + 2) % 3;
        e[k] = t.orient * edge_fixed(t.fx[i], t.fy[i], t.fx[j], t.fy[j], px, py);
        if (e[k] < 0 || (e[k] == 0 && !t.owns[k])) return kEmptyKey;
    }
    const double depth = ((double)e[0] * t.depth[0] + (double)e[1] * t.depth[1] +
                          (double)e[2] * t.depth[2]) / (double)t.area2;
    const float depth32 = (float)depth;
    if (!(depth32 >= -1.0f && depth32 <= 1.0f)) return kEmptyKey;
    return ((uint64_t)sortable_float_bits(depth32) << 32) | (uint64_t)triangle;
}

// ---- clipping -----------------------------------------------------------------------------

// Where segment p -> q crosses a plane, from p's inside distance dp >= 0 and q's outside one
// dq < 0. Always called with the inside end first, so two triangles that share an edge (and
// walk it in opposite directions) cut it at bit-identical points: the mesh stays watertight.
NL_HD ClipVertex clip_edge(const ClipVertex& p, double dp, const ClipVertex& q, double dq) {
    const double t = dp / (dp - dq);
    return ClipVertex{p.x + t * (q.x - p.x), p.y + t * (q.y - p.y), p.z + t * (q.z - p.z),
                      p.w + t * (q.w - p.w)};
}

// Sutherland-Hodgman against the six clip planes: the polygon (at most kMaxClipVertices, in the
// triangle's order) of the part of the triangle inside the clip volume; returns its size (0
// when nothing is left). A vertex on a plane counts as inside. A convex polygon gains at most
// one vertex per plane; the bound is checked anyway, so rounding can never write past `out`.
NL_HD int clip_triangle(const ClipVertex v[3], int height, int width, ClipVertex out[kMaxClipVertices]) {
    const double gx = guard_ratio(width), gy = guard_ratio(height);
    ClipVertex buf[kMaxClipVertices];
    ClipVertex* src = out;
    ClipVertex* dst = buf;
    for (int k = 0; k < 3; ++k) src[k] = v[k];
    int n = 3;
    for (int plane = 0; plane < kClipPlanes; ++plane) {
        int m = 0;
        for (int i = 0; i < n; ++i) {
            const ClipVertex& p = src[i];
            const ClipVertex& q = src[i + 1 == n ? 0 : i + 1];
            const double dp = clip_distance(p.x, p.y, p.z, p.w, plane, gx, gy);
            const double dq = clip_distance(q.x, q.y, q.z, q.w, plane, gx, gy);
            if (dp >= 0.0 && m < kMaxClipVertices) dst[m++] = p;
            if ((dp >= 0.0) != (dq >= 0.0) && m < kMaxClipVertices)
                dst[m++] = dp >= 0.0 ? clip_edge(p, dp, q, dq) : clip_edge(q, dq, p, dp);
        }
        n = m;
        ClipVertex* t = src;
        src = dst;
        dst = t;
        if (n == 0) return 0;
    }
    // Six planes: the result is back in `out`.
    return n;
}

// Coverage of a triangle that is not inside the clip volume: its clipped polygon, fanned from
// its first vertex into sub-triangles rasterized like any other (snapped, fill rule, depth
// range), all under the original triangle's id. emit(row, col, key) for each covered pixel of
// rows [r0, r1]. Sub-triangles of one fan share edges, so no pixel is covered twice.
template <typename Emit>
NL_HD void raster_clipped_triangle(const ClipVertex v[3], int height, int width, bool cull, int r0,
                                   int r1, uint32_t triangle, Emit&& emit) {
    ClipVertex poly[kMaxClipVertices];
    const int n = clip_triangle(v, height, width, poly);
    ScreenVertex s[kMaxClipVertices];
    for (int k = 0; k < n; ++k) {
        s[k] = project_vertex(poly[k].x, poly[k].y, poly[k].z, poly[k].w, height, width);
        // Inside the volume w >= |z| >= 0 and the guard planes keep x / w within half the band:
        // only a vertex at 0 <= w < kMinW fails (its 1/w would overflow float32), and that
        // drops the triangle, as it did before clipping.
        if (!s[k].valid) return;
    }
    for (int k = 1; k + 1 < n; ++k) {
        PixelBounds pb = pixel_bounds(s[0], s[k], s[k + 1], height, width);
        pb.y0 = pb.y0 > r0 ? pb.y0 : r0;
        pb.y1 = pb.y1 < r1 ? pb.y1 : r1;
        if (pb.empty()) continue;
        TriangleSetup t;
        if (!setup_triangle(s[0], s[k], s[k + 1], cull, t)) continue;
        for (int r = pb.y0; r <= pb.y1; ++r)
            for (int c = pb.x0; c <= pb.x1; ++c) {
                const uint64_t key = fragment_key(t, r, c, triangle);
                if (key != kEmptyKey) emit(r, c, key);
            }
    }
}

// A vertex's clip coordinate c (x or y; its w) as its screen coordinate relative to `centre`,
// times w: (c + w) half - centre w, half being half the image's size along that axis. No 1/w,
// so valid for any sign of w: the 2D-homogeneous form that the resolve, the antialiasing sides
// and crossings share.
NL_HD double homogeneous_offset(double c, double w, double half, double centre) {
    return (c + w) * half - centre * w;
}

// ---- resolve: barycentrics and depth of the original triangle at a pixel -------------------
// 2D-homogeneous (Olano-Greer) form, valid whatever the signs of w: with the vertices scaled
// to screen units, X_k = (x_k + w_k) W / 2 (= screen x times w), and the pixel centre p,
// a_k = (X_k - px w_k, Y_k - py w_k) = w_k (screen_k - p). The point of the triangle seen at p
// has weights b with sum b_k a_k = 0, so b_k ~ cross(a_i, a_j) (i, j = k+1, k+2), normalised
// to sum 1; its depth is sum b_k z_k / sum b_k w_k. For w > 0 these are the usual
// perspective-correct barycentrics (cross(a_i, a_j) = w_i w_j e_k(p), ~ e_k / w_k) and the
// screen-linear z / w.

// The raster values of pixel (row, col): perspective-correct barycentrics b0, b1 and the depth.
struct PixelSample {
    double b0, b1, depth;
};

struct HomogeneousPixel {
    double ax[3], ay[3];  // a_k
    double cross[3];      // cross(a_i, a_j), unnormalised b_k
    double sum;           // cross[0] + cross[1] + cross[2]; 0: the triangle is seen edge-on
    double b[3];          // normalised (1/3 each when sum is 0)
    double num, den;      // sum b_k z_k, sum b_k w_k
    double depth;         // num / den (0 when den is 0: p sees the triangle's horizon)
    double px, py, hx, hy;
};

NL_HD HomogeneousPixel homogeneous_pixel(const ClipVertex v[3], int row, int col, int height, int width) {
    HomogeneousPixel h;
    h.px = col + 0.5;
    h.py = row + 0.5;
    h.hx = 0.5 * width;
    h.hy = 0.5 * height;
    for (int k = 0; k < 3; ++k) {
        h.ax[k] = homogeneous_offset(v[k].x, v[k].w, h.hx, h.px);
        h.ay[k] = homogeneous_offset(v[k].y, v[k].w, h.hy, h.py);
    }
    for (int k = 0; k < 3; ++k) {
        const int i = (k + 1) % 3, j = (k + 2) % 3;
        h.cross[k] = h.ax[i] * h.ay[j] - h.ay[i] * h.ax[j];
    }
    h.sum = h.cross[0] + h.cross[1] + h.cross[2];
    for (int k = 0; k < 3; ++k) h.b[k] = h.sum == 0.0 ? 1.0 / 3.0 : h.cross[k] / h.sum;
    h.num = h.b[0] * v[0].z + h.b[1] * v[1].z + h.b[2] * v[2].z;
    h.den = h.b[0] * v[0].w + h.b[1] * v[1].w + h.b[2] * v[2].w;
    h.depth = h.den == 0.0 ? 0.0 : h.num / h.den;
    return h;
}

NL_HD PixelSample resolve_pixel(const ClipVertex v[3], int row, int col, int height, int width) {
    const HomogeneousPixel h = homogeneous_pixel(v, row, col, height, width);
    return PixelSample{h.b[0], h.b[1], h.depth};
}

// Gradient of resolve_pixel's outputs (g_b0, g_b1, g_depth) with respect to the clip
// coordinates of the three vertices, written to grad[k] = (dx, dy, dz, dw) of vertex k. Zero
// for a triangle seen edge-on (sum 0: constant outputs); no depth term where den is 0.
// It runs once per covered pixel in a serial scatter (one image), so it divides once, by sum,
// and multiplies by that reciprocal (the forward's b_k = cross_k / sum differ from these in the
// last bit at most), and skips the depth terms when g_depth is 0, as in a textured render.
NL_HD void resolve_pixel_backward(const ClipVertex v[3], int row, int col, int height, int width,
                                  double g_b0, double g_b1, double g_depth, double grad[3][4]) {
    for (int k = 0; k < 3; ++k)
        for (int c = 0; c < 4; ++c) grad[k][c] = 0.0;
    const double px = col + 0.5, py = row + 0.5, hx = 0.5 * width, hy = 0.5 * height;
    double ax[3], ay[3], b[3];
    for (int k = 0; k < 3; ++k) {
        ax[k] = homogeneous_offset(v[k].x, v[k].w, hx, px);
        ay[k] = homogeneous_offset(v[k].y, v[k].w, hy, py);
    }
    for (int k = 0; k < 3; ++k) {
        const int i = (k + 1) % 3, j = (k + 2) % 3;
        b[k] = ax[i] * ay[j] - ay[i] * ax[j];
    }
    const double sum = b[0] + b[1] + b[2];
    if (sum == 0.0) return;
    const double inv_sum = 1.0 / sum;
    for (int k = 0; k < 3; ++k) b[k] *= inv_sum;
    double g_b[3] = {g_b0, g_b1, 0.0};
    // depth = num / den: d/d b_k = (z_k - depth w_k) / den, d/d z_k = b_k / den,
    // d/d w_k (direct) = -depth b_k / den.
    double g_d = 0.0, depth = 0.0;
    if (g_depth != 0.0) {
        const double den = b[0] * v[0].w + b[1] * v[1].w + b[2] * v[2].w;
        if (den != 0.0) {
            const double inv_den = 1.0 / den;
            depth = (b[0] * v[0].z + b[1] * v[1].z + b[2] * v[2].z) * inv_den;
            g_d = g_depth * inv_den;
            for (int k = 0; k < 3; ++k) g_b[k] += g_d * (v[k].z - depth * v[k].w);
        }
    }
    // b_k = cross_k / sum: d b_m / d cross_k = (delta_mk - b_m) / sum.
    const double gb_dot_b = g_b[0] * b[0] + g_b[1] * b[1] + g_b[2] * b[2];
    double g_ax[3] = {0.0, 0.0, 0.0}, g_ay[3] = {0.0, 0.0, 0.0};
    for (int k = 0; k < 3; ++k) {
        const double g_c = (g_b[k] - gb_dot_b) * inv_sum;
        const int i = (k + 1) % 3, j = (k + 2) % 3;
        // cross = ax_i ay_j - ay_i ax_j.
        g_ax[i] += g_c * ay[j];
        g_ay[i] -= g_c * ax[j];
        g_ax[j] -= g_c * ay[i];
        g_ay[j] += g_c * ax[i];
    }
    // ax = (x + w) hx - px w, ay = (y + w) hy - py w.
    for (int k = 0; k < 3; ++k) {
        grad[k][0] = g_ax[k] * hx;
        grad[k][1] = g_ay[k] * hy;
        grad[k][2] = g_d * b[k];
        grad[k][3] = g_ax[k] * (hx - px) + g_ay[k] * (hy - py) - g_d * depth * b[k];
    }
}

// ---- antialiasing: analytic coverage at silhouette edges ----------------------------------
// A pair of neighbouring pixels whose raster ids differ is looked at along the segment between
// their centres. The front triangle (the nearer of the two, or the only one) covers its own
// pixel's centre C; the segment leaves it through one edge, at distance t from C (in pixels,
// towards the other centre). When that edge is a silhouette, t is the analytic coverage that
// blends the two pixels' colours (antialias_pair.h). Coordinates here are in the pair's frame:
// `a` runs along the segment (screen x for a horizontal pair, y for a vertical one), `b` across.

// Crossings found this far outside the segment are still blended (clamped to its ends): the
// coverage was decided on vertices snapped to 1/256 pixel, the crossing is computed unsnapped.
constexpr double kAntialiasSlack = 0.0625;

// Whether the edge from p to q crosses the line b = cb (half-open, so a vertex lying on the line
// counts on one side only and exactly two edges of a triangle cross it).
NL_HD bool edge_straddles(double pb, double qb, double cb) { return (pb < cb) != (qb < cb); }

// The part of edge p -> q inside the clip volume, as the fractions s0 < s1 of the way from p to
// q where it starts and ends (Liang-Barsky against clip_triangle's planes); false when less than
// a point of it is inside. Clipping keeps an edge's line, so the visible part of an edge to a
// vertex behind the eye (or beyond the band) is a silhouette candidate like a whole edge.
NL_HD bool visible_part(const ClipVertex& p, const ClipVertex& q, int height, int width, double& s0,
                        double& s1) {
    const double gx = guard_ratio(width), gy = guard_ratio(height);
    s0 = 0.0;
    s1 = 1.0;
    for (int plane = 0; plane < kClipPlanes; ++plane) {
        const double dp = clip_distance(p.x, p.y, p.z, p.w, plane, gx, gy);
        const double dq = clip_distance(q.x, q.y, q.z, q.w, plane, gx, gy);
        if (dp < 0.0 && dq < 0.0) return false;
        const double s = dp < 0.0 || dq < 0.0 ? dp / (dp - dq) : 0.0;
        if (dp < 0.0 && s > s0) s0 = s;
        if (dq < 0.0 && s < s1) s1 = s;
    }
    return s0 < s1;
}

// The point a fraction s of the way from p to q: p and q themselves at s = 0 and s = 1.
NL_HD ClipVertex point_along(const ClipVertex& p, const ClipVertex& q, double s) {
    if (s == 0.0) return p;
    if (s == 1.0) return q;
    return ClipVertex{p.x + s * (q.x - p.x), p.y + s * (q.y - p.y), p.z + s * (q.z - p.z),
                      p.w + s * (q.w - p.w)};
}

// The screen ends (x, y) of the visible part of edge p -> q, projected; false when less than a
// point of it is inside the clip volume or an end has no projection (w < kMinW).
NL_HD_RARE bool visible_ends(const ClipVertex& p, const ClipVertex& q, int height, int width, double x[2],
                             double y[2]) {
    double part[2];
    if (!visible_part(p, q, height, width, part[0], part[1])) return false;
    for (int e = 0; e < 2; ++e) {
        const ClipVertex at = point_along(p, q, part[e]);
        const ScreenPoint s = screen_point(at.x, at.y, at.w, height, width);
        if (!s.valid) return false;
        x[e] = s.x;
        y[e] = s.y;
    }
    return true;
}

// A clip vertex in 2D-homogeneous screen coordinates of the pair's frame, relative to the
// centre (ca, cb): (homogeneous_offset along a, along b, w). Relative to the centre, a short
// edge near it has small coordinates, so the crossing below loses no precision to the edge's
// distance from the origin.
struct FrameVertex {
    double a, b, w;
};

NL_HD FrameVertex frame_vertex(const ClipVertex& v, bool down, double ca, double cb, int height, int width) {
    const double half_x = 0.5 * width, half_y = 0.5 * height;
    return down ? FrameVertex{homogeneous_offset(v.y, v.w, half_y, ca), homogeneous_offset(v.x, v.w, half_x, cb), v.w}
                : FrameVertex{homogeneous_offset(v.x, v.w, half_x, ca), homogeneous_offset(v.y, v.w, half_y, cb), v.w};
}

// Signed distance t from the centre (ca, cb) along `step` (+1 or -1) to where the screen line
// of the edge p -> q crosses the line b = cb: t = step (Pb Qa - Pa Qb) / (Pb Qw - Pw Qb) of
// their frame vertices (the line through two homogeneous points). The same line for any signs
// of w, so an edge to a vertex behind the eye crosses where its visible part does, with no
// far-away projected end in the arithmetic. The edge's visible part must straddle the line
// (a zero denominator, a line parallel to it by rounding, gives a non-finite t: no blend).
NL_HD double crossing_distance(const ClipVertex& p, const ClipVertex& q, bool down, double ca, double cb,
                               double step, int height, int width) {
    const FrameVertex P = frame_vertex(p, down, ca, cb, height, width);
    const FrameVertex Q = frame_vertex(q, down, ca, cb, height, width);
    return step * ((P.b * Q.a - P.a * Q.b) / (P.b * Q.w - P.w * Q.b));
}

// Gradient of crossing_distance (times g_t) with respect to the clip coordinates of p
// (grad[0]) and q (grad[1]), each (dx, dy, dz, dw). With r = num / den (num = Pb Qa - Pa Qb,
// den = Pb Qw - Pw Qb): d r / d (Pa, Pb, Pw) = (-Qb, Qa - r Qw, r Qb) / den and
// d r / d (Qa, Qb, Qw) = (Pb, r Pw - Pa, -r Pb) / den; a frame coordinate moves by half the
// image's size per unit of its clip coordinate, and by that minus the centre's per unit of w.
NL_HD void crossing_distance_backward(const ClipVertex& p, const ClipVertex& q, bool down,
                                      double ca, double cb, double step, int height, int width,
                                      double g_t, double grad[2][4]) {
    const FrameVertex P = frame_vertex(p, down, ca, cb, height, width);
    const FrameVertex Q = frame_vertex(q, down, ca, cb, height, width);
    const double den = P.b * Q.w - P.w * Q.b;
    const double r = (P.b * Q.a - P.a * Q.b) / den;
    const double g = step * g_t / den;
    const double g_frame[2][3] = {{-Q.b * g, (Q.a - r * Q.w) * g, r * Q.b * g},
                                  {P.b * g, (r * P.w - P.a) * g, -r * P.b * g}};
    const double half_a = 0.5 * (down ? height : width), half_b = 0.5 * (down ? width : height);
    for (int k = 0; k < 2; ++k) {
        const double g_a = g_frame[k][0] * half_a, g_b = g_frame[k][1] * half_b;
        grad[k][0] = down ? g_b : g_a;
        grad[k][1] = down ? g_a : g_b;
        grad[k][2] = 0.0;
        grad[k][3] = g_frame[k][2] + g_frame[k][0] * (half_a - ca) + g_frame[k][1] * (half_b - cb);
    }
}

// Which side of the screen line p -> q the neighbour's third vertex (clip x, y, w) lies on, as
// w times edge_real(p, q, its projection): the side its visible part leaves the edge towards,
// also for a vertex behind the eye (w < 0; that triangle is drawn clipped) or beyond the band.
NL_HD double homogeneous_side(double px, double py, double qx, double qy, double x, double y,
                              double w, int height, int width) {
    const double ox = homogeneous_offset(x, w, 0.5 * width, px);
    const double oy = homogeneous_offset(y, w, 0.5 * height, py);
    return (qx - px) * oy - (qy - py) * ox;
}

// The side of p -> q that a triangle with third vertex v (projected s; clip x, y, w) covers
// next to the edge: edge_real of the projection where there is one, so unclipped triangles
// decide on the same rounding as the rasterizer's geometry, the homogeneous form where not.
NL_HD double vertex_side(double px, double py, double qx, double qy, const ScreenPoint& s, double x,
                         double y, double w, int height, int width) {
    return s.valid ? edge_real(px, py, qx, qy, s.x, s.y)
                   : homogeneous_side(px, py, qx, qy, x, y, w, height, width);
}

// Whether an edge is a silhouette, from the sides (vertex_side) that its own triangle and the
// triangle across it (has_other false: none, or not drawable) cover: it is when the other
// folds back onto this one's side of the edge (one of the two faces away) or is seen edge-on.
// own must not be 0 (a triangle seen edge-on has no side).
NL_HD bool is_silhouette_edge(double own, bool has_other, double other) {
    if (!has_other) return true;
    return own > 0.0 ? other >= 0.0 : other <= 0.0;
}

// Whether the segment from a pixel centre along `step` (+1 or -1; down: a vertical pair)
// crosses the straddling edge p -> q (pb, qb across the segment) out of the triangle, whose
// side of the edge is own (vertex_side, not 0), rather than into it. For a whole triangle the
// crossing farthest along the segment always is; a clipped one (a vertex with no projection)
// keeps one edge whole, and the segment can leave through a cut edge instead, so its crossing
// with the whole edge may be where the segment enters. Exact: the sign of the edge function's
// change along the segment is the sign of qb - pb.
NL_HD bool leaves_across_edge(double pb, double qb, double step, bool down, double own) {
    const double change = (down ? step : -step) * (qb - pb);
    return own > 0.0 ? change < 0.0 : change > 0.0;
}

// Screen-space derivatives of the perspective-correct barycentrics (b0, b1) at pixel (row, col),
// in units of one pixel step (x: one column right, y: one row down), as nvdiffrast's rast_db.
// From the homogeneous form of resolve_pixel, so clipped triangles (a vertex behind the eye)
// get them too: cross_k is linear in p, d cross_k / d px = w_j ay_i - w_i ay_j and
// d cross_k / d py = w_i ax_j - w_j ax_i, and b_k = cross_k / sum gives
// d b_k = (d cross_k - b_k d sum) / sum. Zero for a triangle seen edge-on (sum 0), which
// resolve_pixel gives no gradient either.
struct BarycentricDerivatives {
    double db0dx, db0dy, db1dx, db1dy;
};

NL_HD BarycentricDerivatives barycentric_derivatives(const ClipVertex v[3], int row, int col,
                                                     int height, int width) {
    BarycentricDerivatives d{0.0, 0.0, 0.0, 0.0};
    const HomogeneousPixel h = homogeneous_pixel(v, row, col, height, width);
    if (h.sum == 0.0) return d;
    double dcx[3], dcy[3];
    for (int k = 0; k < 3; ++k) {
        const int i = (k + 1) % 3, j = (k + 2) % 3;
        dcx[k] = v[j].w * h.ay[i] - v[i].w * h.ay[j];
        dcy[k] = v[i].w * h.ax[j] - v[j].w * h.ax[i];
    }
    const double sx = dcx[0] + dcx[1] + dcx[2], sy = dcy[0] + dcy[1] + dcy[2];
    d.db0dx = (dcx[0] - h.b[0] * sx) / h.sum;
    d.db0dy = (dcy[0] - h.b[0] * sy) / h.sum;
    d.db1dx = (dcx[1] - h.b[1] * sx) / h.sum;
    d.db1dy = (dcy[1] - h.b[1] * sy) / h.sum;
    return d;
}

// The same for the pixel's triangle given by its corner indices into one image's (V, 4) clip
// positions.
template <typename T>
NL_HD BarycentricDerivatives triangle_barycentric_derivatives(const T* pos, const int32_t* corners,
                                                              int row, int col, int height, int width) {
    ClipVertex v[3];
    for (int k = 0; k < 3; ++k) {
        const T* p = pos + (int64_t)corners[k] * 4;
        v[k] = ClipVertex{(double)p[0], (double)p[1], (double)p[2], (double)p[3]};
    }
    return barycentric_derivatives(v, row, col, height, width);
}

// ---- attribute interpolation ---------------------------------------------------------------

// out[c] = b0 * a[v0][c] + b1 * a[v1][c] + (1 - b0 - b1) * a[v2][c] for the pixel's triangle,
// 0 on empty pixels. rs: the pixel's raster (b0, b1, depth, id + 1); attr: (V, C) of its image.
template <typename T>
NL_HD void interpolate_pixel(const T* rs, const int32_t* tri, const T* attr, int64_t C, T* out) {
    const int64_t f = (int64_t)rs[3] - 1;
    if (f < 0) {
        for (int64_t c = 0; c < C; ++c) out[c] = T(0);
        return;
    }
    const T* a0 = attr + (int64_t)tri[f * 3 + 0] * C;
    const T* a1 = attr + (int64_t)tri[f * 3 + 1] * C;
    const T* a2 = attr + (int64_t)tri[f * 3 + 2] * C;
    const T w0 = rs[0], w1 = rs[1], w2 = T(1) - rs[0] - rs[1];
    for (int64_t c = 0; c < C; ++c) out[c] = w0 * a0[c] + w1 * a1[c] + w2 * a2[c];
}

// Screen-space derivatives of the interpolated attributes, nvdiffrast's layout:
// out[2c] = d attr_c / dx, out[2c + 1] = d attr_c / dy (uv: du/dx, du/dy, dv/dx, dv/dy).
// a0, a1, a2: the triangle's corner attributes (C values each).
template <typename T>
NL_HD void attribute_derivatives_pixel(const BarycentricDerivatives& d, const T* a0, const T* a1,
                                       const T* a2, int64_t C, T* out) {
    for (int64_t c = 0; c < C; ++c) {
        const double e0 = (double)a0[c] - (double)a2[c], e1 = (double)a1[c] - (double)a2[c];
        out[2 * c] = (T)(d.db0dx * e0 + d.db1dx * e1);
        out[2 * c + 1] = (T)(d.db0dy * e0 + d.db1dy * e1);
    }
}

// One pixel of interpolate_derivatives, shared by the CPU and CUDA kernels: f is the pixel's
// checked triangle (pixel_triangle; < 0: empty, out zeroed); attr and pos are its image's (V, C)
// attributes and (V, 4) clip positions; p its index in the (H, W) image; out its 2C values.
template <typename T>
NL_HD void interpolate_derivatives_pixel(int64_t f, const int32_t* tri, const T* attr, const T* pos,
                                         int64_t C, int64_t p, int height, int width, T* out) {
    if (f < 0) {
        for (int64_t c = 0; c < 2 * C; ++c) out[c] = T(0);
        return;
    }
    const int32_t* t = tri + f * 3;
    const BarycentricDerivatives d =
        triangle_barycentric_derivatives(pos, t, (int)(p / width), (int)(p % width), height, width);
    attribute_derivatives_pixel(d, attr + (int64_t)t[0] * C, attr + (int64_t)t[1] * C,
                                attr + (int64_t)t[2] * C, C, out);
}

// What corner k's attributes receive from the gradient (gx, gy) of one channel's derivatives
// (weights of attribute_derivatives_pixel: b2 = 1 - b0 - b1, so corner 2 gets minus the sum).
NL_HD void attribute_derivative_weights(const BarycentricDerivatives& d, double gx, double gy,
                                        double w[3]) {
    w[0] = d.db0dx * gx + d.db0dy * gy;
    w[1] = d.db1dx * gx + d.db1dy * gy;
    w[2] = -(w[0] + w[1]);
}

// ---- bilinear texture lookup -------------------------------------------------------------
// Texel (i, j) of an Ht x Wt texture has its centre at uv = ((j + 0.5) / Wt, (i + 0.5) / Ht);
// u runs along columns, v along rows (row 0 at v = 0).

enum BoundaryMode : int { kClamp = 0, kZero = 1, kWrap = 2 };

struct BilinearTaps {
    int64_t index[4];   // row-major texel index of taps (y0,x0), (y0,x1), (y1,x0), (y1,x1)
    bool inside[4];     // false for taps outside the texture in kZero mode
    double fx, fy;      // fractional position between the taps
};

NL_HD int64_t wrap_index(int64_t i, int64_t n) {
    int64_t r = i % n;
    return r < 0 ? r + n : r;
}

NL_HD BilinearTaps bilinear_taps(double u, double v, int tex_h, int tex_w, int mode) {
    if (mode == kWrap) {  // one period first: exact, and no huge uv overflows u * tex_w to inf
        u -= floor(u);
        v -= floor(v);
    }
    double x = u * tex_w - 0.5, y = v * tex_h - 0.5;
    BilinearTaps t;
    int64_t x0, y0;
    if (mode == kWrap) {  // x in [-0.5, tex_w): xf wraps to a texel in range
        const double xf = floor(x), yf = floor(y);
        t.fx = x - xf;
        t.fy = y - yf;
        x0 = (int64_t)(xf - tex_w * floor(xf / tex_w));
        y0 = (int64_t)(yf - tex_h * floor(yf / tex_h));
    } else {
        // Beyond 3 texels outside, both taps are clamped (or zero) whatever the fraction,
        // so clamping x first changes nothing and keeps the integer conversion in range.
        x = x < -3.0 ? -3.0 : (x > tex_w + 3.0 ? tex_w + 3.0 : x);
        y = y < -3.0 ? -3.0 : (y > tex_h + 3.0 ? tex_h + 3.0 : y);
        x0 = floor_to_int(x);
        y0 = floor_to_int(y);
        t.fx = x - (double)x0;
        t.fy = y - (double)y0;
    }
    const int64_t xs[2] = {x0, x0 + 1}, ys[2] = {y0, y0 + 1};
    for (int a = 0; a < 2; ++a) {
        for (int c = 0; c < 2; ++c) {
            int64_t yy = ys[a], xx = xs[c];
            bool in = true;
            if (mode == kWrap) {
                yy = wrap_index(yy, tex_h);
                xx = wrap_index(xx, tex_w);
            } else if (mode == kClamp) {
                yy = yy < 0 ? 0 : (yy > tex_h - 1 ? tex_h - 1 : yy);
                xx = xx < 0 ? 0 : (xx > tex_w - 1 ? tex_w - 1 : xx);
            } else {
                in = yy >= 0 && yy < tex_h && xx >= 0 && xx < tex_w;
                if (!in) yy = xx = 0;
            }
            t.index[a * 2 + c] = yy * tex_w + xx;
            t.inside[a * 2 + c] = in;
        }
    }
    return t;
}

// Tap weights in the order of BilinearTaps::index.
NL_HD void bilinear_weights(const BilinearTaps& t, double w[4]) {
    w[0] = (1.0 - t.fy) * (1.0 - t.fx);
    w[1] = (1.0 - t.fy) * t.fx;
    w[2] = t.fy * (1.0 - t.fx);
    w[3] = t.fy * t.fx;
    for (int k = 0; k < 4; ++k) w[k] = t.inside[k] ? w[k] : 0.0;
}

// d(weights)/du and d(weights)/dv, for the gradient with respect to uv.
NL_HD void bilinear_weight_grads(const BilinearTaps& t, int tex_h, int tex_w, double dwdu[4],
                                 double dwdv[4]) {
    const double sx = (double)tex_w, sy = (double)tex_h;  // dx/du, dy/dv
    dwdu[0] = -(1.0 - t.fy) * sx;
    dwdu[1] = (1.0 - t.fy) * sx;
    dwdu[2] = -t.fy * sx;
    dwdu[3] = t.fy * sx;
    dwdv[0] = -(1.0 - t.fx) * sy;
    dwdv[1] = -t.fx * sy;
    dwdv[2] = (1.0 - t.fx) * sy;
    dwdv[3] = t.fx * sy;
    for (int k = 0; k < 4; ++k) {
        dwdu[k] = t.inside[k] ? dwdu[k] : 0.0;
        dwdv[k] = t.inside[k] ? dwdv[k] : 0.0;
    }
}

// ---- trilinear (mip-mapped) texture lookup ------------------------------------------------
// The pyramid of an Ht x Wt texture: level l is max(1, Ht >> l) x max(1, Wt >> l) texels, each
// averaging the part of level l - 1 it covers (engine/render/mipmap.py builds it), down to
// 1 x 1 at level floor(log2(max(Ht, Wt))). All levels of one image lie back to back, level 0
// first, in one buffer (the "packed pyramid"); every level keeps uv's meaning (texel centres
// at ((j + 0.5) / w_l, (i + 0.5) / h_l)).

NL_HD int mip_level_size(int n, int level) {
    const int s = n >> level;
    return s < 1 ? 1 : s;
}

// Texels of levels 0 .. level - 1, i.e. where `level` starts in the packed pyramid.
NL_HD int64_t mip_level_offset(int tex_h, int tex_w, int level) {
    int64_t offset = 0;
    for (int l = 0; l < level; ++l) offset += (int64_t)mip_level_size(tex_h, l) * mip_level_size(tex_w, l);
    return offset;
}

// The level of detail from uv's screen derivatives da = (du/dx, du/dy, dv/dx, dv/dy): a pixel
// step in x covers (du/dx Wt, dv/dx Ht) level-0 texels, one in y (du/dy Wt, dv/dy Ht); the lod
// is log2 of the longer of the two (isotropic, as OpenGL), clamped to [0, max_level]. The
// lookup blends level floor(lod) and the next with weight frac = lod - floor(lod).
struct MipBlend {
    int level[2];    // the two levels (equal when lod is max_level)
    double frac;     // weight of level[1]
    double dfrac[4]; // d frac / d da: zero where the lod is clamped
};

NL_HD MipBlend mip_blend(const double da[4], int tex_h, int tex_w, int max_level) {
    const double ax = da[0] * tex_w, ay = da[2] * tex_h, bx = da[1] * tex_w, by = da[3] * tex_h;
    const double ma = ax * ax + ay * ay, mb = bx * bx + by * by;
    const bool along_x = ma >= mb;
    const double m = along_x ? ma : mb;
    MipBlend r;
    for (int k = 0; k < 4; ++k) r.dfrac[k] = 0.0;
    r.frac = 0.0;
    if (!(m > 1.0) || max_level == 0) {  // footprint of at most one texel (or no NaN reaches log2)
        r.level[0] = r.level[1] = 0;
        return r;
    }
    const double lod = 0.5 * log2(m);
    if (lod >= (double)max_level) {
        r.level[0] = r.level[1] = max_level;
        return r;
    }
    const int l0 = (int)floor(lod);
    r.level[0] = l0;
    r.level[1] = l0 + 1;
    r.frac = lod - (double)l0;
    // d lod / d m = 1 / (2 m ln 2); d m / d(ax, ay) = 2 (ax, ay); d ax / d da[0] = Wt, ...
    const double s = 1.0 / (m * 0.69314718055994530942);
    if (along_x) {
        r.dfrac[0] = s * ax * tex_w;
        r.dfrac[2] = s * ay * tex_h;
    } else {
        r.dfrac[1] = s * bx * tex_w;
        r.dfrac[3] = s * by * tex_h;
    }
    return r;
}

// The eight taps of a trilinear lookup: the bilinear taps of both levels, indices into one
// image's packed pyramid, with the weights and their derivatives in u, v and frac.
struct TrilinearTaps {
    int64_t index[8];
    double w[8], dwdu[8], dwdv[8], dwdf[8];
    MipBlend blend;
};

NL_HD TrilinearTaps trilinear_taps(double u, double v, const double da[4], int tex_h, int tex_w,
                                   int max_level, int mode) {
    TrilinearTaps t;
    t.blend = mip_blend(da, tex_h, tex_w, max_level);
    for (int side = 0; side < 2; ++side) {
        const int level = t.blend.level[side];
        const int h = mip_level_size(tex_h, level), w = mip_level_size(tex_w, level);
        const int64_t offset = mip_level_offset(tex_h, tex_w, level);
        const BilinearTaps b = bilinear_taps(u, v, h, w, mode);
        double bw[4], bdu[4], bdv[4];
        bilinear_weights(b, bw);
        bilinear_weight_grads(b, h, w, bdu, bdv);
        const double share = side == 0 ? 1.0 - t.blend.frac : t.blend.frac;
        const double dshare = side == 0 ? -1.0 : 1.0;
        for (int k = 0; k < 4; ++k) {
            const int j = side * 4 + k;
            t.index[j] = offset + b.index[k];
            t.w[j] = share * bw[k];
            t.dwdu[j] = share * bdu[k];
            t.dwdv[j] = share * bdv[k];
            t.dwdf[j] = dshare * bw[k];
        }
    }
    return t;
}

// One pixel's trilinear value per channel; t: one image's packed pyramid (texels x C).
template <typename T>
NL_HD void trilinear_sample_pixel(const TrilinearTaps& taps, const T* t, int64_t C, T* out) {
    for (int64_t c = 0; c < C; ++c) {
        double v = 0;
        for (int k = 0; k < 8; ++k) v += taps.w[k] * (double)t[taps.index[k] * C + c];
        out[c] = (T)v;
    }
}

// d out / d(u, v) and d out / d(uv_da) of one pixel, dotted with its output gradient g.
template <typename T>
NL_HD void trilinear_coordinate_grads(const TrilinearTaps& taps, const T* t, const T* g, int64_t C,
                                      double g_uv[2], double g_da[4]) {
    double gu = 0, gv = 0, gf = 0;
    for (int64_t c = 0; c < C; ++c) {
        for (int k = 0; k < 8; ++k) {
            const double gt = (double)g[c] * (double)t[taps.index[k] * C + c];
            gu += taps.dwdu[k] * gt;
            gv += taps.dwdv[k] * gt;
            gf += taps.dwdf[k] * gt;
        }
    }
    g_uv[0] = gu;
    g_uv[1] = gv;
    for (int k = 0; k < 4; ++k) g_da[k] = gf * taps.blend.dfrac[k];
}

// ---- bilinear lookup per pixel, and the composite (render_textured) ------------------------
// sample_texture's kernels and the fused textured pass (textured_pixel.h) both take their
// lookup from these (sums over taps in double, rounded once), so that the fused image is
// bit-equal to the unfused chain's.

// One channel c of a pixel's bilinear value, unrounded; t: one image's (texels x C) texture.
template <typename T>
NL_HD double bilinear_channel(const BilinearTaps& taps, const double w[4], const T* t, int64_t C,
                              int64_t c) {
    double v = 0;
    for (int k = 0; k < 4; ++k) v += w[k] * (double)t[taps.index[k] * C + c];
    return v;
}

// d out / d(u, v) of a pixel's bilinear lookup, dotted with its output gradient g times scale,
// that product rounded to T first: in the fused pass it is the gradient the lookup receives
// through the composite (scale = the composite weight), which the unfused chain holds as a T
// tensor; sample_texture's backward passes scale 1 (exact).
template <typename T>
NL_HD void bilinear_coordinate_grads(const BilinearTaps& taps, int tex_h, int tex_w, const T* t,
                                     const T* g, T scale, int64_t C, double g_uv[2]) {
    double dwdu[4], dwdv[4];
    bilinear_weight_grads(taps, tex_h, tex_w, dwdu, dwdv);
    double gu = 0, gv = 0;
    for (int64_t c = 0; c < C; ++c) {
        const double gc = (double)(T)(g[c] * scale);
        for (int k = 0; k < 4; ++k) {
            const double gt = gc * (double)t[taps.index[k] * C + c];
            gu += dwdu[k] * gt;
            gv += dwdv[k] * gt;
        }
    }
    g_uv[0] = gu;
    g_uv[1] = gv;
}

// colour where the weight m is 1, background where it is 0, rounded in T after each operation
// exactly as torch evaluates colour * m + background * (1 - m) elementwise (no fused
// multiply-add: the CPU build targets baseline x86-64, nvcc runs with --fmad=false).
template <typename T>
NL_HD T composite_value(T colour, T m, T background) {
    const T shown = colour * m;
    const T behind = background * (T(1) - m);
    return shown + behind;
}

}  // namespace nl3dmm
