// CPU kernels of the rendering layer: rasterize, interpolate (and its screen derivatives),
// sample_texture (bilinear and trilinear mip-mapped) and their backward passes, in float32 and float64. Tensors arrive as raw contiguous pointers in the
// argument structs of render_args.h; the Python layer (engine/render/backends) owns them and
// has validated shapes and indices. The kernels still check every index they follow
// (index_checks.h) and report a bad one through the status word instead of reading past a
// buffer: validation can be bypassed by writes torch does not see.
//
// Determinism: every output element is produced by exactly one thread, and every sum is taken
// in a fixed order (pixels in raster order within an image, or within each of a fixed number
// of row bands, bands and images in order), so results are bit-identical across runs and
// across thread counts. The threads are those of
// work_pool.h, whose callers never wait for a thread that has not started.
#include "render_cpu.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <thread>
#include <vector>

#include "../antialias_pair.h"
#include "../index_checks.h"
#include "../render_math.h"
#include "../textured_pixel.h"
#include "work_pool.h"

namespace nl3dmm {
namespace cpu {
namespace {

// Pixels per piece of a per-pixel loop: small enough to spread a 224 x 224 image over a few
// pieces per thread, large enough that claiming a piece costs nothing next to it.
constexpr int64_t kPixelGrain = 1024;

// The per-image working state of the rasterizer; one per thread when images run in parallel.
struct ImageRaster {
    std::vector<ScreenVertex> screen;
    std::vector<uint64_t> zbuf;
};

template <typename T>
void project_vertices(const T* pos, int64_t v0, int64_t v1, int H, int W, ImageRaster& s) {
    for (int64_t v = v0; v < v1; ++v) {
        const T* p = pos + v * 4;
        s.screen[v] = project_vertex(p[0], p[1], p[2], p[3], H, W);
    }
}

// Whether every index of tri is a vertex: one pass over the triangles, so that the per-image
// loops (B times F triangles) skip the per-triangle check in the usual case.
bool tri_in_range(const int32_t* tri, int64_t F, int64_t V) {
    std::atomic<bool> ok{true};
    parallel_for(F, 16384, [&](int64_t begin, int64_t end, int) {
        for (int64_t f = begin; f < end; ++f)
            if (!vertex_indices_valid(tri + f * 3, V)) {
                ok.store(false, std::memory_order_relaxed);
                return;
            }
    });
    return ok.load();
}

template <typename T>
void load_triangle(const T* pos, const int32_t* tri, int64_t f, ClipVertex v[3]) {
    for (int k = 0; k < 3; ++k) {
        const T* p = pos + (int64_t)tri[f * 3 + k] * 4;
        v[k] = ClipVertex{(double)p[0], (double)p[1], (double)p[2], (double)p[3]};
    }
}

// A triangle reaching outside the clip volume: clipped, fanned, z-tested (render_math.h).
// Out of line: such triangles are rare, and the hot path below stays small.
template <typename T>
__attribute__((noinline)) void raster_clipped(const T* pos, const int32_t* tri, int64_t f, int r0,
                                              int r1, bool cull, int H, int W, uint64_t* zbuf) {
    ClipVertex v[3];
    load_triangle(pos, tri, f, v);
    raster_clipped_triangle(v, H, W, cull, r0, r1, (uint32_t)f, [&](int r, int c, uint64_t key) {
        uint64_t& z = zbuf[(int64_t)r * W + c];
        if (key < z) z = key;
    });
}

// Z-test triangle f over the rows [r0, r1] of its pixel bounds into zbuf (H x W keys).
// Forced inline: it runs B * F times, mostly to reject a sub-pixel triangle in a few
// instructions, and as an out-of-line call (GCC's choice once the index check came in) the
// rasterizer took 20% longer.
template <typename T>
__attribute__((always_inline)) inline void raster_triangle(const T* pos, const ScreenVertex* screen, const int32_t* tri, int64_t V, int64_t f,
                            int r0, int r1, bool cull, int H, int W, uint64_t* zbuf,
                            int32_t* status) {
    const int32_t* t = tri + f * 3;
    if (status != nullptr && !vertex_indices_valid(t, V)) {  // null: tri was checked as a whole
        report_status(status, kBadVertexIndex);
        return;
    }
    const ScreenVertex &a = screen[t[0]], &b = screen[t[1]], &c = screen[t[2]];
    if (!(a.inside && b.inside && c.inside)) {
        raster_clipped(pos, tri, f, r0, r1, cull, H, W, zbuf);
        return;
    }
    PixelBounds pb = pixel_bounds(a, b, c, H, W);
    pb.y0 = std::max(pb.y0, r0);
    pb.y1 = std::min(pb.y1, r1);
    if (pb.empty()) return;
    TriangleSetup setup;
    if (!setup_triangle(a, b, c, cull, setup)) return;
    for (int r = pb.y0; r <= pb.y1; ++r) {
        uint64_t* row = zbuf + (int64_t)r * W;
        for (int col = pb.x0; col <= pb.x1; ++col) {
            const uint64_t key = fragment_key(setup, r, col, (uint32_t)f);
            if (key < row[col]) row[col] = key;
        }
    }
}

// Write the raster (b0, b1, depth, id + 1) of rows [r0, r1) from the z-buffer, or from the
// minimum of it and the `others` (the private z-buffers of a split image).
template <typename T>
void resolve_rows(const T* pos, const int32_t* tri, int r0, int r1, int H, int W, const ImageRaster& s,
                  T* out, const std::vector<const uint64_t*>& others = {}) {
    for (int r = r0; r < r1; ++r) {
        for (int c = 0; c < W; ++c) {
            const int64_t i = (int64_t)r * W + c;
            uint64_t key = s.zbuf[i];
            for (const uint64_t* z : others) key = std::min(key, z[i]);
            T* o = out + i * 4;
            if (key == kEmptyKey) {
                o[0] = o[1] = o[2] = o[3] = T(0);
                continue;
            }
            const int64_t f = (int64_t)(key & 0xffffffffu);
            ClipVertex v[3];
            load_triangle(pos, tri, f, v);
            const PixelSample p = resolve_pixel(v, r, c, H, W);
            o[0] = (T)p.b0;
            o[1] = (T)p.b1;
            o[2] = (T)p.depth;
            o[3] = (T)(f + 1);
        }
    }
}

// One thread, one whole image.
template <typename T>
void rasterize_one_image(const T* pos, const int32_t* tri, int64_t V, int64_t F, int H, int W,
                         bool cull, ImageRaster& s, T* out, int32_t* status) {
    project_vertices(pos, 0, V, H, W, s);
    std::fill(s.zbuf.begin(), s.zbuf.end(), kEmptyKey);
    for (int64_t f = 0; f < F; ++f)
        raster_triangle(pos, s.screen.data(), tri, V, f, 0, H - 1, cull, H, W, s.zbuf.data(), status);
    resolve_rows(pos, tri, 0, H, H, W, s, out);
}

// One image split across the pool (for batches smaller than the pool). Each thread z-tests the
// pieces of the triangle list it claims into its own z-buffer; resolving a pixel takes the
// minimum over the buffers of the threads that took part. The packed-key minimum does not depend
// on the order, so the result is bit-identical whoever drew what, and no two threads ever write
// one buffer. parts[0] (the caller's) is cleared up front: it is read even if the caller
// claimed nothing; the others are cleared by their thread on its first piece.
template <typename T>
void rasterize_one_image_parallel(const T* pos, const int32_t* tri, int64_t V, int64_t F, int H,
                                  int W, bool cull, std::vector<ImageRaster>& parts, T* out,
                                  int32_t* status) {
    const int n = (int)parts.size();
    ImageRaster& s = parts[0];
    const int64_t pixels = (int64_t)H * W;
    parallel_for(V, 4096, [&](int64_t begin, int64_t end, int) { project_vertices(pos, begin, end, H, W, s); });
    std::fill(s.zbuf.begin(), s.zbuf.end(), kEmptyKey);
    std::vector<char> used(n, 0);
    used[0] = 1;
    parallel_for(F, 2048, [&](int64_t begin, int64_t end, int worker) {
        ImageRaster& mine = parts[worker];
        if (!used[worker]) {
            used[worker] = 1;
            if (mine.zbuf.size() != (size_t)pixels) mine.zbuf.resize(pixels);
            std::fill(mine.zbuf.begin(), mine.zbuf.end(), kEmptyKey);
        }
        uint64_t* zbuf = mine.zbuf.data();
        for (int64_t f = begin; f < end; ++f)
            raster_triangle(pos, s.screen.data(), tri, V, f, 0, H - 1, cull, H, W, zbuf, status);
    }, /*max_workers=*/n);
    // The buffers' minimum is taken as the rows are resolved, not in a pass of its own.
    std::vector<const uint64_t*> others;
    for (int p = 1; p < n; ++p)
        if (used[p]) others.push_back(parts[p].zbuf.data());
    parallel_for(H, 8, [&](int64_t begin, int64_t end, int) {
        resolve_rows(pos, tri, (int)begin, (int)end, H, W, s, out, others);
    });
}

template <typename T>
void store(const std::vector<double>& src, T* dst) {
    for (size_t i = 0; i < src.size(); ++i) dst[i] = (T)src[i];
}

// Scatter-adds of a backward pass (to vertices, texels), deterministically: each image's
// contributions are summed by one thread in raster order into a double buffer of `size`
// values, which is written to its own slice of `dst` (batched) or, for a shared
// (un-batched) input, added to a running total in batch order. Neither result depends on
// which thread handled which image, so gradients are bit-identical for any thread count.
// accumulate(b, double* acc) adds image b's contributions to the zeroed acc.
// Images are claimed in batch order, so the thread holding image b only waits (for its turn
// to add to the total) on images that other threads are already working on.
//
// A backward pass's per-pixel gathers (`gather`, over [0, gather_n) in pieces) may run in the
// same call: they are claimed after the images, so with fewer images than threads (B = 1) the
// caller starts on the serial scatter at once and a helper takes the gathers when it wakes,
// instead of the scatter waiting for the gathers to finish. The gathers must neither read what
// the scatter writes nor write what it reads.
using PixelGather = std::function<void(int64_t begin, int64_t end)>;

template <typename T, typename Accumulate>
void scatter_by_image(int64_t B, int64_t size, bool batched, T* dst, Accumulate&& accumulate,
                      int64_t gather_n = 0, const PixelGather& gather = nullptr) {
    std::vector<double> total(batched ? 0 : size, 0.0);
    std::vector<std::vector<double>> accs(workers());
    std::atomic<int64_t> turn{0};  // the next image to add to total
    const int64_t piece = piece_size(gather_n, kPixelGrain);
    const int64_t pieces = (gather_n + piece - 1) / piece;
    run_chunks(B + pieces, [&](int64_t b, int worker) {
        if (b >= B) {
            const int64_t begin = (b - B) * piece;
            gather(begin, std::min(begin + piece, gather_n));
            return;
        }
        std::vector<double>& acc = accs[worker];
        acc.assign(size, 0.0);
        accumulate(b, acc.data());
        if (batched) {
            store(acc, dst + b * size);
            return;
        }
        while (turn.load(std::memory_order_acquire) != b) std::this_thread::yield();
        for (int64_t i = 0; i < size; ++i) total[i] += acc[i];
        turn.store(b + 1, std::memory_order_release);
    });
    if (!batched) store(total, dst);
}

// The scatter of a batch of one, which scatter_by_image would leave to one thread, in
// kSingleImageBands bands of rows with equal numbers of covered pixels: each band is summed in
// raster order into its own buffer, and the buffers are added in band order. The band count is
// a constant, not the thread count, and the band edges follow from the raster alone, so the
// bits depend on neither the threads nor which thread ran a band (they differ in the last bits
// from the same image's gradient in a larger batch). Balanced bands matter: the paper face at
// 512² has 40k covered pixels above the middle row and 51k below.
// accumulate(row_begin, row_end, double* acc) adds those rows' contributions to the zeroed acc.
constexpr int kSingleImageBands = 2;

template <typename T, typename Accumulate>
void scatter_single_image(const T* rast, int H, int W, int64_t size, T* dst, Accumulate&& accumulate) {
    std::vector<int64_t> covered(H);  // per row; the id channel is nonzero where a triangle is
    parallel_for(H, 16, [&](int64_t r0, int64_t r1, int) {
        for (int64_t r = r0; r < r1; ++r) {
            int64_t n = 0;
            for (int64_t p = r * W; p < (r + 1) * W; ++p) n += rast[p * 4 + 3] != T(0);
            covered[r] = n;
        }
    });
    int64_t total = 0;
    for (int64_t n : covered) total += n;
    int edges[kSingleImageBands + 1] = {0};
    int64_t seen = 0;
    for (int k = 1, r = 0; k < kSingleImageBands; ++k) {
        while (r < H && seen * kSingleImageBands < total * k) seen += covered[r++];
        edges[k] = r;
    }
    edges[kSingleImageBands] = H;
    std::vector<std::vector<double>> accs(kSingleImageBands);
    run_chunks(kSingleImageBands, [&](int64_t k, int) {
        accs[k].assign(size, 0.0);
        accumulate(edges[k], edges[k + 1], accs[k].data());
    });
    parallel_for(size, 1 << 15, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) {
            double sum = accs[0][i];
            for (int k = 1; k < kSingleImageBands; ++k) sum += accs[k][i];
            dst[i] = (T)sum;
        }
    });
}

template <typename T>
bool all_finite_t(const T* x, int64_t n) {
    std::atomic<bool> ok{true};
    parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end, int) {
        // x - x is 0 for a finite x and NaN for NaN or Inf; summed without a branch per value.
        T acc = T(0);
        for (int64_t i = begin; i < end; ++i) acc += x[i] - x[i];
        if (acc != T(0)) ok.store(false, std::memory_order_relaxed);
    });
    return ok.load();
}

