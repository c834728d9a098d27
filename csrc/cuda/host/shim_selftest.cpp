// Checks of host_shim.h itself, run by tests/test_cuda_host.py: launch limits refused as a
// device refuses them, and every thread of a multi-dimensional launch run exactly once with
// the right built-in variables, for several worker counts and chunk sizes.
#include <cstdio>
#include <vector>

#include "../host_shim.h"

namespace {

__global__ void count_threads(int* seen, unsigned width) {
    const unsigned bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const unsigned tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    atomicOr(seen + 2 + bx * width + tx, 1);
    atomicMax(seen + 1, (int)(bx * width + tx));
}

int failures = 0;

void expect(bool ok, const char* what) {
    if (!ok) {
        std::printf("FAILED: %s\n", what);
        ++failures;
    }
}

}  // namespace

int main() {
    const dim3 grid(3, 2, 2), block(4, 3, 2);
    const unsigned width = block.x * block.y * block.z, total = grid.x * grid.y * grid.z * width;
    for (int workers : {1, 3}) {
        for (int64_t chunk : {1, 5, 1000}) {
            nl3dmm::host::launch_config() = {workers, chunk};
            std::vector<int> seen(2 + total, 0);
            nl3dmm::host::launch(count_threads, grid, block, nullptr, seen.data(), width);
            expect(cudaGetLastError() == cudaSuccess, "valid launch reports no error");
            int ran = 0;
            for (unsigned i = 0; i < total; ++i) ran += seen[2 + i];
            expect(ran == (int)total && seen[1] == (int)total - 1, "every thread runs exactly once");
        }
    }
    std::vector<int> seen(64, 0);
    nl3dmm::host::launch(count_threads, dim3(1), dim3(2048), nullptr, seen.data(), 1u);
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "2048-thread block refused");
    nl3dmm::host::launch(count_threads, dim3(1, 70000), dim3(1), nullptr, seen.data(), 1u);
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid.y of 70000 refused");
    nl3dmm::host::launch(count_threads, dim3(0), dim3(32), nullptr, seen.data(), 1u);
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "empty grid refused");
    expect(cudaGetLastError() == cudaSuccess, "cudaGetLastError clears the error");
    int ran = 0;
    for (int v : seen) ran += v;
    expect(ran == 0, "a refused launch runs nothing");
    return failures == 0 ? 0 : 1;
}
