// CUDA kernels of the rendering layer, built on the same render_math.h as the CPU kernels.
//
// Rasterize is two launches: one thread per (image, triangle) z-tests its pixels with a 64-bit
// atomicMin of the packed depth|id key (order-independent, so race-free and deterministic),
// then one thread per pixel resolves the winner's barycentrics in double precision.
// Backward passes scatter with atomicAdd: gradients are correct but their float summation
// order, hence their last bits, may vary between runs (the forward outputs never do).
// setup.py compiles with --fmad=false so that the snapping and depth-key arithmetic rounds
// exactly as on the CPU: triangle ids then match the other backends bit for bit.
//
// STATUS: compiled in CI, not yet run on a GPU (issue 3). The first session with a device
// must run tests/test_cuda.py and compute-sanitizer before anyone relies on these kernels.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "../render_math.h"
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

unsigned blocks_for(int64_t n) { return (unsigned)((n + kThreads - 1) / kThreads); }

template <typename T>
__device__ ClipVertex load_clip(const T* pos, int64_t v) {
    const T* p = pos + v * 4;
    return ClipVertex{(double)p[0], (double)p[1], (double)p[2], (double)p[3]};
}

template <typename T>
__global__ void raster_kernel(const T* __restrict__ pos, const int32_t* __restrict__ tri,
                              int64_t B, int64_t V, int64_t F, int H, int W, bool cull,
                              unsigned long long* __restrict__ zbuf) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * F) return;
    const int64_t b = i / F, f = i % F;
    const T* pos_b = pos + b * V * 4;
    ScreenVertex s[3];
    for (int k = 0; k < 3; ++k) {
        const ClipVertex c = load_clip(pos_b, tri[f * 3 + k]);
        s[k] = project_vertex(c.x, c.y, c.z, c.w, H, W);
    }
    const PixelBounds pb = pixel_bounds(s[0], s[1], s[2], H, W);
    if (pb.empty()) return;
    TriangleSetup setup;
    if (!setup_triangle(s[0], s[1], s[2], cull, setup)) return;
    unsigned long long* image = zbuf + b * (int64_t)H * W;
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
                               int H, int W, T* __restrict__ rast) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t pixels = (int64_t)H * W;
    if (i >= B * pixels) return;
    const int64_t b = i / pixels, p = i % pixels;
    const uint64_t key = zbuf[i];
    T* o = rast + i * 4;
    if (key == kEmptyKey) {
        o[0] = o[1] = o[2] = o[3] = T(0);
        return;
    }
    const int64_t f = (int64_t)(key & 0xffffffffu);
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
                                       int64_t B, int64_t V, int H, int W, T* __restrict__ grad_pos) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t pixels = (int64_t)H * W;
    if (i >= B * pixels) return;
    const int64_t f = (int64_t)rast[i * 4 + 3] - 1;
    if (f < 0) return;
    const T* g = grad_rast + i * 4;
    if (g[0] == T(0) && g[1] == T(0) && g[2] == T(0)) return;
    const int64_t b = i / pixels, p = i % pixels;
    ClipVertex v[3];
    for (int k = 0; k < 3; ++k) v[k] = load_clip(pos + b * V * 4, tri[f * 3 + k]);
    double grad[3][4];
    resolve_pixel_backward(v, (int)(p / W), (int)(p % W), H, W, g[0], g[1], g[2], grad);
    for (int k = 0; k < 3; ++k) {
        T* gp = grad_pos + (b * V + tri[f * 3 + k]) * 4;
        for (int c = 0; c < 4; ++c) atomicAdd(gp + c, (T)grad[k][c]);
    }
}

template <typename T>
__global__ void interpolate_kernel(const T* __restrict__ attr, bool attr_batched,
                                   const T* __restrict__ rast, const int32_t* __restrict__ tri,
                                   int64_t B, int64_t V, int64_t C, int64_t pixels,
                                   T* __restrict__ out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * pixels) return;
    interpolate_pixel(rast + i * 4, tri, attr + (attr_batched ? (i / pixels) * V * C : 0), C, out + i * C);
}

template <typename T>
__global__ void interpolate_backward_kernel(const T* __restrict__ attr, bool attr_batched,
                                            const T* __restrict__ rast,
                                            const int32_t* __restrict__ tri,
                                            const T* __restrict__ grad_out, int64_t B, int64_t V,
                                            int64_t C, int64_t pixels, T* __restrict__ grad_attr,
                                            T* __restrict__ grad_rast) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * pixels) return;
    const T* rs = rast + i * 4;
    T* gr = grad_rast + i * 4;
    gr[0] = gr[1] = gr[2] = gr[3] = T(0);
    const int64_t f = (int64_t)rs[3] - 1;
    if (f < 0) return;
    const int64_t offset = attr_batched ? (i / pixels) * V * C : 0;
    const int64_t v0 = tri[f * 3 + 0], v1 = tri[f * 3 + 1], v2 = tri[f * 3 + 2];
    const T* a = attr + offset;
    const T* g = grad_out + i * C;
    const T w[3] = {rs[0], rs[1], T(1) - rs[0] - rs[1]};
    double g0 = 0, g1 = 0;
    for (int64_t c = 0; c < C; ++c) {
        const double a2 = a[v2 * C + c];
        g0 += (double)g[c] * ((double)a[v0 * C + c] - a2);
        g1 += (double)g[c] * ((double)a[v1 * C + c] - a2);
        atomicAdd(grad_attr + offset + v0 * C + c, w[0] * g[c]);
        atomicAdd(grad_attr + offset + v1 * C + c, w[1] * g[c]);
        atomicAdd(grad_attr + offset + v2 * C + c, w[2] * g[c]);
    }
    gr[0] = (T)g0;
    gr[1] = (T)g1;
}