template <typename T>
void rasterize_forward_t(const RasterizeArgs& a) {
    const T* pos = buffer<const T>(a.pos);
    const int32_t* tri = buffer<const int32_t>(a.tri);
    T* rast = buffer<T>(a.rast);
    const int64_t B = a.B, V = a.V, F = a.F;
    // Checked per triangle (and reported) only when some index is out of range.
    int32_t* status = tri_in_range(tri, F, V) ? nullptr : buffer<int32_t>(a.launch.status);
    const int H = a.H, W = a.W;
    const int64_t pixels = (int64_t)H * W;
    if (B >= workers()) {
        std::vector<ImageRaster> states(workers());  // allocated by their thread on first use
        run_chunks(B, [&](int64_t b, int worker) {
            ImageRaster& s = states[worker];
            s.screen.resize(V);
            s.zbuf.resize(pixels);
            rasterize_one_image(pos + b * V * 4, tri, V, F, H, W, a.cull, s, rast + b * pixels * 4, status);
        });
    } else {
        // Private z-buffers cost pixels * 8 bytes each; keep them under ~256 MB in all.
        const int64_t budget = (256ll << 20) / (pixels * 8);
        const int n = (int)std::max<int64_t>(1, std::min<int64_t>(workers(), budget));
        std::vector<ImageRaster> parts(n);
        parts[0].screen.resize(V);
        parts[0].zbuf.resize(pixels);
        for (int64_t b = 0; b < B; ++b)
            rasterize_one_image_parallel(pos + b * V * 4, tri, V, F, H, W, a.cull, parts,
                                         rast + b * pixels * 4, status);
    }
}

