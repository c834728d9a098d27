// The per-pixel steps of render_textured's shading pass, shared by the CPU and CUDA kernels:
// the chain interpolate(uv) -> sample_texture (bilinear) -> composite over a background, for
// one pixel, without the (B, H, W, 2) uv and (B, H, W, C) colour tensors between the ops.
//
// The arithmetic is the unfused ops', step by step and in the same precision, so that the
// image is bit-equal to theirs: uv is interpolate_pixel's (in T), the lookup is bilinear_taps
// and bilinear_channel's (double, rounded once to T), and the composite is composite_value's
// (in T, as torch evaluates colour * m + background * (1 - m)). The backward rounds where the
// unfused chain holds a T tensor (the colour gradient g * m, the pixel's uv gradient) so that
// the gradients match too. Every index is checked before it is followed (index_checks.h).
#pragma once

#include <cstdint>

#include "index_checks.h"
#include "render_args.h"
#include "render_math.h"

namespace nl3dmm {

template <typename T>
struct TexturedBuffers {
    const T* rast;
    const int32_t* tri;
    const T* attr;
    const T* tex;
    const T* background;  // null: zero
    const T* mask;        // null: coverage alone
    const T* grad_out;
    T* out;
    T* grad_background;  // null: not wanted
    T* grad_mask;        // null: not wanted
    T* grad_rast;
    T* grad_uv;  // null: not wanted
    int32_t* status;
    int64_t B, V, F, C, pixels, texels;
    int tex_h, tex_w, mode;
    bool attr_batched, tex_batched;
};

template <typename T>
inline TexturedBuffers<T> textured_buffers(const TexturedArgs& a) {
    return TexturedBuffers<T>{buffer<const T>(a.rast), buffer<const int32_t>(a.tri), buffer<const T>(a.attr),
                              buffer<const T>(a.tex), buffer<const T>(a.background), buffer<const T>(a.mask),
                              buffer<const T>(a.grad_out), buffer<T>(a.out), buffer<T>(a.grad_background),
                              buffer<T>(a.grad_mask), buffer<T>(a.grad_rast), buffer<T>(a.grad_uv),
                              buffer<int32_t>(a.launch.status), a.B, a.V, a.F, a.C,
                              (int64_t)a.H * a.W, (int64_t)a.tex_h * a.tex_w, a.tex_h, a.tex_w, a.mode,
                              a.attr_batched, a.tex_batched};
}

// What a pixel's forward and backward share.
template <typename T>
struct TexturedSample {
    bool hit;            // the pixel shows a triangle (its coverage is 1)
    bool shaded;         // ... and its uv is finite: the texture is looked up
    T m;                 // the composite weight: coverage x mask multiplier
    T uv[2];             // interpolated, in T (as interpolate's output)
    BilinearTaps taps;   // valid when shaded
    const T* tex;        // the pixel's image's texture
    const T* corner[3];  // its triangle's uv attributes (valid when hit)
};

template <typename T>
NL_HD TexturedSample<T> textured_sample(const TexturedBuffers<T>& a, int64_t bp) {
    TexturedSample<T> s;
    const int64_t b = bp / a.pixels;
    const T* rs = a.rast + bp * 4;
    const int64_t f = pixel_triangle(rs, a.tri, a.V, a.F, a.status);
    s.hit = f >= 0;
    s.shaded = false;
    s.tex = a.tex + (a.tex_batched ? b * a.texels * a.C : 0);
    // The unfused mask is (id > 0) * multiplier: 1 * x and 0 * x are exact for finite x.
    const T coverage = s.hit ? T(1) : T(0);
    s.m = a.mask != nullptr ? coverage * a.mask[bp] : coverage;
    s.uv[0] = s.uv[1] = T(0);
    if (!s.hit) return s;
    const T* attr = a.attr + (a.attr_batched ? b * a.V * 2 : 0);
    for (int k = 0; k < 3; ++k) s.corner[k] = attr + (int64_t)a.tri[f * 3 + k] * 2;
    interpolate_pixel(rs, a.tri, attr, 2, s.uv);
    if (!finite_uv(s.uv[0], s.uv[1])) {  // only from a raster that does not come from rasterize
        report_status(a.status, kBadTexCoord);
        return s;
    }
    s.shaded = true;
    s.taps = bilinear_taps(s.uv[0], s.uv[1], a.tex_h, a.tex_w, a.mode);
    return s;
}

template <typename T>
NL_HD T textured_background(const TexturedBuffers<T>& a, int64_t bp, int64_t c) {
    return a.background != nullptr ? a.background[bp * a.C + c] : T(0);
}

// Forward, pixel bp (image-major): its C image values.
template <typename T>
NL_HD void textured_forward_pixel(const TexturedBuffers<T>& a, int64_t bp) {
    const TexturedSample<T> s = textured_sample(a, bp);
    double w[4] = {0, 0, 0, 0};
    if (s.shaded) bilinear_weights(s.taps, w);
    T* o = a.out + bp * a.C;
    for (int64_t c = 0; c < a.C; ++c) {
        // An empty pixel's colour is irrelevant (its weight is 0): the unfused chain samples
        // the texture at uv = 0 there only to multiply it by 0.
        const T colour = s.shaded ? (T)bilinear_channel(s.taps, w, s.tex, a.C, c) : T(0);
        o[c] = composite_value(colour, s.m, textured_background(a, bp, c));
    }
}

// Backward, the gathers of pixel bp: grad_rast (b0, b1 through uv), and where wanted the
// background's, the mask multiplier's and the pixel uv's gradients.
template <typename T>
NL_HD void textured_gather_pixel(const TexturedBuffers<T>& a, int64_t bp) {
    const TexturedSample<T> s = textured_sample(a, bp);
    const T* g = a.grad_out + bp * a.C;
    T g_uv[2] = {T(0), T(0)};
    T* gr = a.grad_rast + bp * 4;
    gr[0] = gr[1] = gr[2] = gr[3] = T(0);
    if (s.shaded) {
        double gd[2];
        bilinear_coordinate_grads(s.taps, a.tex_h, a.tex_w, s.tex, g, s.m, a.C, gd);
        g_uv[0] = (T)gd[0];
        g_uv[1] = (T)gd[1];
        // interpolate's backward: d uv / d(b0, b1) = (a0 - a2, a1 - a2).
        double g0 = 0, g1 = 0;
        for (int c = 0; c < 2; ++c) {
            const double a2 = (double)s.corner[2][c];
            g0 += (double)g_uv[c] * ((double)s.corner[0][c] - a2);
            g1 += (double)g_uv[c] * ((double)s.corner[1][c] - a2);
        }
        gr[0] = (T)g0;
        gr[1] = (T)g1;
    }
    if (a.grad_uv != nullptr) {
        a.grad_uv[bp * 2] = g_uv[0];
        a.grad_uv[bp * 2 + 1] = g_uv[1];
    }
    if (a.grad_background != nullptr)
        for (int64_t c = 0; c < a.C; ++c) a.grad_background[bp * a.C + c] = g[c] * (T(1) - s.m);
    if (a.grad_mask != nullptr) {
        // d image / d m = colour - background, and m = coverage x multiplier.
        double gm = 0;
        if (s.hit) {
            double w[4] = {0, 0, 0, 0};
            if (s.shaded) bilinear_weights(s.taps, w);
            for (int64_t c = 0; c < a.C; ++c) {
                const double colour = s.shaded ? (double)(T)bilinear_channel(s.taps, w, s.tex, a.C, c) : 0.0;
                gm += (double)g[c] * (colour - (double)textured_background(a, bp, c));
            }
        }
        a.grad_mask[bp] = (T)gm;
    }
}

// Backward, pixel bp's share of the texture gradient: add(i, value) for value i of its image's
// (texels x C) texture, taps in order and channels within a tap (sample_texture's order).
template <typename T, typename Add>
NL_HD void textured_texture_grads(const TexturedBuffers<T>& a, int64_t bp, Add&& add) {
    const TexturedSample<T> s = textured_sample(a, bp);
    if (!s.shaded) return;
    double w[4];
    bilinear_weights(s.taps, w);
    const T* g = a.grad_out + bp * a.C;
    for (int k = 0; k < 4; ++k) {
        if (w[k] == 0.0) continue;
        for (int64_t c = 0; c < a.C; ++c) add(s.taps.index[k] * a.C + c, w[k] * (double)(T)(g[c] * s.m));
    }
}

}  // namespace nl3dmm
