// What the CUDA half of the extension reports about the machine. Implemented in device.cu
// when nvcc built it, and in bindings.cpp as "not compiled" otherwise.
#pragma once

#include <string>

namespace nl3dmm {
namespace cuda {

// Number of usable CUDA devices, or -1 with `why` set when none can be used (no driver,
// driver too old, no device). Never throws and never aborts, so import stays safe.
int device_count(std::string& why);

}  // namespace cuda
}  // namespace nl3dmm
