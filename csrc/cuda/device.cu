// Device discovery for the CUDA backend. Statically linked against cudart, so the extension
// has no libcudart dependency and imports on machines without a GPU or driver.
#include <cuda_runtime.h>

#include "device.h"

namespace nl3dmm {
namespace cuda {

int device_count(std::string& why) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        why = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(err) + " (" +
              cudaGetErrorString(err) + ")";
        cudaGetLastError();  // clear the sticky error so later calls report their own
        return -1;
    }
    if (count == 0) {
        why = "no CUDA device is visible";
        return -1;
    }
    return count;
}

}  // namespace cuda
}  // namespace nl3dmm
