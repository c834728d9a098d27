// The pixel-pair analysis of the antialiasing op, shared by the CPU and CUDA kernels: which
// pairs of neighbouring pixels a silhouette edge runs between, where it crosses the segment
// joining their centres, and how the two colours blend. Reads the caller's buffers and checks
// every index it follows (index_checks.h). The geometry itself is in render_math.h.
//
// A pair is pixel 0 = (row, col) and pixel 1 = its right neighbour (horizontal pair) or the one
// below it (vertical pair). Conventions (user-facing text in engine/render/ops.py, antialias):
//  * only pairs whose raster ids differ are looked at; the front triangle is the one of the
//    smaller raster depth (pixel 0's on equal depths), or the only one when a pixel is empty;
//  * the segment from the front pixel's centre leaves the front triangle through the edge whose
//    crossing is farthest along it (of the two edges straddling the segment's line); that edge
//    must be a silhouette (topology: the third vertex across each edge, -1 for none) and at
//    least as steep across the segment as along it (flatter edges are left to the pairs of the
//    other direction), and the crossing t must lie within kAntialiasSlack of the segment;
//  * of a clipped front triangle (a vertex without a projection: w < kMinW or beyond the band)
//    an edge to such a vertex is a candidate by its visible part (render_math.h visible_part:
//    the part inside the clip volume, projected), a whole edge by itself; only where the
//    segment crosses it out of the triangle (it may leave through a cut edge on a clip plane
//    instead: cut edges are not blended). Sides of the edge use the homogeneous vertex there;
//  * t is clamped to [0, 1]; t < 1/2 blends the front pixel towards the other one's colour by
//    1/2 - t, t > 1/2 blends the other pixel towards the front colour by t - 1/2.
#pragma once

#include <cstdint>

#include "index_checks.h"
#include "render_args.h"
#include "render_math.h"

