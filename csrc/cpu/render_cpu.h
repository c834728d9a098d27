// Declarations of the OpenMP CPU kernels (render_cpu.cpp); T is float or double.
#pragma once

#include <cstdint>

namespace nl3dmm {
namespace cpu {

template <typename T>
void rasterize_forward(const T* pos, const int32_t* tri, int64_t B, int64_t V, int64_t F, int H,
                       int W, bool cull, T* rast);
template <typename T>
void rasterize_backward(const T* pos, const int32_t* tri, const T* rast, const T* grad_rast,
                        int64_t B, int64_t V, int64_t F, int H, int W, T* grad_pos);
template <typename T>
void interpolate_forward(const T* attr, bool attr_batched, const T* rast, const int32_t* tri,
                         int64_t B, int64_t V, int64_t C, int H, int W, T* out);
template <typename T>
void interpolate_backward(const T* attr, bool attr_batched, const T* rast, const int32_t* tri,
                          const T* grad_out, int64_t B, int64_t V, int64_t C, int H, int W,
                          T* grad_attr, T* grad_rast);
template <typename T>
void sample_texture_forward(const T* tex, bool tex_batched, const T* uv, int64_t B, int tex_h,
                            int tex_w, int64_t C, int H, int W, int mode, T* out);
template <typename T>
void sample_texture_backward(const T* tex, bool tex_batched, const T* uv, const T* grad_out,
                             int64_t B, int tex_h, int tex_w, int64_t C, int H, int W, int mode,
                             T* grad_tex, T* grad_uv);

}  // namespace cpu
}  // namespace nl3dmm
