// CUDA kernels of the rendering layer, built on the same render_math.h as the CPU kernels.
//
// Antialias is one launch forward (a gather per pixel, antialias_pair.h) and, backward, the two
// fixed-point passes over each pixel's pairs with the colour gradient gathered in the first.
// Rasterize is two launches: one thread per (image, triangle) z-tests its pixels with a 64-bit
// atomicMin of the packed depth|id key (order-independent, so race-free and deterministic),
// then one thread per pixel resolves the winner's barycentrics in double precision.
// Backward passes scatter into 128-bit fixed-point sums (fixed_point.h): two launches over the
// same terms (range, then accumulate) and one that converts, so gradients are bit-identical
// whatever the thread schedule and at least as precise as the CPU's double sums.
// Every index is checked before it is followed (index_checks.h); a bad one is skipped and
// reported through the status word.
// setup.py compiles with --fmad=false so that the snapping and depth-key arithmetic rounds
// exactly as on the CPU: triangle ids then match the other backends bit for bit.
//
// The same file compiles as host C++ with g++ (launch.h, host_shim.h): tests/test_cuda_host.py
// runs these kernels on the CPU, plain and under ASan/UBSan and TSan. Keep every launch in
// NL_LAUNCH and every CUDA runtime call to those host_shim.h provides.
//
// STATUS: executed on the host harness in CI; not yet run on a GPU (issue 3). The first session
// with a device must run tests/test_cuda.py and compute-sanitizer before anyone relies on it.
#include "launch.h"

#include <stdexcept>
#include <string>

#include "../antialias_pair.h"
#include "../index_checks.h"
#include "../render_math.h"
#include "../textured_pixel.h"
#include "fixed_point.h"
#include "render_cuda.h"

namespace nl3dmm {
namespace cuda {
namespace {

constexpr int kThreads = 256;

void check_launch(const char* kernel) {
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess)
        throw std::runtime_error(std::string("CUDA kernel ") + kernel + " failed: " +
                                 cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

void check_call(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorString(err));
}

// One thread per item; more blocks than a grid can hold is refused rather than truncated.
unsigned blocks_for(int64_t n) {
    const int64_t blocks = (n + kThreads - 1) / kThreads;
    if (blocks > 0x7fffffffll)
        throw std::invalid_argument("nl3dmm CUDA: " + std::to_string(n) + " threads exceed one launch");
    return (unsigned)blocks;
}

template <typename T>
__device__ ClipVertex load_clip(const T* pos, int64_t v) {
    const T* p = pos + v * 4;
    return ClipVertex{(double)p[0], (double)p[1], (double)p[2], (double)p[3]};
}

template <typename T>
__global__ void raster_kernel(const T* __restrict__ pos, const int32_t* __restrict__ tri,
                              int64_t B, int64_t V, int64_t F, int H, int W, bool cull,
                              unsigned long long* __restrict__ zbuf, int* status) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * F) return;
    const int64_t b = i / F, f = i % F;
    if (!vertex_indices_valid(tri + f * 3, V)) {
        report_status(status, kBadVertexIndex);
        return;
    }
    const T* pos_b = pos + b * V * 4;
    ClipVertex v[3];
    ScreenVertex s[3];
    for (int k = 0; k < 3; ++k) {
        v[k] = load_clip(pos_b, tri[f * 3 + k]);
        s[k] = project_vertex(v[k].x, v[k].y, v[k].z, v[k].w, H, W);
    }
    unsigned long long* image = zbuf + b * (int64_t)H * W;
    if (!(s[0].inside && s[1].inside && s[2].inside)) {  // clipped and fanned (render_math.h)
        raster_clipped_triangle(v, H, W, cull, 0, H - 1, (uint32_t)f, [&](int r, int c, uint64_t key) {
            atomicMin(image + (int64_t)r * W + c, (unsigned long long)key);
        });
        return;
    }
    const PixelBounds pb = pixel_bounds(s[0], s[1], s[2], H, W);
    if (pb.empty()) return;
    TriangleSetup setup;
    if (!setup_triangle(s[0], s[1], s[2], cull, setup)) return;
    for (int r = pb.y0; r <= pb.y1; ++r) {
        for (int c = pb.x0; c <= pb.x1; ++c) {
            const uint64_t key = fragment_key(setup, r, c, (uint32_t)f);
            if (key != kEmptyKey) atomicMin(image + (int64_t)r * W + c, (unsigned long long)key);
        }
    }
}

template <typename T>
__global__ void resolve_kernel(const T* __restrict__ pos, const int32_t* __restrict__ tri,
                               const unsigned long long* __restrict__ zbuf, int64_t B, int64_t V,
                               int64_t F, int H, int W, T* __restrict__ rast, int* status) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t pixels = (int64_t)H * W;
    if (i >= B * pixels) return;
    const int64_t b = i / pixels, p = i % pixels;
    const uint64_t key = zbuf[i];
    T* o = rast + i * 4;
    o[0] = o[1] = o[2] = o[3] = T(0);
    if (key == kEmptyKey) return;
    const int64_t f = (int64_t)(key & 0xffffffffu);
    // Only checked triangles write keys; this guards against a z-buffer that was not.
    if (f >= F || !vertex_indices_valid(tri + f * 3, V)) {
        report_status(status, kBadVertexIndex);
        return;
    }
    ClipVertex v[3];
    for (int k = 0; k < 3; ++k) v[k] = load_clip(pos + b * V * 4, tri[f * 3 + k]);
    const PixelSample s = resolve_pixel(v, (int)(p / W), (int)(p % W), H, W);
    o[0] = (T)s.b0;
    o[1] = (T)s.b1;
    o[2] = (T)s.depth;
    o[3] = (T)(f + 1);
}