template <typename T>
void rasterize_backward_t(const RasterizeArgs& a) {
    const T* pos = buffer<const T>(a.pos);
    const int32_t* tri = buffer<const int32_t>(a.tri);
    const T* rast = buffer<const T>(a.rast);
    const T* grad_rast = buffer<const T>(a.grad_rast);
    int32_t* status = buffer<int32_t>(a.launch.status);
    const int64_t V = a.V, F = a.F;
    const int H = a.H, W = a.W;
    const int64_t pixels = (int64_t)H * W;
    auto accumulate_rows = [&](int64_t b, int row_begin, int row_end, double* acc) {
        const T* pos_b = pos + b * V * 4;
        for (int64_t p = (int64_t)row_begin * W; p < (int64_t)row_end * W; ++p) {
            const T* rs = rast + (b * pixels + p) * 4;
            const int64_t f = pixel_triangle(rs, tri, V, F, status);
            if (f < 0) continue;
            const T* g = grad_rast + (b * pixels + p) * 4;
            if (g[0] == T(0) && g[1] == T(0) && g[2] == T(0)) continue;
            ClipVertex v[3];
            load_triangle(pos_b, tri, f, v);
            double grad[3][4];
            resolve_pixel_backward(v, (int)(p / W), (int)(p % W), H, W, g[0], g[1], g[2], grad);
            for (int k = 0; k < 3; ++k) {
                double* acc_k = acc + (int64_t)tri[f * 3 + k] * 4;
                for (int c = 0; c < 4; ++c) acc_k[c] += grad[k][c];
            }
        }
    };
    T* grad_pos = buffer<T>(a.grad_pos);
    if (a.B == 1) {
        scatter_single_image(rast, H, W, V * 4, grad_pos, [&](int row_begin, int row_end, double* acc) {
            accumulate_rows(0, row_begin, row_end, acc);
        });
        return;
    }
    scatter_by_image(a.B, V * 4, /*batched=*/true, grad_pos, [&](int64_t b, double* acc) {
        accumulate_rows(b, 0, H, acc);
    });
}

