// One argument struct per op, shared by the CPU (csrc/cpu) and CUDA (csrc/cuda) entry points
// and filled in one place (csrc/bindings.cpp), as nvdiffrast does with its *KernelParams.
//
// Buffers are addresses of caller-owned, contiguous memory: host memory for the CPU kernels,
// device memory for the CUDA kernels. `f64` picks double over float for every floating-point
// buffer; index buffers are int32. A field that an entry point does not use stays 0 (the
// backward fields in a forward call, `scratch` and `stream` on the CPU).
#pragma once

#include <cstdint>

namespace nl3dmm {

// What a kernel ORs into the caller's int32 `status` word when it meets an index it refuses to
// follow (the element is then skipped or zeroed, never read out of bounds). The Python layer
// validates inputs first, so a set bit means a buffer changed behind its back (for example a
// write through `.numpy()`, which torch's version counter does not see).
enum StatusBits : int32_t {
    kBadVertexIndex = 1,  // tri holds an index outside 0..V-1
    kBadTriangleId = 2,   // rast[..., 3] is not a triangle id in 0..F (0 = empty pixel)
    kBadTexCoord = 4,     // uv (or uv_da) holds NaN or Inf
    kBadNeighbour = 8,    // antialias's topology holds an index outside -1..V-1
};

// Scratch the CUDA entry points need (render_cuda.h says which call needs which).
constexpr int64_t kZbufBytesPerPixel = 8;  // one packed depth|id key
constexpr int64_t kSumBytesPerValue = 24;  // one fixed-point sum (csrc/cuda/fixed_point.h)

// Every op's launch context.
struct LaunchArgs {
    uintptr_t status = 0;   // int32, zeroed by the caller; see StatusBits
    uintptr_t scratch = 0;  // CUDA only: scratch of scratch_bytes(...) bytes (z-buffer, sums)
    uintptr_t stream = 0;   // CUDA only: cudaStream_t (torch.cuda.current_stream().cuda_stream)
};

struct RasterizeArgs {
    bool f64 = false;
    uintptr_t pos = 0;  // (B, V, 4) clip-space positions
    uintptr_t tri = 0;  // (F, 3) vertex indices
    int64_t B = 0, V = 0, F = 0;
    int H = 0, W = 0;
    bool cull = false;
    uintptr_t rast = 0;       // (B, H, W, 4): forward output, backward input
    uintptr_t grad_rast = 0;  // backward input, like rast
    uintptr_t grad_pos = 0;   // backward output, like pos
    LaunchArgs launch;
};

struct InterpolateArgs {
    bool f64 = false;
    uintptr_t attr = 0;  // (B, V, C) per image, or (1, V, C) shared
    bool attr_batched = false;
    uintptr_t rast = 0;  // (B, H, W, 4)
    uintptr_t tri = 0;   // (F, 3)
    uintptr_t pos = 0;   // interpolate_derivatives: (B, V, 4) clip positions given to rasterize
    int64_t B = 0, V = 0, F = 0, C = 0;
    int H = 0, W = 0;
    uintptr_t out = 0;        // (B, H, W, C) forward output; interpolate_derivatives: (B, H, W, 2C)
    uintptr_t grad_out = 0;   // backward input, like out
    uintptr_t grad_attr = 0;  // backward output, like attr
    uintptr_t grad_rast = 0;  // backward output, like rast (channels 2 and 3 are zero)
    LaunchArgs launch;
};

// sample_texture, and its mip-mapped form sample_texture_mip, where `tex` is the packed pyramid
// of levels 0..max_level (render_math.h: mip_level_size, mip_level_offset) per image and the
// level of detail comes from uv_da.
struct TextureArgs {
    bool f64 = false;
    uintptr_t tex = 0;  // (B, Ht, Wt, C) per image, or (1, Ht, Wt, C) shared; mip: (B or 1, texels, C)
    bool tex_batched = false;
    uintptr_t uv = 0;     // (B, H, W, 2)
    uintptr_t uv_da = 0;  // mip: (B, H, W, 4) du/dx, du/dy, dv/dx, dv/dy
    int64_t B = 0, C = 0;
    int tex_h = 0, tex_w = 0, H = 0, W = 0;  // tex_h, tex_w: level 0
    int mode = 0;             // BoundaryMode (render_math.h)
    int max_level = 0;        // mip: the coarsest level in tex
    uintptr_t out = 0;        // (B, H, W, C) forward output
    uintptr_t grad_out = 0;   // backward input, like out
    uintptr_t grad_tex = 0;   // backward output, like tex
    uintptr_t grad_uv = 0;    // backward output, like uv
    uintptr_t grad_uv_da = 0; // mip backward output, like uv_da
    LaunchArgs launch;
};

struct AntialiasArgs {
    bool f64 = false;
    uintptr_t color = 0;     // (B, H, W, C) shaded image
    uintptr_t rast = 0;      // (B, H, W, 4) raster of the same scene
    uintptr_t pos = 0;       // (B, V, 4) clip-space positions the raster was drawn from
    uintptr_t tri = 0;       // (F, 3) vertex indices
    uintptr_t topology = 0;  // (F, 3) third vertex of the triangle across each edge, -1 for none
    int64_t B = 0, V = 0, F = 0, C = 0;
    int H = 0, W = 0;
    uintptr_t out = 0;         // (B, H, W, C) forward output
    uintptr_t grad_out = 0;    // backward input, like out
    uintptr_t grad_color = 0;  // backward output, like color
    uintptr_t grad_pos = 0;    // backward output, like pos (z gets no gradient)
    LaunchArgs launch;
};

// Defines a backend's twelve entry points, each calling its <op>_t<double> or <op>_t<float>
// implementation as args.f64 says (csrc/cpu and csrc/cuda both end with it).
#define NL3DMM_ENTRY_POINTS_BY_PRECISION                                                          \
    void rasterize_forward(const RasterizeArgs& a) {                                              \
        a.f64 ? rasterize_forward_t<double>(a) : rasterize_forward_t<float>(a);                   \
    }                                                                                             \
    void rasterize_backward(const RasterizeArgs& a) {                                             \
        a.f64 ? rasterize_backward_t<double>(a) : rasterize_backward_t<float>(a);                 \
    }                                                                                             \
    void interpolate_forward(const InterpolateArgs& a) {                                          \
        a.f64 ? interpolate_forward_t<double>(a) : interpolate_forward_t<float>(a);               \
    }                                                                                             \
    void interpolate_backward(const InterpolateArgs& a) {                                         \
        a.f64 ? interpolate_backward_t<double>(a) : interpolate_backward_t<float>(a);             \
    }                                                                                             \
    void sample_texture_forward(const TextureArgs& a) {                                           \
        a.f64 ? sample_texture_forward_t<double>(a) : sample_texture_forward_t<float>(a);         \
    }                                                                                             \
    void sample_texture_backward(const TextureArgs& a) {                                          \
        a.f64 ? sample_texture_backward_t<double>(a) : sample_texture_backward_t<float>(a);       \
    }                                                                                             \
    void antialias_forward(const AntialiasArgs& a) {                                              \
        a.f64 ? antialias_forward_t<double>(a) : antialias_forward_t<float>(a);                   \
    }                                                                                             \
    void antialias_backward(const AntialiasArgs& a) {                                             \
        a.f64 ? antialias_backward_t<double>(a) : antialias_backward_t<float>(a);                 \
    }                                                                                             \
    void interpolate_derivatives_forward(const InterpolateArgs& a) {                              \
        a.f64 ? interpolate_derivatives_forward_t<double>(a)                                      \
              : interpolate_derivatives_forward_t<float>(a);                                      \
    }                                                                                             \
    void interpolate_derivatives_backward(const InterpolateArgs& a) {                             \
        a.f64 ? interpolate_derivatives_backward_t<double>(a)                                     \
              : interpolate_derivatives_backward_t<float>(a);                                     \
    }                                                                                             \
    void sample_texture_mip_forward(const TextureArgs& a) {                                       \
        a.f64 ? sample_texture_mip_forward_t<double>(a) : sample_texture_mip_forward_t<float>(a); \
    }                                                                                             \
    void sample_texture_mip_backward(const TextureArgs& a) {                                      \
        a.f64 ? sample_texture_mip_backward_t<double>(a) : sample_texture_mip_backward_t<float>(a); \
    }

template <typename T>
inline T* buffer(uintptr_t address) {
    return reinterpret_cast<T*>(address);
}

// render_textured's shading pass: interpolate (uv) -> sample_texture (bilinear) -> composite
// over a background, fused into one per-pixel kernel that writes only the image (its
// rasterize step is RasterizeArgs'). The attributes are uv: 2 channels.
struct TexturedArgs {
    bool f64 = false;
    uintptr_t rast = 0;  // (B, H, W, 4) from rasterize with the same tri
    uintptr_t tri = 0;   // (F, 3)
    uintptr_t attr = 0;  // (B, V, 2) per image, or (1, V, 2) shared
    bool attr_batched = false;
    uintptr_t tex = 0;  // (B, Ht, Wt, C) per image, or (1, Ht, Wt, C) shared
    bool tex_batched = false;
    uintptr_t background = 0;  // (B, H, W, C), or 0: zero
    uintptr_t mask = 0;        // (B, H, W) multiplier of the coverage, or 0: none
    int64_t B = 0, V = 0, F = 0, C = 0;
    int tex_h = 0, tex_w = 0, H = 0, W = 0;
    int mode = 0;                   // BoundaryMode (render_math.h)
    uintptr_t out = 0;              // (B, H, W, C) forward output: the image
    uintptr_t grad_out = 0;         // backward input, like out
    uintptr_t grad_tex = 0;         // backward output, like tex
    uintptr_t grad_background = 0;  // backward output, like background, or 0: not wanted
    uintptr_t grad_mask = 0;        // backward output, like mask, or 0: not wanted
    uintptr_t grad_rast = 0;        // backward output, like rast (channels 2 and 3 are zero)
    uintptr_t grad_uv = 0;          // backward output (B, H, W, 2): the pixels' uv gradient, or
                                    // 0: not wanted (the caller scatters it to attr if needed)
    LaunchArgs launch;
};

// The two entry points of render_textured, as NL3DMM_ENTRY_POINTS_BY_PRECISION above.
#define NL3DMM_TEXTURED_ENTRY_POINTS_BY_PRECISION                                                 \
    void render_textured_forward(const TexturedArgs& a) {                                         \
        a.f64 ? render_textured_forward_t<double>(a) : render_textured_forward_t<float>(a);       \
    }                                                                                             \
    void render_textured_backward(const TexturedArgs& a) {                                        \
        a.f64 ? render_textured_backward_t<double>(a) : render_textured_backward_t<float>(a);     \
    }

}  // namespace nl3dmm
