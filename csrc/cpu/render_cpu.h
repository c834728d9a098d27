// Entry points of the CPU kernels (render_cpu.cpp, on the thread pool of work_pool.h). Buffers
// are host memory; see render_args.h for the argument structs. Index problems are reported
// through args.launch.status, never by reading out of bounds.
#pragma once

#include "../render_args.h"

namespace nl3dmm {
namespace cpu {

void rasterize_forward(const RasterizeArgs& args);
void rasterize_backward(const RasterizeArgs& args);  // writes every element of grad_pos
void interpolate_forward(const InterpolateArgs& args);
void interpolate_backward(const InterpolateArgs& args);  // writes all of grad_attr, grad_rast
void sample_texture_forward(const TextureArgs& args);
void sample_texture_backward(const TextureArgs& args);  // writes all of grad_tex, grad_uv
void antialias_forward(const AntialiasArgs& args);
void antialias_backward(const AntialiasArgs& args);  // writes all of grad_color, grad_pos
void interpolate_derivatives_forward(const InterpolateArgs& args);   // args.pos, out (B, H, W, 2C)
void interpolate_derivatives_backward(const InterpolateArgs& args);  // writes all of grad_attr only
void sample_texture_mip_forward(const TextureArgs& args);   // tex: packed pyramid, uv_da, max_level
void sample_texture_mip_backward(const TextureArgs& args);  // writes grad_tex, grad_uv, grad_uv_da
void render_textured_forward(const TexturedArgs& args);   // writes out (the image) only
void render_textured_backward(const TexturedArgs& args);  // writes grad_tex, grad_rast, and the
                                                          // wanted (non-null) grad_background,
                                                          // grad_mask, grad_uv

// out[p] = 1 where pixel p of the raster (pixels x 4, float64 when f64) has a triangle, else 0.
void raster_coverage(const void* rast, void* out, int64_t pixels, bool f64);

// Whether none of the n values at data (float64 when f64, else float32) is NaN or Inf: the
// value check of every op's inputs on the CPU, run by the kernels' pool rather than torch's
// threads, which after a pause take milliseconds to wake (work_pool.h).
bool all_finite(const void* data, int64_t n, bool f64);

}  // namespace cpu
}  // namespace nl3dmm