template <typename T>
void interpolate_forward_t(const InterpolateArgs& a) {
    const T* attr = buffer<const T>(a.attr);
    const T* rast = buffer<const T>(a.rast);
    const int32_t* tri = buffer<const int32_t>(a.tri);
    T* out = buffer<T>(a.out);
    int32_t* status = buffer<int32_t>(a.launch.status);
    // Fields copied to locals: the loop body then reads registers, not the struct.
    const int64_t V = a.V, F = a.F, C = a.C, pixels = (int64_t)a.H * a.W, n = a.B * pixels;
    const bool batched = a.attr_batched;
    parallel_for(n, kPixelGrain, [&](int64_t begin, int64_t end, int) {
        for (int64_t bp = begin; bp < end; ++bp) {
            if (pixel_triangle(rast + bp * 4, tri, V, F, status) == kInvalidTriangle) {
                for (int64_t c = 0; c < C; ++c) out[bp * C + c] = T(0);
                continue;
            }
            interpolate_pixel(rast + bp * 4, tri, attr + (batched ? (bp / pixels) * V * C : 0), C, out + bp * C);
        }
    });
}

template <typename T>
void interpolate_backward_t(const InterpolateArgs& a) {
    const T* attr = buffer<const T>(a.attr);
    const T* rast = buffer<const T>(a.rast);
    const int32_t* tri = buffer<const int32_t>(a.tri);
    const T* grad_out = buffer<const T>(a.grad_out);
    T* grad_rast = buffer<T>(a.grad_rast);
    int32_t* status = buffer<int32_t>(a.launch.status);
    const int64_t V = a.V, F = a.F, C = a.C, pixels = (int64_t)a.H * a.W;
    // d out / d(b0, b1) = (a0 - a2, a1 - a2): a per-pixel gather, no conflicts.
    auto gather = [&](int64_t begin, int64_t end) {
        for (int64_t bp = begin; bp < end; ++bp) {
            const int64_t b = bp / pixels;
            T* gr = grad_rast + bp * 4;
            gr[0] = gr[1] = gr[2] = gr[3] = T(0);
            const int64_t f = pixel_triangle(rast + bp * 4, tri, V, F, status);
            if (f < 0) continue;
            const T* attr_b = attr + (a.attr_batched ? b * V * C : 0);
            const T* a0 = attr_b + (int64_t)tri[f * 3 + 0] * C;
            const T* a1 = attr_b + (int64_t)tri[f * 3 + 1] * C;
            const T* a2 = attr_b + (int64_t)tri[f * 3 + 2] * C;
            const T* g = grad_out + bp * C;
            double g0 = 0, g1 = 0;
            for (int64_t c = 0; c < C; ++c) {
                g0 += (double)g[c] * ((double)a0[c] - (double)a2[c]);
                g1 += (double)g[c] * ((double)a1[c] - (double)a2[c]);
            }
            gr[0] = (T)g0;
            gr[1] = (T)g1;
        }
    };
    // d out / d attr: a scatter to vertices.
    scatter_by_image(a.B, V * C, a.attr_batched, buffer<T>(a.grad_attr), [&](int64_t b, double* acc) {
        for (int64_t p = 0; p < pixels; ++p) {
            const int64_t bp = b * pixels + p;
            const T* rs = rast + bp * 4;
            // Invalid ids are reported by the gather.
            const int64_t f = triangle_from_raster_id(rs[3], F);
            if (f < 0 || !vertex_indices_valid(tri + f * 3, V)) continue;
            const double w[3] = {(double)rs[0], (double)rs[1], 1.0 - (double)rs[0] - (double)rs[1]};
            const T* g = grad_out + bp * C;
            for (int k = 0; k < 3; ++k) {
                double* acc_k = acc + (int64_t)tri[f * 3 + k] * C;
                for (int64_t c = 0; c < C; ++c) acc_k[c] += w[k] * (double)g[c];
            }
        }
    }, a.B * pixels, gather);
}

