// Host entry points of the CUDA kernels (render_cuda.cu). Pointers are raw device pointers
// owned by the caller (torch tensors on the Python side); `stream` is a cudaStream_t given as
// an integer (torch.cuda.current_stream().cuda_stream). `f64` picks double over float for
// every floating-point buffer. Each call checks the launch and throws std::runtime_error
// naming the kernel when CUDA reports an error.
#pragma once

#include <cstdint>

namespace nl3dmm {
namespace cuda {

// zbuf: B * H * W uint64 scratch (the packed depth|id keys).
void rasterize_forward(bool f64, uintptr_t pos, uintptr_t tri, int64_t B, int64_t V, int64_t F,
                       int H, int W, bool cull, uintptr_t zbuf, uintptr_t rast, uintptr_t stream);
// grad_pos must be zero-filled by the caller (the kernel accumulates with atomics).
void rasterize_backward(bool f64, uintptr_t pos, uintptr_t tri, uintptr_t rast,
                        uintptr_t grad_rast, int64_t B, int64_t V, int H, int W,
                        uintptr_t grad_pos, uintptr_t stream);
void interpolate_forward(bool f64, uintptr_t attr, bool attr_batched, uintptr_t rast,
                         uintptr_t tri, int64_t B, int64_t V, int64_t C, int H, int W,
                         uintptr_t out, uintptr_t stream);
// grad_attr must be zero-filled by the caller.
void interpolate_backward(bool f64, uintptr_t attr, bool attr_batched, uintptr_t rast,
                          uintptr_t tri, uintptr_t grad_out, int64_t B, int64_t V, int64_t C,
                          int H, int W, uintptr_t grad_attr, uintptr_t grad_rast,
                          uintptr_t stream);
void sample_texture_forward(bool f64, uintptr_t tex, bool tex_batched, uintptr_t uv, int64_t B,
                            int tex_h, int tex_w, int64_t C, int H, int W, int mode,
                            uintptr_t out, uintptr_t stream);
// grad_tex must be zero-filled by the caller.
void sample_texture_backward(bool f64, uintptr_t tex, bool tex_batched, uintptr_t uv,
                             uintptr_t grad_out, int64_t B, int tex_h, int tex_w, int64_t C,
                             int H, int W, int mode, uintptr_t grad_tex, uintptr_t grad_uv,
                             uintptr_t stream);

}  // namespace cuda
}  // namespace nl3dmm