template <typename T>
__global__ void raster_backward_kernel(const T* __restrict__ pos, const int32_t* __restrict__ tri,
                                       const T* __restrict__ rast, const T* __restrict__ grad_rast,
                                       int64_t B, int64_t V, int64_t F, int H, int W, SumPass pass,
                                       FixedSums grad_pos, int* status) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t pixels = (int64_t)H * W;
    if (i >= B * pixels) return;
    const int64_t f = pixel_triangle(rast + i * 4, tri, V, F, status);
    if (f < 0) return;
    const T* g = grad_rast + i * 4;
    if (g[0] == T(0) && g[1] == T(0) && g[2] == T(0)) return;
    const int64_t b = i / pixels, p = i % pixels;
    ClipVertex v[3];
    for (int k = 0; k < 3; ++k) v[k] = load_clip(pos + b * V * 4, tri[f * 3 + k]);
    double grad[3][4];
    resolve_pixel_backward(v, (int)(p / W), (int)(p % W), H, W, g[0], g[1], g[2], grad);
    for (int k = 0; k < 3; ++k) {
        const int64_t first = (b * V + tri[f * 3 + k]) * 4;
        for (int c = 0; c < 4; ++c) scatter_add(grad_pos, pass, first + c, grad[k][c]);
    }
}

template <typename T>
__global__ void finalize_sums_kernel(FixedSums sums, int64_t count, T* __restrict__ out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    out[i] = sum_value<T>(sums, i);
}

template <typename T>
__global__ void interpolate_kernel(const T* __restrict__ attr, bool attr_batched,
                                   const T* __restrict__ rast, const int32_t* __restrict__ tri,
                                   int64_t B, int64_t V, int64_t F, int64_t C, int64_t pixels,
                                   T* __restrict__ out, int* status) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * pixels) return;
    if (pixel_triangle(rast + i * 4, tri, V, F, status) == kInvalidTriangle) {
        for (int64_t c = 0; c < C; ++c) out[i * C + c] = T(0);
        return;
    }
    interpolate_pixel(rast + i * 4, tri, attr + (attr_batched ? (i / pixels) * V * C : 0), C, out + i * C);
}