template <typename T>
void sample_texture_forward_t(const TextureArgs& a) {
    const T* tex = buffer<const T>(a.tex);
    const T* uv = buffer<const T>(a.uv);
    T* out = buffer<T>(a.out);
    int32_t* status = buffer<int32_t>(a.launch.status);
    const int64_t C = a.C, pixels = (int64_t)a.H * a.W, texels = (int64_t)a.tex_h * a.tex_w;
    parallel_for(a.B * pixels, kPixelGrain, [&](int64_t begin, int64_t end, int) {
        for (int64_t bp = begin; bp < end; ++bp) {
            T* o = out + bp * C;
            if (!finite_uv(uv[bp * 2], uv[bp * 2 + 1])) {
                report_status(status, kBadTexCoord);
                for (int64_t c = 0; c < C; ++c) o[c] = T(0);
                continue;
            }
            const int64_t b = bp / pixels;
            const T* t = tex + (a.tex_batched ? b * texels * C : 0);
            const BilinearTaps taps = bilinear_taps(uv[bp * 2], uv[bp * 2 + 1], a.tex_h, a.tex_w, a.mode);
            double w[4];
            bilinear_weights(taps, w);
            for (int64_t c = 0; c < C; ++c) o[c] = (T)bilinear_channel(taps, w, t, C, c);
        }
    });
}

