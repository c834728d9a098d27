// The CUDA kernels on the CPU, as a command: one entry point of render_cuda.cu (compiled by
// g++ through host_shim.h) called with the buffers of a directory, which are written back
// afterwards. tests/cuda_host.py builds it (plain, ASan+UBSan, TSan, and mutants) and drives it
// one call at a time; a sanitizer run is then just another process with its own runtime.
//
//     driver [--workers N] [--chunk C] DIR
//
// DIR/call.txt: the entry point's name on the first line, then one `field value` per line,
// where a value `@name` is the address of buffer DIR/name.bin (raw bytes, loaded into 8-byte
// aligned memory) and any other value is an integer. Every buffer is written back to its
// file after the call. Exit status 0 on success, 2 on bad input (message on stderr), 3 when the
// entry point threw (message on stderr).
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "../host_shim.h"
#include "../../render_args_fields.h"
#include "../render_cuda.h"

namespace {

using nl3dmm::ArgFields;
using nl3dmm::fields_of;

struct Buffer {
    std::string path;
    size_t bytes = 0;
    std::unique_ptr<uint64_t[]> storage;  // 8-byte aligned; atomics need it
};

[[noreturn]] void fail(const std::string& message) {
    std::cerr << "driver: " << message << "\n";
    std::exit(2);
}

Buffer load(const std::string& path) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) fail("cannot read " + path);
    Buffer b;
    b.path = path;
    b.bytes = (size_t)in.tellg();
    b.storage.reset(new uint64_t[b.bytes / 8 + 1]);
    in.seekg(0);
    in.read(reinterpret_cast<char*>(b.storage.get()), (std::streamsize)b.bytes);
    return b;
}

void save(const Buffer& b) {
    std::ofstream out(b.path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(b.storage.get()), (std::streamsize)b.bytes);
    if (!out) fail("cannot write " + b.path);
}

template <typename Args>
void fill(Args& args, std::istream& lines, const std::string& dir, std::vector<Buffer>& buffers) {
    ArgFields fields = fields_of(args);
    std::string key, value;
    while (lines >> key >> value) {
        try {
            if (value.size() > 1 && value[0] == '@') {
                if (!fields.is_buffer(key)) fail("no buffer field '" + key + "'");
                buffers.push_back(load(dir + "/" + value.substr(1) + ".bin"));
                fields.set(key, (int64_t)reinterpret_cast<uintptr_t>(buffers.back().storage.get()));
            } else {
                fields.set(key, std::stoll(value));
            }
        } catch (const std::exception& e) {
            fail(std::string("field '") + key + "': " + e.what());
        }
    }
}

template <typename Args>
void call(void (*entry)(const Args&), std::istream& lines, const std::string& dir) {
    std::vector<Buffer> buffers;
    buffers.reserve(16);  // addresses handed out must stay put
    Args args;
    fill(args, lines, dir, buffers);
    try {
        entry(args);
    } catch (const std::exception& e) {
        std::cerr << "driver: entry point threw: " << e.what() << "\n";
        std::exit(3);
    }
    for (const Buffer& b : buffers) save(b);
}

}  // namespace

int main(int argc, char** argv) {
    auto& config = nl3dmm::host::launch_config();
    std::string dir;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--workers" && i + 1 < argc) {
            config.workers = std::atoi(argv[++i]);
        } else if (arg == "--chunk" && i + 1 < argc) {
            config.chunk = std::atoll(argv[++i]);
        } else if (dir.empty()) {
            dir = arg;
        } else {
            fail("usage: driver [--workers N] [--chunk C] DIR");
        }
    }
    if (dir.empty() || config.workers < 1 || config.chunk < 1) fail("usage: driver [--workers N>=1] [--chunk C>=1] DIR");
    std::ifstream file(dir + "/call.txt");
    if (!file) fail("cannot read " + dir + "/call.txt");
    std::string op;
    file >> op;
    namespace cu = nl3dmm::cuda;
    if (op == "rasterize_forward") call(&cu::rasterize_forward, file, dir);
    else if (op == "rasterize_backward") call(&cu::rasterize_backward, file, dir);
    else if (op == "interpolate_forward") call(&cu::interpolate_forward, file, dir);
    else if (op == "interpolate_backward") call(&cu::interpolate_backward, file, dir);
    else if (op == "sample_texture_forward") call(&cu::sample_texture_forward, file, dir);
    else if (op == "sample_texture_backward") call(&cu::sample_texture_backward, file, dir);
    else if (op == "antialias_forward") call(&cu::antialias_forward, file, dir);
    else if (op == "antialias_backward") call(&cu::antialias_backward, file, dir);
    else if (op == "interpolate_derivatives_forward") call(&cu::interpolate_derivatives_forward, file, dir);
    else if (op == "interpolate_derivatives_backward") call(&cu::interpolate_derivatives_backward, file, dir);
    else if (op == "sample_texture_mip_forward") call(&cu::sample_texture_mip_forward, file, dir);
    else if (op == "sample_texture_mip_backward") call(&cu::sample_texture_mip_backward, file, dir);
    else if (op == "render_textured_forward") call(&cu::render_textured_forward, file, dir);
    else if (op == "render_textured_backward") call(&cu::render_textured_backward, file, dir);
    else fail("unknown entry point '" + op + "'");
    return 0;
}