template <typename T>
__global__ void interpolate_backward_kernel(const T* __restrict__ attr, bool attr_batched,
                                            const T* __restrict__ rast,
                                            const int32_t* __restrict__ tri,
                                            const T* __restrict__ grad_out, int64_t B, int64_t V,
                                            int64_t F, int64_t C, int64_t pixels, SumPass pass,
                                            FixedSums grad_attr, T* __restrict__ grad_rast,
                                            int* status) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * pixels) return;
    const bool first_pass = pass == SumPass::kRange;  // grad_rast is a gather: written once
    const T* rs = rast + i * 4;
    T* gr = grad_rast + i * 4;
    if (first_pass) gr[0] = gr[1] = gr[2] = gr[3] = T(0);
    const int64_t f = pixel_triangle(rs, tri, V, F, status);
    if (f < 0) return;
    const int64_t offset = attr_batched ? (i / pixels) * V * C : 0;
    const int64_t v0 = tri[f * 3 + 0], v1 = tri[f * 3 + 1], v2 = tri[f * 3 + 2];
    const T* a = attr + offset;
    const T* g = grad_out + i * C;
    const double w[3] = {(double)rs[0], (double)rs[1], 1.0 - (double)rs[0] - (double)rs[1]};
    double g0 = 0, g1 = 0;
    for (int64_t c = 0; c < C; ++c) {
        const double a2 = a[v2 * C + c];
        g0 += (double)g[c] * ((double)a[v0 * C + c] - a2);
        g1 += (double)g[c] * ((double)a[v1 * C + c] - a2);
        scatter_add(grad_attr, pass, offset + v0 * C + c, w[0] * (double)g[c]);
        scatter_add(grad_attr, pass, offset + v1 * C + c, w[1] * (double)g[c]);
        scatter_add(grad_attr, pass, offset + v2 * C + c, w[2] * (double)g[c]);
    }
    if (first_pass) {
        gr[0] = (T)g0;
        gr[1] = (T)g1;
    }
}

template <typename T>
__global__ void texture_kernel(const T* __restrict__ tex, bool tex_batched, const T* __restrict__ uv,
                               int64_t B, int tex_h, int tex_w, int64_t C, int64_t pixels, int mode,
                               T* __restrict__ out, int* status) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * pixels) return;
    if (!finite_uv(uv[i * 2], uv[i * 2 + 1])) {
        report_status(status, kBadTexCoord);
        for (int64_t c = 0; c < C; ++c) out[i * C + c] = T(0);
        return;
    }
    const T* t = tex + (tex_batched ? (i / pixels) * (int64_t)tex_h * tex_w * C : 0);
    const BilinearTaps taps = bilinear_taps(uv[i * 2], uv[i * 2 + 1], tex_h, tex_w, mode);
    double w[4];
    bilinear_weights(taps, w);
    for (int64_t c = 0; c < C; ++c) out[i * C + c] = (T)bilinear_channel(taps, w, t, C, c);
}

template <typename T>
__global__ void texture_backward_kernel(const T* __restrict__ tex, bool tex_batched,
                                        const T* __restrict__ uv, const T* __restrict__ grad_out,
                                        int64_t B, int tex_h, int tex_w, int64_t C, int64_t pixels,
                                        int mode, SumPass pass, FixedSums grad_tex,
                                        T* __restrict__ grad_uv, int* status) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * pixels) return;
    const bool first_pass = pass == SumPass::kRange;  // grad_uv is a gather: written once
    if (!finite_uv(uv[i * 2], uv[i * 2 + 1])) {
        report_status(status, kBadTexCoord);
        if (first_pass) grad_uv[i * 2] = grad_uv[i * 2 + 1] = T(0);
        return;
    }
    const int64_t offset = tex_batched ? (i / pixels) * (int64_t)tex_h * tex_w * C : 0;
    const T* t = tex + offset;
    const BilinearTaps taps = bilinear_taps(uv[i * 2], uv[i * 2 + 1], tex_h, tex_w, mode);
    double w[4];
    bilinear_weights(taps, w);
    const T* g = grad_out + i * C;
    for (int64_t c = 0; c < C; ++c)
        for (int k = 0; k < 4; ++k)
            if (w[k] != 0.0) scatter_add(grad_tex, pass, offset + taps.index[k] * C + c, w[k] * (double)g[c]);
    if (first_pass) {
        double g_uv[2];
        bilinear_coordinate_grads(taps, tex_h, tex_w, t, g, T(1), C, g_uv);
        grad_uv[i * 2] = (T)g_uv[0];
        grad_uv[i * 2 + 1] = (T)g_uv[1];
    }
}