namespace nl3dmm {

struct AntialiasPair {
    bool hit = false;      // false: the pair blends nothing
    int front = 0;         // 0 or 1: the pixel whose triangle is in front
    int64_t triangle = 0;  // the front triangle
    int edge = 0;          // its silhouette edge k, from vertex k+1 to vertex k+2
    double t = 0.0;        // crossing distance from the front pixel's centre, clamped to [0, 1]
    bool clamped = false;  // t was outside [0, 1]: no gradient to the vertices
    double ca = 0.0, cb = 0.0, step = 1.0;  // the front centre in the pair's frame, and direction
};

// The pixel the pair blends into (0 or 1), the one whose colour it blends towards, and by how much.
NL_HD int blend_target(const AntialiasPair& p) { return p.t < 0.5 ? p.front : 1 - p.front; }
NL_HD double blend_weight(const AntialiasPair& p) { return p.t < 0.5 ? 0.5 - p.t : p.t - 0.5; }

// Analyses the pair at (row, col) of one image (down: vertical pair). rast_b: the image's
// (H, W, 4) raster; pos_b: its (V, 4) vertices; opposite: (F, 3) third vertices across edges.
template <typename T>
NL_HD AntialiasPair analyse_pair(const T* rast_b, const T* pos_b, const int32_t* tri,
                                 const int32_t* opposite, int64_t V, int64_t F, int H, int W,
                                 int row, int col, bool down, int32_t* status) {
    AntialiasPair pair;
    const int64_t p0 = (int64_t)row * W + col, p1 = p0 + (down ? W : 1);
    const T* r0 = rast_b + p0 * 4;
    const T* r1 = rast_b + p1 * 4;
    const int64_t f0 = triangle_from_raster_id(r0[3], F), f1 = triangle_from_raster_id(r1[3], F);
    if (f0 == kInvalidTriangle || f1 == kInvalidTriangle) {
        report_status(status, kBadTriangleId);
        return pair;
    }
    if (f0 == f1) return pair;
    pair.front = f0 < 0 ? 1 : (f1 < 0 ? 0 : (r0[2] <= r1[2] ? 0 : 1));
    const int64_t f = pair.front ? f1 : f0;
    const int32_t* corners = tri + f * 3;
    if (!vertex_indices_valid(corners, V)) {
        report_status(status, kBadVertexIndex);
        return pair;
    }
    const T* v[3];
    ClipVertex c[3];
    ScreenPoint s[3];
    for (int k = 0; k < 3; ++k) {
        v[k] = pos_b + (int64_t)corners[k] * 4;
        c[k] = ClipVertex{(double)v[k][0], (double)v[k][1], (double)v[k][2], (double)v[k][3]};
        s[k] = screen_point(c[k].x, c[k].y, c[k].w, H, W);
    }
    // Each edge's visible part (edge k: vertex k+1 -> k+2) by its screen ends: the whole edge
    // where both vertices project; of an edge to a vertex without a projection, the part
    // inside the clip volume (none: the edge is not a candidate).
    double ex[3][2], ey[3][2];
    bool usable[3];
    for (int k = 0; k < 3; ++k) {
        const int i = (k + 1) % 3, j = (k + 2) % 3;
        usable[k] = s[i].valid && s[j].valid;
        if (!usable[k]) {
            usable[k] = visible_ends(c[i], c[j], H, W, ex[k], ey[k]);
            continue;
        }
        ex[k][0] = s[i].x;
        ey[k][0] = s[i].y;
        ex[k][1] = s[j].x;
        ey[k][1] = s[j].y;
    }
    const int front_row = row + (pair.front && down ? 1 : 0);
    const int front_col = col + (pair.front && !down ? 1 : 0);
    pair.ca = down ? front_row + 0.5 : front_col + 0.5;
    pair.cb = down ? front_col + 0.5 : front_row + 0.5;
    pair.step = pair.front ? -1.0 : 1.0;
    const double(&ea)[3][2] = down ? ey : ex;  // the ends in the pair's frame
    const double(&eb)[3][2] = down ? ex : ey;
    int edge = -1;
    double t = 0.0;
    for (int k = 0; k < 3; ++k) {  // the straddling edge crossed farthest along the segment
        if (!usable[k] || !edge_straddles(eb[k][0], eb[k][1], pair.cb)) continue;
        const double tk = crossing_distance(c[(k + 1) % 3], c[(k + 2) % 3], down, pair.ca, pair.cb,
                                            pair.step, H, W);
        if (edge < 0 || tk > t) {
            edge = k;
            t = tk;
        }
    }
    if (edge < 0 || !(t >= -kAntialiasSlack && t <= 1.0 + kAntialiasSlack)) return pair;
    const double pa = ea[edge][0], pb = eb[edge][0], qa = ea[edge][1], qb = eb[edge][1];
    if (fabs(qb - pb) < fabs(qa - pa)) return pair;  // the other direction's edge
    const double px = ex[edge][0], py = ey[edge][0], qx = ex[edge][1], qy = ey[edge][1];
    const T* third = v[edge];  // of a clipped triangle, maybe a vertex without a projection
    const double own = vertex_side(px, py, qx, qy, s[edge], third[0], third[1], third[3], H, W);
    if (own == 0.0) return pair;
    if (!leaves_across_edge(pb, qb, pair.step, down, own)) return pair;
    const int32_t other = opposite[f * 3 + edge];
    if (other < -1 || other >= V) {
        report_status(status, kBadNeighbour);
        return pair;
    }
    double side = 0.0;
    if (other >= 0) {  // a clipped neighbour's side comes from its homogeneous vertex
        const T* o = pos_b + (int64_t)other * 4;
        const ScreenPoint so = screen_point(o[0], o[1], o[3], H, W);
        side = vertex_side(px, py, qx, qy, so, o[0], o[1], o[3], H, W);
    }
    if (!is_silhouette_edge(own, other >= 0, side)) return pair;
    pair.hit = true;
    pair.triangle = f;
    pair.edge = edge;
    pair.clamped = t < 0.0 || t > 1.0;
    pair.t = t < 0.0 ? 0.0 : (t > 1.0 ? 1.0 : t);
    return pair;
}

// The pairs a pixel belongs to, in the fixed order every gather uses: left, right, up, down.
// Pair n of pixel (row, col) starts at (pair_row, pair_col) in direction `down`; false when the
// neighbour is outside the image. `side` is the pixel's index (0 or 1) within the pair.
NL_HD bool pixel_pair(int n, int row, int col, int H, int W, int& pair_row, int& pair_col,
                      bool& down, int& side) {
    down = n >= 2;
    side = (n % 2 == 0) ? 1 : 0;
    pair_row = row - (down && side == 1 ? 1 : 0);
    pair_col = col - (!down && side == 1 ? 1 : 0);
    if (pair_row < 0 || pair_col < 0) return false;
    return down ? pair_row + 1 < H : pair_col + 1 < W;
}

// The blends that touch one pixel, from its pairs in the order above: the other pixel of the
// pair (flat index within the image), the blend weight, and whether the blend goes into this
// pixel (its colour moves towards the other's) or into the other one (towards this colour).
struct PixelBlends {
    int count = 0;
    int64_t other[4];
    double weight[4];
    bool into_this[4];
};

template <typename T>
NL_HD PixelBlends pixel_blends(const T* rast_b, const T* pos_b, const int32_t* tri,
                               const int32_t* opposite, int64_t V, int64_t F, int H, int W,
                               int row, int col, int32_t* status) {
    PixelBlends blends;
    for (int n = 0; n < 4; ++n) {
        int pair_row, pair_col, side;
        bool down;
        if (!pixel_pair(n, row, col, H, W, pair_row, pair_col, down, side)) continue;
        const AntialiasPair pair = analyse_pair(rast_b, pos_b, tri, opposite, V, F, H, W, pair_row,
                                                pair_col, down, status);
        if (!pair.hit) continue;
        const int64_t p0 = (int64_t)pair_row * W + pair_col, p1 = p0 + (down ? W : 1);
        blends.other[blends.count] = side == 0 ? p1 : p0;
        blends.weight[blends.count] = blend_weight(pair);
        blends.into_this[blends.count++] = blend_target(pair) == side;
    }
    return blends;
}

// The typed buffers and sizes of one antialias call (render_args.h AntialiasArgs), passed by
// value to the CUDA kernels. Image b's slices start at b * pixels * C (colour, gradients),
// b * pixels * 4 (raster) and b * V * 4 (vertices).
template <typename T>
struct AntialiasBuffers {
    const T* color;
    const T* rast;
    const T* pos;
    const int32_t* tri;
    const int32_t* opposite;
    const T* grad_out;
    T* out;
    T* grad_color;
    int32_t* status;
    int64_t B, V, F, C, pixels;
    int H, W;
};

template <typename T>
inline AntialiasBuffers<T> antialias_buffers(const AntialiasArgs& a) {
    return AntialiasBuffers<T>{buffer<const T>(a.color), buffer<const T>(a.rast), buffer<const T>(a.pos),
                               buffer<const int32_t>(a.tri), buffer<const int32_t>(a.topology),
                               buffer<const T>(a.grad_out), buffer<T>(a.out), buffer<T>(a.grad_color),
                               buffer<int32_t>(a.launch.status), a.B, a.V, a.F, a.C, (int64_t)a.H * a.W,
                               a.H, a.W};
}

template <typename T>
NL_HD AntialiasPair analyse_pair(const AntialiasBuffers<T>& a, int64_t b, int row, int col, bool down) {
    return analyse_pair(a.rast + b * a.pixels * 4, a.pos + b * a.V * 4, a.tri, a.opposite, a.V, a.F, a.H,
                        a.W, row, col, down, a.status);
}

template <typename T>
NL_HD PixelBlends pixel_blends(const AntialiasBuffers<T>& a, int64_t bp) {
    const int64_t b = bp / a.pixels, p = bp % a.pixels;
    return pixel_blends(a.rast + b * a.pixels * 4, a.pos + b * a.V * 4, a.tri, a.opposite, a.V, a.F, a.H,
                        a.W, (int)(p / a.W), (int)(p % a.W), a.status);
}

// Forward, pixel bp (image-major): its colour plus the blends into it, in float64, rounded once.
template <typename T>
NL_HD void antialias_pixel(const AntialiasBuffers<T>& a, int64_t bp) {
    const PixelBlends blends = pixel_blends(a, bp);
    const T* image = a.color + (bp / a.pixels) * a.pixels * a.C;
    for (int64_t c = 0; c < a.C; ++c) {
        const double own = (double)a.color[bp * a.C + c];
        double v = own;
        for (int k = 0; k < blends.count; ++k)
            if (blends.into_this[k]) v += blends.weight[k] * ((double)image[blends.other[k] * a.C + c] - own);
        a.out[bp * a.C + c] = (T)v;
    }
}

// Backward, d out / d color at pixel bp: the identity, minus w times this pixel's upstream
// gradient for each blend into it, plus w times the other pixel's for each blend of this
// colour into the other.
template <typename T>
NL_HD void antialias_color_gradient_pixel(const AntialiasBuffers<T>& a, int64_t bp) {
    const PixelBlends blends = pixel_blends(a, bp);
    const T* image = a.grad_out + (bp / a.pixels) * a.pixels * a.C;
    for (int64_t c = 0; c < a.C; ++c) {
        const double own = (double)a.grad_out[bp * a.C + c];
        double g = own;
        for (int k = 0; k < blends.count; ++k)
            g += blends.into_this[k] ? -blends.weight[k] * own
                                     : blends.weight[k] * (double)image[blends.other[k] * a.C + c];
        a.grad_color[bp * a.C + c] = (T)g;
    }
}

// What the pair at (row, col) of image b sends to the vertices of its edge through its crossing
// distance t: d out[target] / d t = colour(front) - colour(back), whichever pixel is the target,
// dotted with the target's upstream gradient. False when nothing (no blend, t clamped, a zero
// term); otherwise the two vertex indices and their (dx, dy, dz, dw).
template <typename T>
NL_HD bool pair_vertex_gradient(const AntialiasBuffers<T>& a, int64_t b, int row, int col, bool down,
                                int64_t vertex[2], double grad[2][4]) {
    const AntialiasPair pair = analyse_pair(a, b, row, col, down);
    if (!pair.hit || pair.clamped) return false;
    const int64_t px[2] = {(int64_t)row * a.W + col, (int64_t)row * a.W + col + (down ? a.W : 1)};
    const int64_t target = px[blend_target(pair)], front = px[pair.front], back = px[1 - pair.front];
    const T* color_b = a.color + b * a.pixels * a.C;
    const T* grad_b = a.grad_out + b * a.pixels * a.C;
    double g_t = 0.0;
    for (int64_t c = 0; c < a.C; ++c)
        g_t += (double)grad_b[target * a.C + c] *
               ((double)color_b[front * a.C + c] - (double)color_b[back * a.C + c]);
    if (g_t == 0.0) return false;
    const int32_t* corners = a.tri + pair.triangle * 3;  // checked by analyse_pair
    vertex[0] = corners[(pair.edge + 1) % 3];
    vertex[1] = corners[(pair.edge + 2) % 3];
    ClipVertex ends[2];
    for (int k = 0; k < 2; ++k) {
        const T* v = a.pos + (b * a.V + vertex[k]) * 4;
        ends[k] = ClipVertex{(double)v[0], (double)v[1], (double)v[2], (double)v[3]};
    }
    crossing_distance_backward(ends[0], ends[1], down, pair.ca, pair.cb, pair.step, a.H, a.W, g_t, grad);
    return true;
}

}  // namespace nl3dmm