template <typename T>
void sample_texture_backward_t(const TextureArgs& a) {
    const T* tex = buffer<const T>(a.tex);
    const T* uv = buffer<const T>(a.uv);
    const T* grad_out = buffer<const T>(a.grad_out);
    T* grad_uv = buffer<T>(a.grad_uv);
    int32_t* status = buffer<int32_t>(a.launch.status);
    const int64_t C = a.C, pixels = (int64_t)a.H * a.W, texels = (int64_t)a.tex_h * a.tex_w;
    auto gather = [&](int64_t begin, int64_t end) {
        for (int64_t bp = begin; bp < end; ++bp) {
            grad_uv[bp * 2] = grad_uv[bp * 2 + 1] = T(0);
            if (!finite_uv(uv[bp * 2], uv[bp * 2 + 1])) {
                report_status(status, kBadTexCoord);
                continue;
            }
            const int64_t b = bp / pixels;
            const T* t = tex + (a.tex_batched ? b * texels * C : 0);
            const BilinearTaps taps = bilinear_taps(uv[bp * 2], uv[bp * 2 + 1], a.tex_h, a.tex_w, a.mode);
            double g_uv[2];
            bilinear_coordinate_grads(taps, a.tex_h, a.tex_w, t, grad_out + bp * C, T(1), C, g_uv);
            grad_uv[bp * 2] = (T)g_uv[0];
            grad_uv[bp * 2 + 1] = (T)g_uv[1];
        }
    };
    scatter_by_image(a.B, texels * C, a.tex_batched, buffer<T>(a.grad_tex), [&](int64_t b, double* acc) {
        for (int64_t p = 0; p < pixels; ++p) {
            const int64_t bp = b * pixels + p;
            if (!finite_uv(uv[bp * 2], uv[bp * 2 + 1])) continue;  // reported by the gather
            const BilinearTaps taps = bilinear_taps(uv[bp * 2], uv[bp * 2 + 1], a.tex_h, a.tex_w, a.mode);
            double w[4];
            bilinear_weights(taps, w);
            const T* g = grad_out + bp * C;
            for (int k = 0; k < 4; ++k) {
                if (w[k] == 0.0) continue;
                double* acc_k = acc + taps.index[k] * C;
                for (int64_t c = 0; c < C; ++c) acc_k[c] += w[k] * (double)g[c];
            }
        }
    }, a.B * pixels, gather);
}

// Antialiasing is a gather on both sides: each pixel analyses its four pairs (pixel_blends,
// antialias_pair.h) and sums what they blend into it, or (backward) what their blends took
// from it, in a fixed order. A pair is analysed by both of its pixels; the redundant work keeps
// every output element the job of one thread, with no scratch.
template <typename T>
void antialias_forward_t(const AntialiasArgs& args) {
    const AntialiasBuffers<T> a = antialias_buffers<T>(args);
    parallel_for(a.B * a.pixels, kPixelGrain, [&](int64_t begin, int64_t end, int) {
        for (int64_t bp = begin; bp < end; ++bp) antialias_pixel(a, bp);
    });
}

template <typename T>
void antialias_backward_t(const AntialiasArgs& args) {
    const AntialiasBuffers<T> a = antialias_buffers<T>(args);
    // d out / d pos: each pair once (from its pixel 0), in raster order per image; beside it the
    // colour gradients, a gather (it writes only grad_color, which the pairs do not read).
    scatter_by_image(a.B, a.V * 4, /*batched=*/true, buffer<T>(args.grad_pos), [&](int64_t b, double* acc) {
        for (int64_t p = 0; p < a.pixels; ++p) {
            const int row = (int)(p / a.W), col = (int)(p % a.W);
            for (int down = 0; down < 2; ++down) {
                if (down ? row + 1 >= a.H : col + 1 >= a.W) continue;
                int64_t vertex[2];
                double grad[2][4];
                if (!pair_vertex_gradient(a, b, row, col, (bool)down, vertex, grad)) continue;
                for (int k = 0; k < 2; ++k)
                    for (int c = 0; c < 4; ++c) acc[vertex[k] * 4 + c] += grad[k][c];
            }
        }
    }, a.B * a.pixels, [&](int64_t begin, int64_t end) {
        for (int64_t bp = begin; bp < end; ++bp) antialias_color_gradient_pixel(a, bp);
    });
}