template <typename T>
__global__ void antialias_kernel(AntialiasBuffers<T> a) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= a.B * a.pixels) return;
    antialias_pixel(a, i);
}

// grad_color is a gather (written by the first pass); grad_pos a scatter of each pixel's own two
// pairs (right, down) into fixed-point sums.
template <typename T>
__global__ void antialias_backward_kernel(AntialiasBuffers<T> a, SumPass pass, FixedSums grad_pos) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= a.B * a.pixels) return;
    if (pass == SumPass::kRange) antialias_color_gradient_pixel(a, i);
    const int64_t b = i / a.pixels, p = i % a.pixels;
    const int row = (int)(p / a.W), col = (int)(p % a.W);
    for (int down = 0; down < 2; ++down) {
        if (down ? row + 1 >= a.H : col + 1 >= a.W) continue;
        int64_t vertex[2];
        double grad[2][4];
        if (!pair_vertex_gradient(a, b, row, col, (bool)down, vertex, grad)) continue;
        for (int k = 0; k < 2; ++k)
            for (int c = 0; c < 4; ++c) scatter_add(grad_pos, pass, (b * a.V + vertex[k]) * 4 + c, grad[k][c]);
    }
}

template <typename T>
__global__ void interpolate_derivatives_kernel(const T* __restrict__ attr, bool attr_batched,
                                               const T* __restrict__ rast, const T* __restrict__ pos,
                                               const int32_t* __restrict__ tri, int64_t B, int64_t V,
                                               int64_t F, int64_t C, int H, int W,
                                               T* __restrict__ out, int* status) {
    const int64_t pixels = (int64_t)H * W;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * pixels) return;
    const int64_t f = pixel_triangle(rast + i * 4, tri, V, F, status);
    const int64_t b = i / pixels;
    interpolate_derivatives_pixel(f, tri, attr + (attr_batched ? b * V * C : 0), pos + b * V * 4, C,
                                  i % pixels, H, W, out + i * 2 * C);
}

// Gradient to attr only (pos gets none from the derivatives).
template <typename T>
__global__ void interpolate_derivatives_backward_kernel(const T* __restrict__ rast, const T* __restrict__ pos,
                                                        const int32_t* __restrict__ tri,
                                                        const T* __restrict__ grad_out, bool attr_batched,
                                                        int64_t B, int64_t V, int64_t F, int64_t C, int H,
                                                        int W, SumPass pass, FixedSums grad_attr, int* status) {
    const int64_t pixels = (int64_t)H * W;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * pixels) return;
    const int64_t f = pixel_triangle(rast + i * 4, tri, V, F, status);
    if (f < 0) return;
    const int64_t b = i / pixels, p = i % pixels;
    const int32_t* t = tri + f * 3;
    const BarycentricDerivatives d =
        triangle_barycentric_derivatives(pos + b * V * 4, t, (int)(p / W), (int)(p % W), H, W);
    const int64_t offset = attr_batched ? b * V * C : 0;
    const T* g = grad_out + i * 2 * C;
    for (int64_t c = 0; c < C; ++c) {
        double w[3];
        attribute_derivative_weights(d, (double)g[2 * c], (double)g[2 * c + 1], w);
        for (int k = 0; k < 3; ++k) scatter_add(grad_attr, pass, offset + (int64_t)t[k] * C + c, w[k]);
    }
}

template <typename T>
__device__ TrilinearTaps pixel_trilinear_taps(const T* uv, const T* uv_da, int tex_h, int tex_w,
                                              int max_level, int mode) {
    const double da[4] = {(double)uv_da[0], (double)uv_da[1], (double)uv_da[2], (double)uv_da[3]};
    return trilinear_taps(uv[0], uv[1], da, tex_h, tex_w, max_level, mode);
}

