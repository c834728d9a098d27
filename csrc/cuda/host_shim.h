// Host execution of the CUDA sources: what render_cuda.cu needs from CUDA, in plain C++20, so
// that g++ compiles the unmodified file and the kernels run on CPU threads (launch.h picks this
// header when the compiler is not nvcc). Used by the test harness only (csrc/cuda/host/); the
// real extension is always built by nvcc against the CUDA runtime.
//
// Execution model. A launch of G blocks of N threads is G * N calls of the kernel function,
// each with its own thread-local threadIdx / blockIdx (and blockDim / gridDim). The calls are
// dealt round-robin to `workers` OS threads in chunks of `chunk` consecutive linear thread ids;
// the OS interleaves the workers, so the order in which atomics land varies with the settings
// and from run to run. Only thread creation and join order the workers: nothing a GPU would
// not order either. The launch returns when every call has returned (a stream is a
// synchronous queue here).
// That is a legal CUDA schedule only because no kernel here waits for another thread: there is
// no __syncthreads, no shared memory and no warp primitive.
//
// Growing it for __syncthreads and __shared__ memory: a block's threads must then all be alive
// at once. Run each block as one unit: N fibers (ucontext / boost.context; cheap, one OS
// thread per block) or N OS threads, and make __syncthreads() an arrive_and_wait on a
// std::barrier of N shared by the block; __shared__ variables become one instance per block
// (a per-block arena that `__shared__` expands to a thread-local pointer into). Warp
// shuffles and votes would need the same barrier per 32 threads plus an exchange buffer.
// Keep chunking across blocks, never inside one.
//
// What it checks like a device: grid and block limits (cudaErrorInvalidConfiguration from
// cudaGetLastError, as after a bad <<<>>>). What it cannot show: device arithmetic (nvcc's
// rounding and --fmad), memory ordering beyond what C++ atomics give, register limits, the
// interplay with torch's streams, and speed.
#pragma once

#if __cplusplus < 202002L
#error "host_shim.h needs C++20 (std::atomic_ref): compile with -std=c++20"
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <tuple>
#include <vector>

#define NL_CUDA_HOST_SHIM 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

using cudaStream_t = struct HostStream*;

enum cudaError_t : int {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorInvalidConfiguration = 9,
};

inline const char* cudaGetErrorName(cudaError_t err) {
    switch (err) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
        case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    }
    return "cudaErrorUnknown";
}

inline const char* cudaGetErrorString(cudaError_t err) {
    switch (err) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    }
    return "unknown error";
}

namespace nl3dmm {
namespace host {

struct LaunchConfig {
    int workers = 1;     // OS threads per launch
    int64_t chunk = 64;  // consecutive thread ids a worker takes at a time
};

inline LaunchConfig& launch_config() {
    static LaunchConfig config;
    return config;
}

inline std::atomic<int>& last_error() {
    static std::atomic<int> error{cudaSuccess};
    return error;
}

// A device's limits (compute capability 8.x / 9.x).
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockDim[3] = {1024, 1024, 64};
constexpr unsigned kMaxGridDim[3] = {0x7fffffffu, 65535, 65535};

inline bool valid_configuration(dim3 grid, dim3 block) {
    const unsigned g[3] = {grid.x, grid.y, grid.z}, b[3] = {block.x, block.y, block.z};
    for (int d = 0; d < 3; ++d)
        if (g[d] == 0 || b[d] == 0 || g[d] > kMaxGridDim[d] || b[d] > kMaxBlockDim[d]) return false;
    return (uint64_t)block.x * block.y * block.z <= kMaxThreadsPerBlock;
}

// Runs body() once per CUDA thread of the launch, with the built-in variables set.
template <typename Body>
void run_threads(dim3 grid, dim3 block, Body&& body) {
    const int64_t per_block = (int64_t)block.x * block.y * block.z;
    const int64_t total = (int64_t)grid.x * grid.y * grid.z * per_block;
    const LaunchConfig config = launch_config();
    const int64_t chunk = std::max<int64_t>(1, config.chunk);
    const int workers = std::max(1, config.workers);
    // Chunk k goes to worker k % workers, whatever the timing: even on a busy machine, where one
    // thread could otherwise take every chunk before the others start, neighbouring threads
    // run on different OS threads, so ThreadSanitizer sees every pair of conflicting accesses.
    auto worker = [&](int w) {
        gridDim = grid;
        blockDim = block;
        for (int64_t start = w * chunk; start < total; start += (int64_t)workers * chunk) {
            for (int64_t t = start; t < std::min(total, start + chunk); ++t) {
                const int64_t b = t / per_block, r = t % per_block;
                blockIdx = dim3((unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y),
                                (unsigned)(b / grid.x / grid.y));
                threadIdx = dim3((unsigned)(r % block.x), (unsigned)(r / block.x % block.y),
                                 (unsigned)(r / block.x / block.y));
                body();
            }
        }
    };
    if (workers == 1) {
        worker(0);
        return;
    }
    std::vector<std::thread> pool;
    for (int w = 0; w < workers; ++w) pool.emplace_back(worker, w);
    for (auto& thread : pool) thread.join();
}

// The host form of kernel<<<grid, block, 0, stream>>>(args...): arguments are converted to
// the kernel's parameter types once, as a launch copies them, and shared by all its threads.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t, Args&&... args) {
    if (!valid_configuration(grid, block)) {
        last_error() = cudaErrorInvalidConfiguration;
        return;
    }
    const std::tuple<Params...> params(std::forward<Args>(args)...);
    run_threads(grid, block, [&]() { std::apply(kernel, params); });
}

}  // namespace host
}  // namespace nl3dmm

inline cudaError_t cudaGetLastError() {
    return (cudaError_t)nl3dmm::host::last_error().exchange(cudaSuccess);
}

inline cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t = nullptr) {
    if (bytes != 0 && dst == nullptr) return cudaErrorInvalidValue;
    std::memset(dst, value, bytes);
    return cudaSuccess;
}

// Device atomics: relaxed read-modify-writes, as CUDA's are; each returns the old value.
inline unsigned long long atomicMin(unsigned long long* address, unsigned long long value) {
    std::atomic_ref<unsigned long long> word(*address);
    unsigned long long old = word.load(std::memory_order_relaxed);
    while (value < old && !word.compare_exchange_weak(old, value, std::memory_order_relaxed)) {
    }
    return old;
}

inline int atomicMax(int* address, int value) {
    std::atomic_ref<int> word(*address);
    int old = word.load(std::memory_order_relaxed);
    while (value > old && !word.compare_exchange_weak(old, value, std::memory_order_relaxed)) {
    }
    return old;
}

inline int atomicOr(int* address, int value) {
    return std::atomic_ref<int>(*address).fetch_or(value, std::memory_order_relaxed);
}

inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
    return std::atomic_ref<unsigned long long>(*address).fetch_add(value, std::memory_order_relaxed);
}

inline float atomicAdd(float* address, float value) {
    return std::atomic_ref<float>(*address).fetch_add(value, std::memory_order_relaxed);
}

inline double atomicAdd(double* address, double value) {
    return std::atomic_ref<double>(*address).fetch_add(value, std::memory_order_relaxed);
}
