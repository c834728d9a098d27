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
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../host_shim.h"
#include "../render_cuda.h"

namespace {

using nl3dmm::InterpolateArgs;
using nl3dmm::LaunchArgs;
using nl3dmm::RasterizeArgs;
using nl3dmm::TextureArgs;

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

// The fields of each struct by name: buffers (uintptr_t), integers and flags.
struct Fields {
    std::map<std::string, uintptr_t*> addresses;
    std::map<std::string, int64_t*> wide;
    std::map<std::string, int*> narrow;
    std::map<std::string, bool*> flags;
};

void add_launch(Fields& f, LaunchArgs& l) {
    f.addresses = {{"status", &l.status}, {"scratch", &l.scratch}, {"stream", &l.stream}};
}

Fields fields_of(RasterizeArgs& a) {
    Fields f;
    add_launch(f, a.launch);
    f.addresses.insert({{"pos", &a.pos}, {"tri", &a.tri}, {"rast", &a.rast}, {"grad_rast", &a.grad_rast},
                        {"grad_pos", &a.grad_pos}});
    f.wide = {{"B", &a.B}, {"V", &a.V}, {"F", &a.F}};
    f.narrow = {{"H", &a.H}, {"W", &a.W}};
    f.flags = {{"f64", &a.f64}, {"cull", &a.cull}};
    return f;
}

Fields fields_of(InterpolateArgs& a) {
    Fields f;
    add_launch(f, a.launch);
    f.addresses.insert({{"attr", &a.attr}, {"rast", &a.rast}, {"tri", &a.tri}, {"out", &a.out},
                        {"grad_out", &a.grad_out}, {"grad_attr", &a.grad_attr}, {"grad_rast", &a.grad_rast}});
    f.wide = {{"B", &a.B}, {"V", &a.V}, {"F", &a.F}, {"C", &a.C}};
    f.narrow = {{"H", &a.H}, {"W", &a.W}};
    f.flags = {{"f64", &a.f64}, {"attr_batched", &a.attr_batched}};
    return f;
}

Fields fields_of(TextureArgs& a) {
    Fields f;
    add_launch(f, a.launch);
    f.addresses.insert({{"tex", &a.tex}, {"uv", &a.uv}, {"out", &a.out}, {"grad_out", &a.grad_out},
                        {"grad_tex", &a.grad_tex}, {"grad_uv", &a.grad_uv}});
    f.wide = {{"B", &a.B}, {"C", &a.C}};
    f.narrow = {{"tex_h", &a.tex_h}, {"tex_w", &a.tex_w}, {"H", &a.H}, {"W", &a.W}, {"mode", &a.mode}};
    f.flags = {{"f64", &a.f64}, {"tex_batched", &a.tex_batched}};
    return f;
}

template <typename Args>
void fill(Args& args, std::istream& lines, const std::string& dir, std::vector<Buffer>& buffers) {
    Fields f = fields_of(args);
    std::string key, value;
    while (lines >> key >> value) {
        if (value.size() > 1 && value[0] == '@') {
            auto it = f.addresses.find(key);
            if (it == f.addresses.end()) fail("no buffer field '" + key + "'");
            buffers.push_back(load(dir + "/" + value.substr(1) + ".bin"));
            *it->second = reinterpret_cast<uintptr_t>(buffers.back().storage.get());
            continue;
        }
        const int64_t number = std::stoll(value);
        if (auto it = f.wide.find(key); it != f.wide.end()) {
            *it->second = number;
        } else if (auto it = f.narrow.find(key); it != f.narrow.end()) {
            *it->second = (int)number;
        } else if (auto it = f.flags.find(key); it != f.flags.end()) {
            *it->second = number != 0;
        } else {
            fail("no integer field '" + key + "'");
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
    else fail("unknown entry point '" + op + "'");
    return 0;
}