template <typename T>
__global__ void texture_mip_kernel(const T* __restrict__ tex, bool tex_batched, const T* __restrict__ uv,
                                   const T* __restrict__ uv_da, int64_t B, int tex_h, int tex_w,
                                   int max_level, int64_t C, int64_t pixels, int mode,
                                   T* __restrict__ out, int* status) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * pixels) return;
    if (!finite_uv_and_derivatives(uv + i * 2, uv_da + i * 4)) {
        report_status(status, kBadTexCoord);
        for (int64_t c = 0; c < C; ++c) out[i * C + c] = T(0);
        return;
    }
    const int64_t texels = mip_level_offset(tex_h, tex_w, max_level + 1);
    const T* t = tex + (tex_batched ? (i / pixels) * texels * C : 0);
    trilinear_sample_pixel(pixel_trilinear_taps(uv + i * 2, uv_da + i * 4, tex_h, tex_w, max_level, mode),
                           t, C, out + i * C);
}

template <typename T>
__global__ void texture_mip_backward_kernel(const T* __restrict__ tex, bool tex_batched,
                                            const T* __restrict__ uv, const T* __restrict__ uv_da,
                                            const T* __restrict__ grad_out, int64_t B, int tex_h,
                                            int tex_w, int max_level, int64_t C, int64_t pixels, int mode,
                                            SumPass pass, FixedSums grad_tex, T* __restrict__ grad_uv,
                                            T* __restrict__ grad_uv_da, int* status) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * pixels) return;
    const bool first_pass = pass == SumPass::kRange;  // grad_uv, grad_uv_da are gathers: written once
    T* gu = grad_uv + i * 2;
    T* gda = grad_uv_da + i * 4;
    if (!finite_uv_and_derivatives(uv + i * 2, uv_da + i * 4)) {
        report_status(status, kBadTexCoord);
        if (first_pass) gu[0] = gu[1] = gda[0] = gda[1] = gda[2] = gda[3] = T(0);
        return;
    }
    const int64_t offset = tex_batched ? (i / pixels) * mip_level_offset(tex_h, tex_w, max_level + 1) * C : 0;
    const T* t = tex + offset;
    const TrilinearTaps taps = pixel_trilinear_taps(uv + i * 2, uv_da + i * 4, tex_h, tex_w, max_level, mode);
    const T* g = grad_out + i * C;
    for (int k = 0; k < 8; ++k) {
        if (taps.w[k] == 0.0) continue;
        for (int64_t c = 0; c < C; ++c)
            scatter_add(grad_tex, pass, offset + taps.index[k] * C + c, taps.w[k] * (double)g[c]);
    }
    if (first_pass) {
        double g_uv[2], g_da[4];
        trilinear_coordinate_grads(taps, t, g, C, g_uv, g_da);
        for (int k = 0; k < 2; ++k) gu[k] = (T)g_uv[k];
        for (int k = 0; k < 4; ++k) gda[k] = (T)g_da[k];
    }
}

cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

template <typename T>
void rasterize_forward_t(const RasterizeArgs& a) {
    const int64_t pixels = (int64_t)a.H * a.W;
    cudaStream_t stream = as_stream(a.launch.stream);
    int* status = buffer<int>(a.launch.status);
    unsigned long long* zbuf = buffer<unsigned long long>(a.launch.scratch);
    // kEmptyKey is all ones, so a byte fill of 0xFF initialises the z-buffer.
    check_call(cudaMemsetAsync(zbuf, 0xFF, a.B * pixels * kZbufBytesPerPixel, stream), "cudaMemsetAsync(zbuf)");
    if (a.B * a.F > 0) {
        NL_LAUNCH(raster_kernel<T>, blocks_for(a.B * a.F), kThreads, stream, buffer<const T>(a.pos),
                  buffer<const int32_t>(a.tri), a.B, a.V, a.F, a.H, a.W, a.cull, zbuf, status);
        check_launch("raster_kernel");
    }
    NL_LAUNCH(resolve_kernel<T>, blocks_for(a.B * pixels), kThreads, stream, buffer<const T>(a.pos),
              buffer<const int32_t>(a.tri), zbuf, a.B, a.V, a.F, a.H, a.W, buffer<T>(a.rast), status);
    check_launch("resolve_kernel");
}

