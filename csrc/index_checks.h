// The index checks every kernel (CPU and CUDA) makes before following an index, so that no
// buffer is ever read out of bounds whatever the caller passed. A failed check skips or zeroes
// the element and sets a StatusBits bit (render_args.h) for the caller to report.
//
// They cost a compare or two per triangle or pixel, next to a gather of several cache lines.
#pragma once

#include <cstdint>

#include "render_args.h"
#include "render_math.h"

namespace nl3dmm {

// Raster ids are id + 1 with 0 for "empty"; triangle_from_raster_id returns these for the others.
constexpr int64_t kEmptyPixel = -1;
constexpr int64_t kInvalidTriangle = -2;

NL_HD bool vertex_indices_valid(const int32_t* corners, int64_t num_vertices) {
    // One unsigned compare per index (a negative int32 becomes >= 2^31, and no int32 index
    // reaches past 2^31), combined without branches: this runs once per pixel.
    const uint64_t limit = num_vertices < (1ll << 31) ? (uint64_t)num_vertices : (1ull << 31);
    return ((uint64_t)(uint32_t)corners[0] < limit) & ((uint64_t)(uint32_t)corners[1] < limit) &
           ((uint64_t)(uint32_t)corners[2] < limit);
}

// The triangle of a raster pixel from its stored id + 1: kEmptyPixel for 0, kInvalidTriangle
// when the value is not in [0, F] (NaN included); fractions truncate as the cast always did.
template <typename T>
NL_HD int64_t triangle_from_raster_id(T id_plus_one, int64_t num_triangles) {
    if (!(id_plus_one >= T(0) && id_plus_one <= (T)num_triangles)) return kInvalidTriangle;
    return (int64_t)id_plus_one - 1;
}

// ORs bits into the caller's status word (relaxed: it is only read after the kernels finish).
NL_HD void report_status(int32_t* status, int32_t bits) {
#ifdef __CUDA_ARCH__
    atomicOr(status, bits);
#else
    __atomic_fetch_or(status, bits, __ATOMIC_RELAXED);
#endif
}

// The triangle of raster pixel rs (b0, b1, depth, id + 1), or < 0 when there is none to
// follow: kEmptyPixel, or kInvalidTriangle for an id or a vertex index that fails its check
// (reported in status).
template <typename T>
NL_HD int64_t pixel_triangle(const T* rs, const int32_t* tri, int64_t V, int64_t F, int32_t* status) {
    const int64_t f = triangle_from_raster_id(rs[3], F);
    if (f == kInvalidTriangle) {
        report_status(status, kBadTriangleId);
        return f;
    }
    if (f >= 0 && !vertex_indices_valid(tri + f * 3, V)) {
        report_status(status, kBadVertexIndex);
        return kInvalidTriangle;
    }
    return f;
}

NL_HD bool finite_uv(double u, double v) {
    return u - u == 0.0 && v - v == 0.0;  // false for NaN and +-Inf, without <cmath> overloads
}

// A pixel's uv and its four screen derivatives (du/dx, du/dy, dv/dx, dv/dy) are all finite.
template <typename T>
NL_HD bool finite_uv_and_derivatives(const T* uv, const T* uv_da) {
    return finite_uv(uv[0], uv[1]) && finite_uv(uv_da[0], uv_da[1]) && finite_uv(uv_da[2], uv_da[3]);
}

}  // namespace nl3dmm