// d attr / dx, d attr / dy per pixel (render_math.h: barycentric_derivatives); a gather.
template <typename T>
void interpolate_derivatives_forward_t(const InterpolateArgs& a) {
    const T* attr = buffer<const T>(a.attr);
    const T* rast = buffer<const T>(a.rast);
    const T* pos = buffer<const T>(a.pos);
    const int32_t* tri = buffer<const int32_t>(a.tri);
    T* out = buffer<T>(a.out);
    int32_t* status = buffer<int32_t>(a.launch.status);
    const int64_t V = a.V, F = a.F, C = a.C, pixels = (int64_t)a.H * a.W, n = a.B * pixels;
    const int H = a.H, W = a.W;
    const bool batched = a.attr_batched;
    parallel_for(n, kPixelGrain, [&](int64_t begin, int64_t end, int) {
        for (int64_t bp = begin; bp < end; ++bp) {
            const int64_t f = pixel_triangle(rast + bp * 4, tri, V, F, status);
            const int64_t b = bp / pixels;
            interpolate_derivatives_pixel(f, tri, attr + (batched ? b * V * C : 0), pos + b * V * 4, C,
                                          bp % pixels, H, W, out + bp * 2 * C);
        }
    });
}

// Gradient to attr only: the derivatives also depend on pos, which gets no gradient here.
template <typename T>
void interpolate_derivatives_backward_t(const InterpolateArgs& a) {
    const T* rast = buffer<const T>(a.rast);
    const T* pos = buffer<const T>(a.pos);
    const int32_t* tri = buffer<const int32_t>(a.tri);
    const T* grad_out = buffer<const T>(a.grad_out);
    int32_t* status = buffer<int32_t>(a.launch.status);
    const int64_t V = a.V, F = a.F, C = a.C, pixels = (int64_t)a.H * a.W;
    const int H = a.H, W = a.W;
    scatter_by_image(a.B, V * C, a.attr_batched, buffer<T>(a.grad_attr), [&](int64_t b, double* acc) {
        for (int64_t p = 0; p < pixels; ++p) {
            const int64_t bp = b * pixels + p;
            const int64_t f = pixel_triangle(rast + bp * 4, tri, V, F, status);
            if (f < 0) continue;
            const int32_t* t = tri + f * 3;
            const BarycentricDerivatives d =
                triangle_barycentric_derivatives(pos + b * V * 4, t, (int)(p / W), (int)(p % W), H, W);
            const T* g = grad_out + bp * 2 * C;
            for (int64_t c = 0; c < C; ++c) {
                double w[3];
                attribute_derivative_weights(d, (double)g[2 * c], (double)g[2 * c + 1], w);
                for (int k = 0; k < 3; ++k) acc[(int64_t)t[k] * C + c] += w[k];
            }
        }
    });
}

template <typename T>
TrilinearTaps pixel_trilinear_taps(const TextureArgs& a, const T* uv, const T* uv_da) {
    const double da[4] = {(double)uv_da[0], (double)uv_da[1], (double)uv_da[2], (double)uv_da[3]};
    return trilinear_taps(uv[0], uv[1], da, a.tex_h, a.tex_w, a.max_level, a.mode);
}

// Trilinear lookup in the packed pyramid (render_math.h: trilinear_taps).
template <typename T>
void sample_texture_mip_forward_t(const TextureArgs& a) {
    const T* tex = buffer<const T>(a.tex);
    const T* uv = buffer<const T>(a.uv);
    const T* uv_da = buffer<const T>(a.uv_da);
    T* out = buffer<T>(a.out);
    int32_t* status = buffer<int32_t>(a.launch.status);
    const int64_t C = a.C, pixels = (int64_t)a.H * a.W;
    const int64_t texels = mip_level_offset(a.tex_h, a.tex_w, a.max_level + 1);
    parallel_for(a.B * pixels, kPixelGrain, [&](int64_t begin, int64_t end, int) {
        for (int64_t bp = begin; bp < end; ++bp) {
            T* o = out + bp * C;
            if (!finite_uv_and_derivatives(uv + bp * 2, uv_da + bp * 4)) {
                report_status(status, kBadTexCoord);
                for (int64_t c = 0; c < C; ++c) o[c] = T(0);
                continue;
            }
            const T* t = tex + (a.tex_batched ? (bp / pixels) * texels * C : 0);
            trilinear_sample_pixel(pixel_trilinear_taps(a, uv + bp * 2, uv_da + bp * 4), t, C, o);
        }
    });
}