// Zero the sums of `count` values, for at most `max_terms` terms per value.
FixedSums start_sums(const LaunchArgs& launch, int64_t count, int64_t max_terms) {
    check_call(cudaMemsetAsync(buffer<void>(launch.scratch), 0, count * kSumBytesPerValue,
                               as_stream(launch.stream)), "cudaMemsetAsync(sums)");
    return fixed_sums(launch.scratch, count, max_terms);
}

template <typename T>
void finish_sums(const LaunchArgs& launch, const FixedSums& sums, int64_t count, T* out) {
    NL_LAUNCH(finalize_sums_kernel<T>, blocks_for(count), kThreads, as_stream(launch.stream), sums, count, out);
    check_launch("finalize_sums_kernel");
}

template <typename T>
void rasterize_backward_t(const RasterizeArgs& a) {
    const int64_t pixels = (int64_t)a.H * a.W, count = a.B * a.V * 4;
    // Per image, a vertex gets at most 3 terms a pixel (a triangle may repeat an index).
    const FixedSums sums = start_sums(a.launch, count, 3 * pixels);
    for (SumPass pass : {SumPass::kRange, SumPass::kAccumulate}) {
        NL_LAUNCH(raster_backward_kernel<T>, blocks_for(a.B * pixels), kThreads, as_stream(a.launch.stream),
                  buffer<const T>(a.pos), buffer<const int32_t>(a.tri), buffer<const T>(a.rast),
                  buffer<const T>(a.grad_rast), a.B, a.V, a.F, a.H, a.W, pass, sums,
                  buffer<int>(a.launch.status));
        check_launch("raster_backward_kernel");
    }
    finish_sums(a.launch, sums, count, buffer<T>(a.grad_pos));
}

template <typename T>
void interpolate_forward_t(const InterpolateArgs& a) {
    const int64_t pixels = (int64_t)a.H * a.W;
    NL_LAUNCH(interpolate_kernel<T>, blocks_for(a.B * pixels), kThreads, as_stream(a.launch.stream),
              buffer<const T>(a.attr), a.attr_batched, buffer<const T>(a.rast), buffer<const int32_t>(a.tri),
              a.B, a.V, a.F, a.C, pixels, buffer<T>(a.out), buffer<int>(a.launch.status));
    check_launch("interpolate_kernel");
}

template <typename T>
void interpolate_backward_t(const InterpolateArgs& a) {
    const int64_t pixels = (int64_t)a.H * a.W;
    const int64_t count = (a.attr_batched ? a.B : 1) * a.V * a.C;
    const FixedSums sums = start_sums(a.launch, count, 3 * pixels * (a.attr_batched ? 1 : a.B));
    for (SumPass pass : {SumPass::kRange, SumPass::kAccumulate}) {
        NL_LAUNCH(interpolate_backward_kernel<T>, blocks_for(a.B * pixels), kThreads, as_stream(a.launch.stream),
                  buffer<const T>(a.attr), a.attr_batched, buffer<const T>(a.rast),
                  buffer<const int32_t>(a.tri), buffer<const T>(a.grad_out), a.B, a.V, a.F, a.C, pixels,
                  pass, sums, buffer<T>(a.grad_rast), buffer<int>(a.launch.status));
        check_launch("interpolate_backward_kernel");
    }
    finish_sums(a.launch, sums, count, buffer<T>(a.grad_attr));
}

template <typename T>
void sample_texture_forward_t(const TextureArgs& a) {
    const int64_t pixels = (int64_t)a.H * a.W;
    NL_LAUNCH(texture_kernel<T>, blocks_for(a.B * pixels), kThreads, as_stream(a.launch.stream),
              buffer<const T>(a.tex), a.tex_batched, buffer<const T>(a.uv), a.B, a.tex_h, a.tex_w, a.C,
              pixels, a.mode, buffer<T>(a.out), buffer<int>(a.launch.status));
    check_launch("texture_kernel");
}

