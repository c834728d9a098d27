// Stress driver for csrc/cpu/work_pool.cpp, built by tests/test_work_pool.py (plain and under
// ThreadSanitizer). Every chunk must run exactly once with a worker id below the limit, an
// exception must reach the caller, and concurrent and nested callers must finish. Prints "ok".
#include <atomic>
#include <cstdio>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cpu/work_pool.h"

using nl3dmm::cpu::parallel_for;
using nl3dmm::cpu::run_chunks;

static int fail(const char* what, long a, long b) {
    std::printf("FAIL %s %ld %ld\n", what, a, b);
    return 1;
}

static int exactly_once(int64_t chunks, int max_workers) {
    std::vector<std::atomic<int>> runs(chunks);
    std::atomic<int> bad_worker{0};
    run_chunks(chunks, [&](int64_t c, int worker) {
        runs[c].fetch_add(1);
        const int limit = max_workers > 0 ? max_workers : nl3dmm::cpu::workers();
        if (worker < 0 || worker >= limit) bad_worker.fetch_add(1);
    }, max_workers);
    for (int64_t c = 0; c < chunks; ++c)
        if (runs[c].load() != 1) return fail("chunk ran", (long)c, runs[c].load());
    return bad_worker.load() ? fail("worker id", bad_worker.load(), max_workers) : 0;
}

int main() {
    for (int round = 0; round < 2000; ++round)
        if (exactly_once(1 + round % 67, round % 3)) return 1;
    // parallel_for covers [0, n) with no gap or overlap.
    for (int64_t n : {1, 7, 1000, 65537}) {
        std::vector<std::atomic<int>> seen(n);
        parallel_for(n, 10, [&](int64_t b, int64_t e, int) { for (int64_t i = b; i < e; ++i) seen[i].fetch_add(1); });
        for (int64_t i = 0; i < n; ++i)
            if (seen[i].load() != 1) return fail("parallel_for", (long)n, (long)i);
    }
    // An exception in a chunk reaches the caller after every thread has left the job.
    for (int round = 0; round < 200; ++round) {
        bool caught = false;
        try {
            run_chunks(32, [&](int64_t c, int) { if (c == round % 32) throw std::runtime_error("chunk"); });
        } catch (const std::runtime_error&) {
            caught = true;
        }
        if (!caught) return fail("exception lost", round, 0);
    }
    // A call from inside a chunk runs there, serially.
    std::atomic<long> inner{0};
    run_chunks(8, [&](int64_t, int) { run_chunks(5, [&](int64_t, int) { inner.fetch_add(1); }); });
    if (inner.load() != 40) return fail("nested", inner.load(), 40);
    // Concurrent callers: one gets the pool, the others run their chunks themselves.
    std::vector<std::thread> callers;
    std::atomic<int> errors{0};
    for (int t = 0; t < 3; ++t)
        callers.emplace_back([&, t] {
            for (int round = 0; round < 300; ++round) errors.fetch_add(exactly_once(1 + (round + t) % 29, 0));
        });
    for (auto& c : callers) c.join();
    if (errors.load()) return fail("concurrent", errors.load(), 0);
    std::printf("ok\n");
    return 0;
}
