// pybind11 module nl3dmm._C. It deliberately does not link against torch: kernels take raw
// data pointers (tensor.data_ptr()), sizes and a dtype name, and the Python layer owns the
// tensors, validates them and keeps them alive. That keeps the build independent of the
// torch ABI and of whether torch was built with CUDA.
#include <omp.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cpu/render_cpu.h"
#ifdef NL3DMM_WITH_CUDA
#include "cuda/device.h"
#include "cuda/render_cuda.h"
#endif

namespace py = pybind11;
using nl3dmm::cpu::interpolate_backward;
using nl3dmm::cpu::interpolate_forward;
using nl3dmm::cpu::rasterize_backward;
using nl3dmm::cpu::rasterize_forward;
using nl3dmm::cpu::sample_texture_backward;
using nl3dmm::cpu::sample_texture_forward;

namespace {

template <typename T>
T* ptr(uintptr_t p) {
    return reinterpret_cast<T*>(p);
}

// Calls fn<float> or fn<double> by dtype name, without the GIL.
template <typename Fn>
void by_dtype(const std::string& dtype, Fn&& fn) {
    py::gil_scoped_release release;
    if (dtype == "float32") {
        fn(float{});
    } else if (dtype == "float64") {
        fn(double{});
    } else {
        throw std::invalid_argument("nl3dmm._C: unsupported dtype '" + dtype +
                                    "' (expected float32 or float64)");
    }
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "nl3dmm rendering kernels (CPU/OpenMP, and CUDA when built with nvcc)";

    m.def("rasterize_forward",
          [](const std::string& dtype, uintptr_t pos, uintptr_t tri, int64_t B, int64_t V,
             int64_t F, int H, int W, bool cull, uintptr_t rast) {
              by_dtype(dtype, [&](auto t) {
                  using T = decltype(t);
                  rasterize_forward<T>(ptr<const T>(pos), ptr<const int32_t>(tri), B, V, F, H, W,
                                       cull, ptr<T>(rast));
              });
          });
    m.def("rasterize_backward",
          [](const std::string& dtype, uintptr_t pos, uintptr_t tri, uintptr_t rast,
             uintptr_t grad_rast, int64_t B, int64_t V, int64_t F, int H, int W,
             uintptr_t grad_pos) {
              by_dtype(dtype, [&](auto t) {
                  using T = decltype(t);
                  rasterize_backward<T>(ptr<const T>(pos), ptr<const int32_t>(tri),
                                        ptr<const T>(rast), ptr<const T>(grad_rast), B, V, F, H, W,
                                        ptr<T>(grad_pos));
              });
          });
    m.def("interpolate_forward",
          [](const std::string& dtype, uintptr_t attr, bool attr_batched, uintptr_t rast,
             uintptr_t tri, int64_t B, int64_t V, int64_t C, int H, int W, uintptr_t out) {
              by_dtype(dtype, [&](auto t) {
                  using T = decltype(t);
                  interpolate_forward<T>(ptr<const T>(attr), attr_batched, ptr<const T>(rast),
                                         ptr<const int32_t>(tri), B, V, C, H, W, ptr<T>(out));
              });
          });
    m.def("interpolate_backward",
          [](const std::string& dtype, uintptr_t attr, bool attr_batched, uintptr_t rast,
             uintptr_t tri, uintptr_t grad_out, int64_t B, int64_t V, int64_t C, int H, int W,
             uintptr_t grad_attr, uintptr_t grad_rast) {
              by_dtype(dtype, [&](auto t) {
                  using T = decltype(t);
                  interpolate_backward<T>(ptr<const T>(attr), attr_batched, ptr<const T>(rast),
                                          ptr<const int32_t>(tri), ptr<const T>(grad_out), B, V,
                                          C, H, W, ptr<T>(grad_attr), ptr<T>(grad_rast));
              });
          });
    m.def("sample_texture_forward",
          [](const std::string& dtype, uintptr_t tex, bool tex_batched, uintptr_t uv, int64_t B,
             int tex_h, int tex_w, int64_t C, int H, int W, int mode, uintptr_t out) {
              by_dtype(dtype, [&](auto t) {
                  using T = decltype(t);
                  sample_texture_forward<T>(ptr<const T>(tex), tex_batched, ptr<const T>(uv), B,
                                            tex_h, tex_w, C, H, W, mode, ptr<T>(out));
              });
          });
    m.def("sample_texture_backward",
          [](const std::string& dtype, uintptr_t tex, bool tex_batched, uintptr_t uv,
             uintptr_t grad_out, int64_t B, int tex_h, int tex_w, int64_t C, int H, int W,
             int mode, uintptr_t grad_tex, uintptr_t grad_uv) {
              by_dtype(dtype, [&](auto t) {
                  using T = decltype(t);
                  sample_texture_backward<T>(ptr<const T>(tex), tex_batched, ptr<const T>(uv),
                                             ptr<const T>(grad_out), B, tex_h, tex_w, C, H, W,
                                             mode, ptr<T>(grad_tex), ptr<T>(grad_uv));
              });
          });

    m.def("get_num_threads", []() { return omp_get_max_threads(); },
          "OpenMP threads the CPU kernels use.");
    m.def("set_num_threads", [](int n) {
        if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
        omp_set_num_threads(n);
    }, "Set the OpenMP threads the CPU kernels use (results do not depend on it).");

#ifdef NL3DMM_WITH_CUDA
    // CUDA kernels: same arguments as the CPU ones plus scratch/stream; `f64` picks double.
    // Launches are asynchronous on `stream`, so the GIL is not held for them either.
    py::module_ cu = m.def_submodule("cuda", "CUDA kernels (raw device pointers, torch stream)");
    cu.def("rasterize_forward", &nl3dmm::cuda::rasterize_forward, py::call_guard<py::gil_scoped_release>());
    cu.def("rasterize_backward", &nl3dmm::cuda::rasterize_backward, py::call_guard<py::gil_scoped_release>());
    cu.def("interpolate_forward", &nl3dmm::cuda::interpolate_forward, py::call_guard<py::gil_scoped_release>());
    cu.def("interpolate_backward", &nl3dmm::cuda::interpolate_backward, py::call_guard<py::gil_scoped_release>());
    cu.def("sample_texture_forward", &nl3dmm::cuda::sample_texture_forward, py::call_guard<py::gil_scoped_release>());
    cu.def("sample_texture_backward", &nl3dmm::cuda::sample_texture_backward, py::call_guard<py::gil_scoped_release>());
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