template <typename T>
void sample_texture_backward_t(const TextureArgs& a) {
    const int64_t pixels = (int64_t)a.H * a.W;
    const int64_t count = (a.tex_batched ? a.B : 1) * (int64_t)a.tex_h * a.tex_w * a.C;
    // Up to 4 taps a pixel, all on one texel when the texture is 1 x 1.
    const FixedSums sums = start_sums(a.launch, count, 4 * pixels * (a.tex_batched ? 1 : a.B));
    for (SumPass pass : {SumPass::kRange, SumPass::kAccumulate}) {
        NL_LAUNCH(texture_backward_kernel<T>, blocks_for(a.B * pixels), kThreads, as_stream(a.launch.stream),
                  buffer<const T>(a.tex), a.tex_batched, buffer<const T>(a.uv), buffer<const T>(a.grad_out),
                  a.B, a.tex_h, a.tex_w, a.C, pixels, a.mode, pass, sums, buffer<T>(a.grad_uv),
                  buffer<int>(a.launch.status));
        check_launch("texture_backward_kernel");
    }
    finish_sums(a.launch, sums, count, buffer<T>(a.grad_tex));
}

template <typename T>
void antialias_forward_t(const AntialiasArgs& args) {
    const AntialiasBuffers<T> a = antialias_buffers<T>(args);
    NL_LAUNCH(antialias_kernel<T>, blocks_for(a.B * a.pixels), kThreads, as_stream(args.launch.stream), a);
    check_launch("antialias_kernel");
}

template <typename T>
void antialias_backward_t(const AntialiasArgs& args) {
    const AntialiasBuffers<T> a = antialias_buffers<T>(args);
    const int64_t count = a.B * a.V * 4;
    // Per image, a vertex gets at most one term from each of the two pairs a pixel starts.
    const FixedSums sums = start_sums(args.launch, count, 2 * a.pixels);
    for (SumPass pass : {SumPass::kRange, SumPass::kAccumulate}) {
        NL_LAUNCH(antialias_backward_kernel<T>, blocks_for(a.B * a.pixels), kThreads, as_stream(args.launch.stream),
                  a, pass, sums);
        check_launch("antialias_backward_kernel");
    }
    finish_sums(args.launch, sums, count, buffer<T>(args.grad_pos));
}

template <typename T>
void interpolate_derivatives_forward_t(const InterpolateArgs& a) {
    NL_LAUNCH(interpolate_derivatives_kernel<T>, blocks_for(a.B * (int64_t)a.H * a.W), kThreads,
              as_stream(a.launch.stream), buffer<const T>(a.attr), a.attr_batched, buffer<const T>(a.rast),
              buffer<const T>(a.pos), buffer<const int32_t>(a.tri), a.B, a.V, a.F, a.C, a.H, a.W,
              buffer<T>(a.out), buffer<int>(a.launch.status));
    check_launch("interpolate_derivatives_kernel");
}

template <typename T>
void interpolate_derivatives_backward_t(const InterpolateArgs& a) {
    const int64_t pixels = (int64_t)a.H * a.W;
    const int64_t count = (a.attr_batched ? a.B : 1) * a.V * a.C;
    const FixedSums sums = start_sums(a.launch, count, 3 * pixels * (a.attr_batched ? 1 : a.B));
    for (SumPass pass : {SumPass::kRange, SumPass::kAccumulate}) {
        NL_LAUNCH(interpolate_derivatives_backward_kernel<T>, blocks_for(a.B * pixels), kThreads,
                  as_stream(a.launch.stream), buffer<const T>(a.rast), buffer<const T>(a.pos),
                  buffer<const int32_t>(a.tri), buffer<const T>(a.grad_out), a.attr_batched, a.B, a.V, a.F,
                  a.C, a.H, a.W, pass, sums, buffer<int>(a.launch.status));
        check_launch("interpolate_derivatives_backward_kernel");
    }
    finish_sums(a.launch, sums, count, buffer<T>(a.grad_attr));
}

