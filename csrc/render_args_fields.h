// The fields of each argument struct (render_args.h) by name, for the two places that fill a
// struct from named values: csrc/bindings.cpp (Python keyword arguments) and the host
// harness's driver (csrc/cuda/host/driver.cpp, a call file). Host code only.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>

#include "render_args.h"

namespace nl3dmm {

struct ArgFields {
    std::map<std::string, uintptr_t*> buffers;  // addresses
    std::map<std::string, int64_t*> sizes;
    std::map<std::string, int*> small;
    std::map<std::string, bool*> flags;

    // Sets field `key` to `value` (an address for a buffer field); throws std::invalid_argument
    // naming an unknown field.
    void set(const std::string& key, int64_t value) {
        if (auto it = buffers.find(key); it != buffers.end()) *it->second = (uintptr_t)value;
        else if (auto it = sizes.find(key); it != sizes.end()) *it->second = value;
        else if (auto it = small.find(key); it != small.end()) *it->second = (int)value;
        else if (auto it = flags.find(key); it != flags.end()) *it->second = value != 0;
        else throw std::invalid_argument("nl3dmm: no argument named '" + key + "'");
    }
    bool is_buffer(const std::string& key) const { return buffers.count(key) != 0; }
};

inline void add_launch_fields(ArgFields& f, LaunchArgs& l) {
    f.buffers = {{"status", &l.status}, {"scratch", &l.scratch}, {"stream", &l.stream}};
}

inline ArgFields fields_of(RasterizeArgs& a) {
    ArgFields f;
    add_launch_fields(f, a.launch);
    f.buffers.insert({{"pos", &a.pos}, {"tri", &a.tri}, {"rast", &a.rast}, {"grad_rast", &a.grad_rast},
                      {"grad_pos", &a.grad_pos}});
    f.sizes = {{"B", &a.B}, {"V", &a.V}, {"F", &a.F}};
    f.small = {{"H", &a.H}, {"W", &a.W}};
    f.flags = {{"f64", &a.f64}, {"cull", &a.cull}};
    return f;
}

inline ArgFields fields_of(InterpolateArgs& a) {
    ArgFields f;
    add_launch_fields(f, a.launch);
    f.buffers.insert({{"attr", &a.attr}, {"rast", &a.rast}, {"tri", &a.tri}, {"pos", &a.pos}, {"out", &a.out},
                      {"grad_out", &a.grad_out}, {"grad_attr", &a.grad_attr}, {"grad_rast", &a.grad_rast}});
    f.sizes = {{"B", &a.B}, {"V", &a.V}, {"F", &a.F}, {"C", &a.C}};
    f.small = {{"H", &a.H}, {"W", &a.W}};
    f.flags = {{"f64", &a.f64}, {"attr_batched", &a.attr_batched}};
    return f;
}

inline ArgFields fields_of(TextureArgs& a) {
    ArgFields f;
    add_launch_fields(f, a.launch);
    f.buffers.insert({{"tex", &a.tex}, {"uv", &a.uv}, {"uv_da", &a.uv_da}, {"out", &a.out},
                      {"grad_out", &a.grad_out}, {"grad_tex", &a.grad_tex}, {"grad_uv", &a.grad_uv},
                      {"grad_uv_da", &a.grad_uv_da}});
    f.sizes = {{"B", &a.B}, {"C", &a.C}};
    f.small = {{"tex_h", &a.tex_h}, {"tex_w", &a.tex_w}, {"H", &a.H}, {"W", &a.W}, {"mode", &a.mode},
               {"max_level", &a.max_level}};
    f.flags = {{"f64", &a.f64}, {"tex_batched", &a.tex_batched}};
    return f;
}

inline ArgFields fields_of(AntialiasArgs& a) {
    ArgFields f;
    add_launch_fields(f, a.launch);
    f.buffers.insert({{"color", &a.color}, {"rast", &a.rast}, {"pos", &a.pos}, {"tri", &a.tri},
                      {"topology", &a.topology}, {"out", &a.out}, {"grad_out", &a.grad_out},
                      {"grad_color", &a.grad_color}, {"grad_pos", &a.grad_pos}});
    f.sizes = {{"B", &a.B}, {"V", &a.V}, {"F", &a.F}, {"C", &a.C}};
    f.small = {{"H", &a.H}, {"W", &a.W}};
    f.flags = {{"f64", &a.f64}};
    return f;
}

inline ArgFields fields_of(TexturedArgs& a) {
    ArgFields f;
    add_launch_fields(f, a.launch);
    f.buffers.insert({{"rast", &a.rast}, {"tri", &a.tri}, {"attr", &a.attr}, {"tex", &a.tex},
                      {"background", &a.background}, {"mask", &a.mask}, {"out", &a.out},
                      {"grad_out", &a.grad_out}, {"grad_tex", &a.grad_tex},
                      {"grad_background", &a.grad_background}, {"grad_mask", &a.grad_mask},
                      {"grad_rast", &a.grad_rast}, {"grad_uv", &a.grad_uv}});
    f.sizes = {{"B", &a.B}, {"V", &a.V}, {"F", &a.F}, {"C", &a.C}};
    f.small = {{"tex_h", &a.tex_h}, {"tex_w", &a.tex_w}, {"H", &a.H}, {"W", &a.W}, {"mode", &a.mode}};
    f.flags = {{"f64", &a.f64}, {"attr_batched", &a.attr_batched}, {"tex_batched", &a.tex_batched}};
    return f;
}

}  // namespace nl3dmm