template <typename T>
__global__ void texture_kernel(const T* __restrict__ tex, bool tex_batched, const T* __restrict__ uv,
                               int64_t B, int tex_h, int tex_w, int64_t C, int64_t pixels, int mode,
                               T* __restrict__ out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * pixels) return;
    const T* t = tex + (tex_batched ? (i / pixels) * (int64_t)tex_h * tex_w * C : 0);
    const BilinearTaps taps = bilinear_taps(uv[i * 2], uv[i * 2 + 1], tex_h, tex_w, mode);
    double w[4];
    bilinear_weights(taps, w);
    for (int64_t c = 0; c < C; ++c) {
        double v = 0;
        for (int k = 0; k < 4; ++k) v += w[k] * (double)t[taps.index[k] * C + c];
        out[i * C + c] = (T)v;
    }
}

template <typename T>
__global__ void texture_backward_kernel(const T* __restrict__ tex, bool tex_batched,
                                        const T* __restrict__ uv, const T* __restrict__ grad_out,
                                        int64_t B, int tex_h, int tex_w, int64_t C, int64_t pixels,
                                        int mode, T* __restrict__ grad_tex, T* __restrict__ grad_uv) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * pixels) return;
    const int64_t offset = tex_batched ? (i / pixels) * (int64_t)tex_h * tex_w * C : 0;
    const T* t = tex + offset;
    const BilinearTaps taps = bilinear_taps(uv[i * 2], uv[i * 2 + 1], tex_h, tex_w, mode);
    double w[4], dwdu[4], dwdv[4];
    bilinear_weights(taps, w);
    bilinear_weight_grads(taps, tex_h, tex_w, dwdu, dwdv);
    const T* g = grad_out + i * C;
    double gu = 0, gv = 0;
    for (int64_t c = 0; c < C; ++c) {
        for (int k = 0; k < 4; ++k) {
            const double texel = t[taps.index[k] * C + c];
            gu += dwdu[k] * (double)g[c] * texel;
            gv += dwdv[k] * (double)g[c] * texel;
            if (w[k] != 0.0) atomicAdd(grad_tex + offset + taps.index[k] * C + c, (T)(w[k] * (double)g[c]));
        }
    }
    grad_uv[i * 2] = (T)gu;
    grad_uv[i * 2 + 1] = (T)gv;
}

template <typename T>
T* as(uintptr_t p) {
    return reinterpret_cast<T*>(p);
}

cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

template <typename T>
void rasterize_forward_t(uintptr_t pos, uintptr_t tri, int64_t B, int64_t V, int64_t F, int H,
                         int W, bool cull, uintptr_t zbuf, uintptr_t rast, uintptr_t stream) {
    const int64_t pixels = (int64_t)H * W;
    // kEmptyKey is all ones, so a byte fill of 0xFF initialises the z-buffer.
    cudaError_t err = cudaMemsetAsync(as<void>(zbuf), 0xFF, B * pixels * sizeof(uint64_t), as_stream(stream));
    if (err != cudaSuccess)
        throw std::runtime_error(std::string("cudaMemsetAsync(zbuf) failed: ") + cudaGetErrorString(err));
    if (B * F > 0) {
        raster_kernel<T><<<blocks_for(B * F), kThreads, 0, as_stream(stream)>>>(
            as<const T>(pos), as<const int32_t>(tri), B, V, F, H, W, cull, as<unsigned long long>(zbuf));
        check_launch("raster_kernel");
    }
    resolve_kernel<T><<<blocks_for(B * pixels), kThreads, 0, as_stream(stream)>>>(
        as<const T>(pos), as<const int32_t>(tri), as<const unsigned long long>(zbuf), B, V, H, W, as<T>(rast));
    check_launch("resolve_kernel");
}

}  // namespace

void rasterize_forward(bool f64, uintptr_t pos, uintptr_t tri, int64_t B, int64_t V, int64_t F,
                       int H, int W, bool cull, uintptr_t zbuf, uintptr_t rast, uintptr_t stream) {
    if (f64)
        rasterize_forward_t<double>(pos, tri, B, V, F, H, W, cull, zbuf, rast, stream);
    else
        rasterize_forward_t<float>(pos, tri, B, V, F, H, W, cull, zbuf, rast, stream);
}