template <typename T>
void sample_texture_mip_forward_t(const TextureArgs& a) {
    const int64_t pixels = (int64_t)a.H * a.W;
    NL_LAUNCH(texture_mip_kernel<T>, blocks_for(a.B * pixels), kThreads, as_stream(a.launch.stream),
              buffer<const T>(a.tex), a.tex_batched, buffer<const T>(a.uv), buffer<const T>(a.uv_da), a.B,
              a.tex_h, a.tex_w, a.max_level, a.C, pixels, a.mode, buffer<T>(a.out), buffer<int>(a.launch.status));
    check_launch("texture_mip_kernel");
}

template <typename T>
void sample_texture_mip_backward_t(const TextureArgs& a) {
    const int64_t pixels = (int64_t)a.H * a.W;
    const int64_t texels = mip_level_offset(a.tex_h, a.tex_w, a.max_level + 1);
    const int64_t count = (a.tex_batched ? a.B : 1) * texels * a.C;
    // Up to 8 taps a pixel (4 per level), all on one texel at a 1 x 1 level.
    const FixedSums sums = start_sums(a.launch, count, 8 * pixels * (a.tex_batched ? 1 : a.B));
    for (SumPass pass : {SumPass::kRange, SumPass::kAccumulate}) {
        NL_LAUNCH(texture_mip_backward_kernel<T>, blocks_for(a.B * pixels), kThreads, as_stream(a.launch.stream),
                  buffer<const T>(a.tex), a.tex_batched, buffer<const T>(a.uv), buffer<const T>(a.uv_da),
                  buffer<const T>(a.grad_out), a.B, a.tex_h, a.tex_w, a.max_level, a.C, pixels, a.mode, pass,
                  sums, buffer<T>(a.grad_uv), buffer<T>(a.grad_uv_da), buffer<int>(a.launch.status));
        check_launch("texture_mip_backward_kernel");
    }
    finish_sums(a.launch, sums, count, buffer<T>(a.grad_tex));
}

}  // namespace

NL3DMM_ENTRY_POINTS_BY_PRECISION

}  // namespace cuda
}  // namespace nl3dmm

// ---- render_textured: interpolate -> sample_texture -> composite in one pass ----------------

namespace nl3dmm {
namespace cuda {
namespace {

template <typename T>
__global__ void textured_kernel(TexturedBuffers<T> a) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= a.B * a.pixels) return;
    textured_forward_pixel(a, i);
}

// The gathers are written by the first pass; the texture gradient is scattered by both into
// fixed-point sums, as texture_backward_kernel does.
template <typename T>
__global__ void textured_backward_kernel(TexturedBuffers<T> a, SumPass pass, FixedSums grad_tex) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= a.B * a.pixels) return;
    if (pass == SumPass::kRange) textured_gather_pixel(a, i);
    const int64_t offset = a.tex_batched ? (i / a.pixels) * a.texels * a.C : 0;
    textured_texture_grads(a, i, [&](int64_t k, double v) { scatter_add(grad_tex, pass, offset + k, v); });
}

template <typename T>
void render_textured_forward_t(const TexturedArgs& args) {
    const TexturedBuffers<T> a = textured_buffers<T>(args);
    NL_LAUNCH(textured_kernel<T>, blocks_for(a.B * a.pixels), kThreads, as_stream(args.launch.stream), a);
    check_launch("textured_kernel");
}

template <typename T>
void render_textured_backward_t(const TexturedArgs& args) {
    const TexturedBuffers<T> a = textured_buffers<T>(args);
    const int64_t count = (a.tex_batched ? a.B : 1) * a.texels * a.C;
    // Up to 4 taps a pixel, all on one texel when the texture is 1 x 1.
    const FixedSums sums = start_sums(args.launch, count, 4 * a.pixels * (a.tex_batched ? 1 : a.B));
    for (SumPass pass : {SumPass::kRange, SumPass::kAccumulate}) {
        NL_LAUNCH(textured_backward_kernel<T>, blocks_for(a.B * a.pixels), kThreads,
                  as_stream(args.launch.stream), a, pass, sums);
        check_launch("textured_backward_kernel");
    }
    finish_sums(args.launch, sums, count, buffer<T>(args.grad_tex));
}

}  // namespace

NL3DMM_TEXTURED_ENTRY_POINTS_BY_PRECISION

}  // namespace cuda
}  // namespace nl3dmm
