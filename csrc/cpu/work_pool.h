// The CPU kernels' thread pool: work split into chunks that threads claim one at a time, where
// the calling thread never waits for a thread that has not started.
//
// Why not OpenMP's `parallel for`: its region ends at a barrier every thread of the team must
// reach. On a 2-vCPU VM a team thread that went to sleep between calls ran again only ~10 ms
// later (Linux wakes it on the caller's CPU, behind the caller: bench/results/pool-2026-12-06.md),
// so a 2 ms rasterize after a pause took 13.5 ms; and under load a static split waits for
// whichever thread the load delays (p90 40 ms for that rasterize;
// bench/results/variance-2026-12-02.md). Our helpers are kept off the caller's CPU. Here the
// caller starts on the chunks at once, helper threads join when they wake and take what is
// left, and the call returns when every chunk that was claimed is finished. A helper that
// wakes after the last chunk was claimed does nothing, and nobody waits for it.
//
// One exception: right after one of torch's parallel ops, torch's OpenMP team (which this
// library shares) polls for the next op for a few ms, and a helper woken then shares a core with
// it. While every thread of that team is on a CPU, a call runs on the team instead, which
// starts at once and has no sleeping thread for its closing barrier to wait on
// (work_pool.cpp, use_omp_team).
//
// Chunks do not decide results: a kernel's output may not depend on which thread ran a chunk
// or how many threads ran (see render_cpu.cpp's determinism note). `worker` (0 for the caller,
// 1.. for helpers, below workers()) indexes per-thread scratch.
#pragma once

#include <cstdint>
#include <functional>

namespace nl3dmm {
namespace cpu {

// Threads a call may use: OpenMP's max-threads setting of the calling thread, so that
// OMP_NUM_THREADS, torch.set_num_threads and nl3dmm.render.set_num_threads keep working.
int workers();

// Run task(chunk, worker) once for every chunk in [0, chunks); returns when all have run, and
// rethrows the first exception a chunk threw. At most max_workers threads (all when 0) take
// part. Called from inside a task (or while another thread's call is running) it runs the
// chunks on the calling thread, in order.
void run_chunks(int64_t chunks, const std::function<void(int64_t chunk, int worker)>& task,
                int max_workers = 0);

// Calls that ran on more than one thread since the process started: on the caller's OpenMP
// team (which work_pool.cpp borrows while its threads are running) and on the pool's helpers.
// For tests and diagnosis; counted relaxed.
struct PoolCounts {
    int64_t team = 0, pool = 0;
};
PoolCounts pool_counts();

// Items per piece when [0, n) is cut into pieces: at least `grain`, and a few pieces per thread,
// so a delayed thread's share is taken by the others.
inline int64_t piece_size(int64_t n, int64_t grain) {
    const int64_t per_thread = 8;  // pieces per thread: enough to even out a delayed thread
    const int64_t size = (n + (int64_t)workers() * per_thread - 1) / ((int64_t)workers() * per_thread);
    return size < grain ? grain : size;
}

// body(begin, end, worker) over [0, n) in pieces of piece_size(n, grain) items.
template <typename Body>
void parallel_for(int64_t n, int64_t grain, Body&& body, int max_workers = 0) {
    if (n <= 0) return;
    const int64_t size = piece_size(n, grain);
    const int64_t chunks = (n + size - 1) / size;
    run_chunks(chunks, [&](int64_t c, int worker) {
        const int64_t begin = c * size, end = begin + size < n ? begin + size : n;
        body(begin, end, worker);
    }, max_workers);
}

}  // namespace cpu
}  // namespace nl3dmm
