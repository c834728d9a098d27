// Host entry points of the CUDA kernels (render_cuda.cu), taking the argument structs of
// render_args.h. Buffers are device addresses owned by the caller (torch tensors on the Python
// side); `launch.stream` is a cudaStream_t as an integer; launches are asynchronous on it.
// Each call checks its launches and throws std::runtime_error naming the kernel when CUDA
// reports an error. Index problems are ORed into the device int32 at `launch.status`.
//
// Scratch (`launch.scratch`, device memory, contents on entry irrelevant):
//   rasterize_forward   B * H * W * kZbufBytesPerPixel bytes (render_args.h; depth|id keys);
//   each backward       values * kSumBytesPerValue bytes, values = the element count of the
//                       gradient it scatters into (grad_pos, grad_attr, grad_tex; antialias:
//                       grad_pos; sample_texture_mip_backward: the whole packed pyramid's gradient).
// Every output element is written (gradients need no zero-fill), and backward results are
// bit-identical whatever the thread schedule (fixed_point.h).
#pragma once

#include <cstdint>

#include "../render_args.h"

namespace nl3dmm {
namespace cuda {

void rasterize_forward(const RasterizeArgs& args);
void rasterize_backward(const RasterizeArgs& args);
void interpolate_forward(const InterpolateArgs& args);
void interpolate_backward(const InterpolateArgs& args);
void sample_texture_forward(const TextureArgs& args);
void sample_texture_backward(const TextureArgs& args);
void antialias_forward(const AntialiasArgs& args);
void antialias_backward(const AntialiasArgs& args);
void interpolate_derivatives_forward(const InterpolateArgs& args);
void interpolate_derivatives_backward(const InterpolateArgs& args);  // grad_attr only
void sample_texture_mip_forward(const TextureArgs& args);
void sample_texture_mip_backward(const TextureArgs& args);
void render_textured_forward(const TexturedArgs& args);
void render_textured_backward(const TexturedArgs& args);  // scratch: grad_tex's values

}  // namespace cuda
}  // namespace nl3dmm