void rasterize_backward(bool f64, uintptr_t pos, uintptr_t tri, uintptr_t rast,
                        uintptr_t grad_rast, int64_t B, int64_t V, int H, int W,
                        uintptr_t grad_pos, uintptr_t stream) {
    const int64_t n = B * (int64_t)H * W;
    if (f64)
        raster_backward_kernel<double><<<blocks_for(n), kThreads, 0, as_stream(stream)>>>(
            as<const double>(pos), as<const int32_t>(tri), as<const double>(rast),
            as<const double>(grad_rast), B, V, H, W, as<double>(grad_pos));
    else
        raster_backward_kernel<float><<<blocks_for(n), kThreads, 0, as_stream(stream)>>>(
            as<const float>(pos), as<const int32_t>(tri), as<const float>(rast),
            as<const float>(grad_rast), B, V, H, W, as<float>(grad_pos));
    check_launch("raster_backward_kernel");
}

void interpolate_forward(bool f64, uintptr_t attr, bool attr_batched, uintptr_t rast,
                         uintptr_t tri, int64_t B, int64_t V, int64_t C, int H, int W,
                         uintptr_t out, uintptr_t stream) {
    const int64_t pixels = (int64_t)H * W;
    if (f64)
        interpolate_kernel<double><<<blocks_for(B * pixels), kThreads, 0, as_stream(stream)>>>(
            as<const double>(attr), attr_batched, as<const double>(rast), as<const int32_t>(tri), B, V,
            C, pixels, as<double>(out));
    else
        interpolate_kernel<float><<<blocks_for(B * pixels), kThreads, 0, as_stream(stream)>>>(
            as<const float>(attr), attr_batched, as<const float>(rast), as<const int32_t>(tri), B, V, C,
            pixels, as<float>(out));
    check_launch("interpolate_kernel");
}

void interpolate_backward(bool f64, uintptr_t attr, bool attr_batched, uintptr_t rast,
                          uintptr_t tri, uintptr_t grad_out, int64_t B, int64_t V, int64_t C,
                          int H, int W, uintptr_t grad_attr, uintptr_t grad_rast,
                          uintptr_t stream) {
    const int64_t pixels = (int64_t)H * W;
    if (f64)
        interpolate_backward_kernel<double><<<blocks_for(B * pixels), kThreads, 0, as_stream(stream)>>>(
            as<const double>(attr), attr_batched, as<const double>(rast), as<const int32_t>(tri),
            as<const double>(grad_out), B, V, C, pixels, as<double>(grad_attr), as<double>(grad_rast));
    else
        interpolate_backward_kernel<float><<<blocks_for(B * pixels), kThreads, 0, as_stream(stream)>>>(
            as<const float>(attr), attr_batched, as<const float>(rast), as<const int32_t>(tri),
            as<const float>(grad_out), B, V, C, pixels, as<float>(grad_attr), as<float>(grad_rast));
    check_launch("interpolate_backward_kernel");
}

void sample_texture_forward(bool f64, uintptr_t tex, bool tex_batched, uintptr_t uv, int64_t B,
                            int tex_h, int tex_w, int64_t C, int H, int W, int mode,
                            uintptr_t out, uintptr_t stream) {
    const int64_t pixels = (int64_t)H * W;
    if (f64)
        texture_kernel<double><<<blocks_for(B * pixels), kThreads, 0, as_stream(stream)>>>(
            as<const double>(tex), tex_batched, as<const double>(uv), B, tex_h, tex_w, C, pixels, mode,
            as<double>(out));
    else
        texture_kernel<float><<<blocks_for(B * pixels), kThreads, 0, as_stream(stream)>>>(
            as<const float>(tex), tex_batched, as<const float>(uv), B, tex_h, tex_w, C, pixels, mode,
            as<float>(out));
    check_launch("texture_kernel");
}

void sample_texture_backward(bool f64, uintptr_t tex, bool tex_batched, uintptr_t uv,
                             uintptr_t grad_out, int64_t B, int tex_h, int tex_w, int64_t C,
                             int H, int W, int mode, uintptr_t grad_tex, uintptr_t grad_uv,
                             uintptr_t stream) {
    const int64_t pixels = (int64_t)H * W;
    if (f64)
        texture_backward_kernel<double><<<blocks_for(B * pixels), kThreads, 0, as_stream(stream)>>>(
            as<const double>(tex), tex_batched, as<const double>(uv), as<const double>(grad_out), B,
            tex_h, tex_w, C, pixels, mode, as<double>(grad_tex), as<double>(grad_uv));
    else
        texture_backward_kernel<float><<<blocks_for(B * pixels), kThreads, 0, as_stream(stream)>>>(
            as<const float>(tex), tex_batched, as<const float>(uv), as<const float>(grad_out), B,
            tex_h, tex_w, C, pixels, mode, as<float>(grad_tex), as<float>(grad_uv));
    check_launch("texture_backward_kernel");
}

}  // namespace cuda
}  // namespace nl3dmm
