// pybind11 module nl3dmm._C. It deliberately does not link against torch: kernels take raw
// data pointers (tensor.data_ptr()), sizes and an f64 flag, and the Python layer owns the
// tensors, validates them and keeps them alive. That keeps the build independent of the
// torch ABI and of whether torch was built with CUDA.
#include <omp.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cpu/render_cpu.h"
#include "render_args.h"
#include "render_math.h"
#ifdef NL3DMM_WITH_CUDA
#include "cuda/device.h"
#include "cuda/render_cuda.h"
#endif

namespace py = pybind11;
using nl3dmm::InterpolateArgs;
using nl3dmm::LaunchArgs;
using nl3dmm::RasterizeArgs;
using nl3dmm::TextureArgs;

namespace {

// The one place where Python arguments become the argument structs of render_args.h. Both
// the CPU functions (module nl3dmm._C) and the CUDA ones (nl3dmm._C.cuda) are registered
// through these, so the two ABIs take the same keyword arguments; the fields an entry point
// does not use (backward buffers in a forward call, scratch and stream on the CPU) default to 0.
// Buffers are addresses (tensor.data_ptr()).

LaunchArgs launch_args(uintptr_t status, uintptr_t scratch, uintptr_t stream) {
    if (status == 0) throw std::invalid_argument("nl3dmm._C: a status buffer (int32, zeroed) is required");
    LaunchArgs l;
    l.status = status;
    l.scratch = scratch;
    l.stream = stream;
    return l;
}

#define NL3DMM_LAUNCH_ARGS py::arg("status"), py::arg("scratch") = 0, py::arg("stream") = 0

template <typename Fn>
void def_rasterize(py::module_& m, const char* name, Fn fn) {
    m.def(name,
          [fn](bool f64, uintptr_t pos, uintptr_t tri, int64_t B, int64_t V, int64_t F, int H, int W,
               bool cull, uintptr_t rast, uintptr_t grad_rast, uintptr_t grad_pos, uintptr_t status,
               uintptr_t scratch, uintptr_t stream) {
              RasterizeArgs a;
              a.f64 = f64;
              a.pos = pos;
              a.tri = tri;
              a.B = B;
              a.V = V;
              a.F = F;
              a.H = H;
              a.W = W;
              a.cull = cull;
              a.rast = rast;
              a.grad_rast = grad_rast;
              a.grad_pos = grad_pos;
              a.launch = launch_args(status, scratch, stream);
              py::gil_scoped_release release;
              fn(a);
          },
          py::kw_only(), py::arg("f64"), py::arg("pos"), py::arg("tri"), py::arg("B"), py::arg("V"),
          py::arg("F"), py::arg("H"), py::arg("W"), py::arg("cull") = false, py::arg("rast"),
          py::arg("grad_rast") = 0, py::arg("grad_pos") = 0, NL3DMM_LAUNCH_ARGS);
}

template <typename Fn>
void def_interpolate(py::module_& m, const char* name, Fn fn) {
    m.def(name,
          [fn](bool f64, uintptr_t attr, bool attr_batched, uintptr_t rast, uintptr_t tri, int64_t B,
               int64_t V, int64_t F, int64_t C, int H, int W, uintptr_t out, uintptr_t grad_out,
               uintptr_t grad_attr, uintptr_t grad_rast, uintptr_t status, uintptr_t scratch,
               uintptr_t stream) {
              InterpolateArgs a;
              a.f64 = f64;
              a.attr = attr;
              a.attr_batched = attr_batched;
              a.rast = rast;
              a.tri = tri;
              a.B = B;
              a.V = V;
              a.F = F;
              a.C = C;
              a.H = H;
              a.W = W;
              a.out = out;
              a.grad_out = grad_out;
              a.grad_attr = grad_attr;
              a.grad_rast = grad_rast;
              a.launch = launch_args(status, scratch, stream);
              py::gil_scoped_release release;
              fn(a);
          },
          py::kw_only(), py::arg("f64"), py::arg("attr"), py::arg("attr_batched"), py::arg("rast"),
          py::arg("tri"), py::arg("B"), py::arg("V"), py::arg("F"), py::arg("C"), py::arg("H"),
          py::arg("W"), py::arg("out") = 0, py::arg("grad_out") = 0, py::arg("grad_attr") = 0,
          py::arg("grad_rast") = 0, NL3DMM_LAUNCH_ARGS);
}

template <typename Fn>
void def_texture(py::module_& m, const char* name, Fn fn) {
    m.def(name,
          [fn](bool f64, uintptr_t tex, bool tex_batched, uintptr_t uv, int64_t B, int tex_h, int tex_w,
               int64_t C, int H, int W, int mode, uintptr_t out, uintptr_t grad_out, uintptr_t grad_tex,
               uintptr_t grad_uv, uintptr_t status, uintptr_t scratch, uintptr_t stream) {
              if (mode < nl3dmm::kClamp || mode > nl3dmm::kWrap)
                  throw std::invalid_argument("nl3dmm._C: boundary mode must be 0, 1 or 2, got " +
                                              std::to_string(mode));
              TextureArgs a;
              a.f64 = f64;
              a.tex = tex;
              a.tex_batched = tex_batched;
              a.uv = uv;
              a.B = B;
              a.tex_h = tex_h;
              a.tex_w = tex_w;
              a.C = C;
              a.H = H;
              a.W = W;
              a.mode = mode;
              a.out = out;
              a.grad_out = grad_out;
              a.grad_tex = grad_tex;
              a.grad_uv = grad_uv;
              a.launch = launch_args(status, scratch, stream);
              py::gil_scoped_release release;
              fn(a);
          },
          py::kw_only(), py::arg("f64"), py::arg("tex"), py::arg("tex_batched"), py::arg("uv"),
          py::arg("B"), py::arg("tex_h"), py::arg("tex_w"), py::arg("C"), py::arg("H"), py::arg("W"),
          py::arg("mode"), py::arg("out") = 0, py::arg("grad_out") = 0, py::arg("grad_tex") = 0,
          py::arg("grad_uv") = 0, NL3DMM_LAUNCH_ARGS);
}

// The six entry points of one backend namespace (nl3dmm::cpu or nl3dmm::cuda).
#define NL3DMM_DEF_OPS(module, ns)                                                   \
    def_rasterize(module, "rasterize_forward", &ns::rasterize_forward);             \
    def_rasterize(module, "rasterize_backward", &ns::rasterize_backward);           \
    def_interpolate(module, "interpolate_forward", &ns::interpolate_forward);       \
    def_interpolate(module, "interpolate_backward", &ns::interpolate_backward);     \
    def_texture(module, "sample_texture_forward", &ns::sample_texture_forward);     \
    def_texture(module, "sample_texture_backward", &ns::sample_texture_backward)

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "nl3dmm rendering kernels (CPU/OpenMP, and CUDA when built with nvcc)";
    m.attr("STATUS_BAD_VERTEX_INDEX") = (int)nl3dmm::kBadVertexIndex;
    m.attr("STATUS_BAD_TRIANGLE_ID") = (int)nl3dmm::kBadTriangleId;
    m.attr("STATUS_BAD_TEX_COORD") = (int)nl3dmm::kBadTexCoord;
    // Scratch of the CUDA entry points: rasterize_forward needs one z-buffer key per pixel,
    // each backward one fixed-point sum per gradient value it scatters.
    m.attr("ZBUF_BYTES_PER_PIXEL") = nl3dmm::kZbufBytesPerPixel;
    m.attr("SUM_BYTES_PER_VALUE") = nl3dmm::kSumBytesPerValue;

    NL3DMM_DEF_OPS(m, nl3dmm::cpu);

    m.def("get_num_threads", []() { return omp_get_max_threads(); },
          "OpenMP threads the CPU kernels use.");
    m.def("set_num_threads", [](int n) {
        if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
        omp_set_num_threads(n);
    }, "Set the OpenMP threads the CPU kernels use (results do not depend on it).");

#ifdef NL3DMM_WITH_CUDA
    // CUDA kernels: the same keyword arguments, device addresses, plus scratch and stream.
    // Launches are asynchronous on `stream`; the GIL is released for them too.
    py::module_ cu = m.def_submodule("cuda", "CUDA kernels (raw device pointers, torch stream)");
    NL3DMM_DEF_OPS(cu, nl3dmm::cuda);
#endif

    // (compiled, device_count, reason): a machine without a GPU or driver answers instead of
    // crashing, so `import nl3dmm` works everywhere.
    m.def("cuda_status", []() {
#ifdef NL3DMM_WITH_CUDA
        std::string why;
        int n = nl3dmm::cuda::device_count(why);
        return py::make_tuple(true, n < 0 ? 0 : n, why);
#else
        return py::make_tuple(false, 0, std::string("the extension was built without nvcc"));
#endif
    });
}
