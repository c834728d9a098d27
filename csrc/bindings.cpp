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
#include "cpu/work_pool.h"
#include "render_args.h"
#include "render_args_fields.h"
#include "render_math.h"
#ifdef NL3DMM_WITH_CUDA
#include "cuda/device.h"
#include "cuda/render_cuda.h"
#endif

namespace py = pybind11;

namespace {

// Checks no kernel could make for itself.
void check_args(const nl3dmm::LaunchArgs& launch) {
    if (launch.status == 0) throw std::invalid_argument("nl3dmm._C: a status buffer (int32, zeroed) is required");
}
void check_args(const nl3dmm::RasterizeArgs& a) { check_args(a.launch); }
void check_args(const nl3dmm::InterpolateArgs& a) { check_args(a.launch); }
void check_args(const nl3dmm::AntialiasArgs& a) { check_args(a.launch); }
void check_args(const nl3dmm::TexturedArgs& a) {
    check_args(a.launch);
    if (a.mode < nl3dmm::kClamp || a.mode > nl3dmm::kWrap)
        throw std::invalid_argument("nl3dmm._C: boundary mode must be 0, 1 or 2, got " + std::to_string(a.mode));
}
void check_args(const nl3dmm::TextureArgs& a) {
    check_args(a.launch);
    if (a.mode < nl3dmm::kClamp || a.mode > nl3dmm::kWrap)
        throw std::invalid_argument("nl3dmm._C: boundary mode must be 0, 1 or 2, got " + std::to_string(a.mode));
    // Level max_level of the pyramid must exist: at most floor(log2(max(tex_h, tex_w))).
    if (a.max_level < 0 || (a.max_level > 0 && ((a.tex_h | a.tex_w) >> a.max_level) == 0))
        throw std::invalid_argument("nl3dmm._C: max_level " + std::to_string(a.max_level) +
                                    " is outside the texture's pyramid");
}

// The one place where Python arguments become the argument structs of render_args.h: entry
// point `fn` becomes a function of keyword arguments only, each naming a field of its struct
// (render_args_fields.h; buffers by address, tensor.data_ptr()). Both the CPU functions
// (nl3dmm._C) and the CUDA ones (nl3dmm._C.cuda) are registered through it, so the two ABIs
// take the same arguments. Fields not given stay 0 (backward buffers in a forward call,
// scratch and stream on the CPU); an unknown name is a ValueError.
template <typename Args>
void def_op(py::module_& m, const char* name, void (*fn)(const Args&)) {
    Args probe;
    std::string doc = std::string(name) + "(**fields): fields";
    for (const auto& table : {nl3dmm::fields_of(probe)}) {
        for (const auto& f : table.buffers) doc += " " + f.first;
        for (const auto& f : table.sizes) doc += " " + f.first;
        for (const auto& f : table.small) doc += " " + f.first;
        for (const auto& f : table.flags) doc += " " + f.first;
    }
    m.def(name, [fn](py::kwargs kwargs) {
        Args args;
        nl3dmm::ArgFields fields = nl3dmm::fields_of(args);
        for (auto item : kwargs) fields.set(py::cast<std::string>(item.first), py::cast<int64_t>(item.second));
        check_args(args);
        py::gil_scoped_release release;
        fn(args);
    }, doc.c_str());
}

// The fourteen entry points of one backend namespace (nl3dmm::cpu or nl3dmm::cuda).
#define NL3DMM_DEF_OPS(module, ns)                                                             \
    def_op(module, "rasterize_forward", &ns::rasterize_forward);                               \
    def_op(module, "rasterize_backward", &ns::rasterize_backward);                             \
    def_op(module, "interpolate_forward", &ns::interpolate_forward);                           \
    def_op(module, "interpolate_backward", &ns::interpolate_backward);                         \
    def_op(module, "sample_texture_forward", &ns::sample_texture_forward);                     \
    def_op(module, "sample_texture_backward", &ns::sample_texture_backward);                   \
    def_op(module, "interpolate_derivatives_forward", &ns::interpolate_derivatives_forward);   \
    def_op(module, "interpolate_derivatives_backward", &ns::interpolate_derivatives_backward); \
    def_op(module, "sample_texture_mip_forward", &ns::sample_texture_mip_forward);             \
    def_op(module, "sample_texture_mip_backward", &ns::sample_texture_mip_backward);           \
    def_op(module, "antialias_forward", &ns::antialias_forward);                               \
    def_op(module, "antialias_backward", &ns::antialias_backward);                             \
    def_op(module, "render_textured_forward", &ns::render_textured_forward);                   \
    def_op(module, "render_textured_backward", &ns::render_textured_backward)

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "nl3dmm rendering kernels (CPU/OpenMP, and CUDA when built with nvcc)";
    m.attr("STATUS_BAD_VERTEX_INDEX") = (int)nl3dmm::kBadVertexIndex;
    m.attr("STATUS_BAD_TRIANGLE_ID") = (int)nl3dmm::kBadTriangleId;
    m.attr("STATUS_BAD_TEX_COORD") = (int)nl3dmm::kBadTexCoord;
    m.attr("STATUS_BAD_NEIGHBOUR") = (int)nl3dmm::kBadNeighbour;
    // Scratch of the CUDA entry points: rasterize_forward needs one z-buffer key per pixel,
    // each backward one fixed-point sum per gradient value it scatters.
    m.attr("ZBUF_BYTES_PER_PIXEL") = nl3dmm::kZbufBytesPerPixel;
    m.attr("SUM_BYTES_PER_VALUE") = nl3dmm::kSumBytesPerValue;

    NL3DMM_DEF_OPS(m, nl3dmm::cpu);

    m.def("get_num_threads", []() { return omp_get_max_threads(); },
          "Threads the CPU kernels' pool uses (OpenMP's max-threads setting).");
    m.def("set_num_threads", [](int n) {
        if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
        omp_set_num_threads(n);
    }, "Set OpenMP's max-threads setting, which the CPU kernels' pool follows (results do not depend on it).");

    m.def("pool_counts", []() {
        const nl3dmm::cpu::PoolCounts c = nl3dmm::cpu::pool_counts();
        return py::make_tuple(c.team, c.pool);
    }, "(team, pool): multi-threaded calls of the CPU kernels so far, on the caller's OpenMP team "
       "(borrowed while its threads are running) and on the kernels' own pool.");

    m.def("raster_coverage", [](int64_t rast, int64_t out, int64_t pixels, bool f64) {
        if (pixels < 0) throw std::invalid_argument("raster_coverage: pixels must be >= 0, got " + std::to_string(pixels));
        py::gil_scoped_release release;
        nl3dmm::cpu::raster_coverage(reinterpret_cast<const void*>(rast), reinterpret_cast<void*>(out), pixels, f64);
    }, py::arg("rast"), py::arg("out"), py::arg("pixels"), py::arg("f64"),
          "out[p] = 1 where raster pixel p (rast: pixels x 4 values) has a triangle, else 0.");
    m.def("all_finite", [](int64_t data, int64_t n, bool f64) {
        if (n < 0) throw std::invalid_argument("all_finite: n must be >= 0, got " + std::to_string(n));
        py::gil_scoped_release release;
        return nl3dmm::cpu::all_finite(reinterpret_cast<const void*>(data), n, f64);
    }, py::arg("data"), py::arg("n"), py::arg("f64"),
          "Whether the n float32 (float64 when f64) values at address data are all finite.");

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