template <typename T>
void sample_texture_mip_backward_t(const TextureArgs& a) {
    const T* tex = buffer<const T>(a.tex);
    const T* uv = buffer<const T>(a.uv);
    const T* uv_da = buffer<const T>(a.uv_da);
    const T* grad_out = buffer<const T>(a.grad_out);
    T* grad_uv = buffer<T>(a.grad_uv);
    T* grad_uv_da = buffer<T>(a.grad_uv_da);
    int32_t* status = buffer<int32_t>(a.launch.status);
    const int64_t C = a.C, pixels = (int64_t)a.H * a.W;
    const int64_t texels = mip_level_offset(a.tex_h, a.tex_w, a.max_level + 1);
    auto gather = [&](int64_t begin, int64_t end) {
        for (int64_t bp = begin; bp < end; ++bp) {
            T* gu = grad_uv + bp * 2;
            T* gda = grad_uv_da + bp * 4;
            gu[0] = gu[1] = gda[0] = gda[1] = gda[2] = gda[3] = T(0);
            if (!finite_uv_and_derivatives(uv + bp * 2, uv_da + bp * 4)) {
                report_status(status, kBadTexCoord);
                continue;
            }
            const T* t = tex + (a.tex_batched ? (bp / pixels) * texels * C : 0);
            double g_uv[2], g_da[4];
            trilinear_coordinate_grads(pixel_trilinear_taps(a, uv + bp * 2, uv_da + bp * 4), t,
                                       grad_out + bp * C, C, g_uv, g_da);
            for (int k = 0; k < 2; ++k) gu[k] = (T)g_uv[k];
            for (int k = 0; k < 4; ++k) gda[k] = (T)g_da[k];
        }
    };
    scatter_by_image(a.B, texels * C, a.tex_batched, buffer<T>(a.grad_tex), [&](int64_t b, double* acc) {
        for (int64_t p = 0; p < pixels; ++p) {
            const int64_t bp = b * pixels + p;
            if (!finite_uv_and_derivatives(uv + bp * 2, uv_da + bp * 4)) continue;  // reported by the gather
            const TrilinearTaps taps = pixel_trilinear_taps(a, uv + bp * 2, uv_da + bp * 4);
            const T* g = grad_out + bp * C;
            for (int k = 0; k < 8; ++k) {
                if (taps.w[k] == 0.0) continue;
                double* acc_k = acc + taps.index[k] * C;
                for (int64_t c = 0; c < C; ++c) acc_k[c] += taps.w[k] * (double)g[c];
            }
        }
    }, a.B * pixels, gather);
}

}  // namespace

NL3DMM_ENTRY_POINTS_BY_PRECISION

template <typename T>
void raster_coverage_t(const T* rast, T* out, int64_t pixels) {
    parallel_for(pixels, 1 << 14, [&](int64_t begin, int64_t end, int) {
        for (int64_t p = begin; p < end; ++p) out[p] = rast[p * 4 + 3] > T(0) ? T(1) : T(0);
    });
}

void raster_coverage(const void* rast, void* out, int64_t pixels, bool f64) {
    if (f64)
        raster_coverage_t(static_cast<const double*>(rast), static_cast<double*>(out), pixels);
    else
        raster_coverage_t(static_cast<const float*>(rast), static_cast<float*>(out), pixels);
}

bool all_finite(const void* data, int64_t n, bool f64) {
    return f64 ? all_finite_t(static_cast<const double*>(data), n) : all_finite_t(static_cast<const float*>(data), n);
}

}  // namespace cpu
}  // namespace nl3dmm

// ---- render_textured: interpolate -> sample_texture -> composite in one pass ----------------

namespace nl3dmm {
namespace cpu {
namespace {

template <typename T>
void render_textured_forward_t(const TexturedArgs& args) {
    const TexturedBuffers<T> a = textured_buffers<T>(args);
    parallel_for(a.B * a.pixels, kPixelGrain, [&](int64_t begin, int64_t end, int) {
        for (int64_t bp = begin; bp < end; ++bp) textured_forward_pixel(a, bp);
    });
}

// The gathers per pixel in parallel, alongside the texture gradient summed per image in raster
// order (scatter_by_image), as sample_texture's backward sums it.
template <typename T>
void render_textured_backward_t(const TexturedArgs& args) {
    const TexturedBuffers<T> a = textured_buffers<T>(args);
    scatter_by_image(a.B, a.texels * a.C, a.tex_batched, buffer<T>(args.grad_tex), [&](int64_t b, double* acc) {
        for (int64_t p = 0; p < a.pixels; ++p)
            textured_texture_grads(a, b * a.pixels + p, [acc](int64_t i, double v) { acc[i] += v; });
    }, a.B * a.pixels, [&](int64_t begin, int64_t end) {
        for (int64_t bp = begin; bp < end; ++bp) textured_gather_pixel(a, bp);
    });
}

}  // namespace

NL3DMM_TEXTURED_ENTRY_POINTS_BY_PRECISION

}  // namespace cpu
}  // namespace nl3dmm
