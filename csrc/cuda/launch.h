// Kernel launches that compile two ways: with nvcc, NL_LAUNCH is the <<<grid, block, 0,
// stream>>> syntax; with a host C++ compiler (g++, for tests/test_cuda_host.py), it is the
// thread-pool launcher of host_shim.h, which also supplies the CUDA runtime calls, atomics and
// built-in variables the kernels use. One source, no text rewriting.
//
//     NL_LAUNCH(kernel<T>, blocks, threads_per_block, stream, arg0, arg1, ...);
//
// `kernel` must not contain a top-level comma (one template parameter; pass modes as
// arguments). Follow each launch with the usual cudaGetLastError() check.
#pragma once

#ifdef __CUDACC__
#include <cuda_runtime.h>
#define NL_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#else
#include "host_shim.h"
#define NL_LAUNCH(kernel, grid, block, stream, ...) \
    ::nl3dmm::host::launch(kernel, (grid), (block), (stream), __VA_ARGS__)
#endif
