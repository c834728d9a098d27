// The CPU kernels' thread pool (work_pool.h says why it exists and what it promises).
#include "work_pool.h"

#include <omp.h>
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace nl3dmm {
namespace cpu {
namespace {

using Task = std::function<void(int64_t, int)>;
using Clock = std::chrono::steady_clock;

// How long a helper polls for the next call before it sleeps: by default not at all. On 2
// vCPUs a polling helper takes the core from torch's own (libgomp) threads, which poll too
// after each torch op: with 1 ms of polling, back-to-back rasterizes took 2x longer
// (bench/results/pool-2026-12-02.md). NL3DMM_POOL_SPIN_US sets it, for machines with cores
// to spare.
std::chrono::microseconds spin_time() {
    const char* env = std::getenv("NL3DMM_POOL_SPIN_US");
    const long us = env ? std::strtol(env, nullptr, 10) : 0;
    return std::chrono::microseconds(us < 0 ? 0 : us);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
}

struct Job {
    const Task* task;
    int64_t chunks;
    int max_workers;
    std::atomic<int64_t> next{0};
    std::atomic<int> joined{1};  // the caller is worker 0
    std::mutex error_mu;
    std::exception_ptr error;  // the first chunk that threw (std::bad_alloc)
};

thread_local bool in_task = false;

// A chunk that throws ends this thread's share; the others finish theirs and the caller
// rethrows, so no thread is left running on a job that has gone out of scope.
void drain(Job& job, int worker) {
    in_task = true;
    try {
        for (int64_t c; (c = job.next.fetch_add(1, std::memory_order_relaxed)) < job.chunks;) (*job.task)(c, worker);
    } catch (...) {
        std::lock_guard<std::mutex> lk(job.error_mu);
        if (!job.error) job.error = std::current_exception();
    }
    in_task = false;
}

// No thread ever sleeps on a lock or condition while another works for it: a woken thread
// can wait ~10 ms for a core (keep_helpers_off says why), longer than a whole kernel. The caller
// publishes the job with atomics and, at the end, polls until the helpers inside it have left;
// helpers poll for work for spin_time() before they sleep, and only they ever sleep.
class Pool {
   public:
    void run(int64_t chunks, const Task& task, int want) {
        std::unique_lock<std::mutex> one_call(call_mu_, std::try_to_lock);
        if (want <= 1 || chunks <= 1 || in_task || !one_call.owns_lock()) {
            for (int64_t c = 0; c < chunks; ++c) task(c, 0);
            return;
        }
        while (started_ < want - 1) {
            std::thread thread([this] { helper(); });
            helpers_.push_back(thread.native_handle());
            thread.detach();
            ++started_;
        }
#ifdef __linux__
        keep_helpers_off(sched_getcpu());
#endif
        Job job{&task, chunks, want};
        job_.store(&job);
        posted_.fetch_add(1);
        if (sleeping_.load() > 0) {
            { std::lock_guard<std::mutex> lk(sleep_mu_); }  // a helper between its check and wait()
            wake_.notify_all();
        }
        drain(job, 0);
        // Every chunk is claimed: wait only for helpers still inside the job.
        job_.store(nullptr);
        for (int spins = 0; inside_.load() != 0; ++spins)
            if (spins < 4096) cpu_relax(); else std::this_thread::yield();
        if (job.error) std::rethrow_exception(job.error);
    }

   private:
    // Linux wakes a sleeping helper on the waker's CPU when it judges that cache-friendly, and the
    // helper then preempts the caller: both share one core while the other idles, and a
    // two-band scatter took as long as one band after the other (6 ms instead of 3 at 512²;
    // bench/results/pool-2026-12-06.md). So helpers may run anywhere the process may, except
    // on the caller's current CPU; the mask changes only when the caller moved. A hint, not a
    // rule: where only the caller's CPU is allowed, helpers keep the process's mask.
#ifdef __linux__
    void keep_helpers_off(int cpu) {
        // A helper started since the last mask has its creator's mask: set everyone's again.
        if (cpu < 0 || cpu >= CPU_SETSIZE || (cpu == kept_off_ && masked_ == helpers_.size())) return;
        if (!allowed_known_) {
            allowed_known_ = true;
            CPU_ZERO(&allowed_);
            if (sched_getaffinity(0, sizeof(allowed_), &allowed_) != 0) CPU_ZERO(&allowed_);
        }
        cpu_set_t mask = allowed_;
        CPU_CLR(cpu, &mask);
        if (CPU_COUNT(&mask) == 0) return;
        for (pthread_t h : helpers_) pthread_setaffinity_np(h, sizeof(mask), &mask);
        kept_off_ = cpu;
        masked_ = helpers_.size();
    }
#endif

    void helper() {
#ifdef __linux__
        pthread_setname_np(pthread_self(), "nl3dmm-pool");  // for top -H, py-spy and the tests
#endif
        uint64_t seen = posted_.load();
        const auto spin = spin_time();
        for (;;) {
            const auto start = Clock::now();
            while (posted_.load(std::memory_order_acquire) == seen && Clock::now() - start < spin) cpu_relax();
            if (posted_.load() == seen) {
                std::unique_lock<std::mutex> lk(sleep_mu_);
                sleeping_.fetch_add(1);
                wake_.wait(lk, [&] { return posted_.load() != seen; });
                sleeping_.fetch_sub(1);
            }
            seen = posted_.load();
            // inside_ is raised before job_ is read: a caller that has cleared job_ and then
            // sees inside_ == 0 knows no helper holds its job.
            inside_.fetch_add(1);
            Job* job = job_.load();
            if (job != nullptr) {
                const int worker = job->joined.fetch_add(1);
                if (worker < job->max_workers) drain(*job, worker);
            }
            inside_.fetch_sub(1);
        }
    }

    std::mutex call_mu_;  // one call at a time; a concurrent caller runs its chunks itself
    int started_ = 0;     // helper threads, guarded by call_mu_ as are the next four
    std::vector<pthread_t> helpers_;
#ifdef __linux__  // CPU affinity is Linux's (glibc's pthread_setaffinity_np)
    cpu_set_t allowed_;  // the process's CPUs when the first call came
    bool allowed_known_ = false;
    int kept_off_ = -1;  // the CPU the helpers' mask leaves out ...
    size_t masked_ = 0;  // ... for the first masked_ helpers
#endif
    std::atomic<Job*> job_{nullptr};
    std::atomic<uint64_t> posted_{0};  // jobs so far: what helpers poll
    std::atomic<int> inside_{0};       // helpers that may be holding job_
    std::atomic<int> sleeping_{0};
    std::mutex sleep_mu_;
    std::condition_variable wake_;
};

// Leaked on purpose: helpers blocked in wait() must not see the pool destroyed at exit.
Pool* pool = nullptr;
std::once_flag pool_once;

// A forked child (a DataLoader worker) has none of the helper threads, and a lock one of them
// held would stay locked: it starts a pool of its own.
void fork_child() { pool = new Pool(); }

Pool& the_pool() {
    std::call_once(pool_once, [] {
        pool = new Pool();
        pthread_atfork(nullptr, nullptr, fork_child);
    });
    return *pool;
}

}  // namespace

int workers() { return omp_get_max_threads(); }

void run_chunks(int64_t chunks, const Task& task, int max_workers) {
    const int n = workers();
    const int want = max_workers > 0 && max_workers < n ? max_workers : n;
    the_pool().run(chunks, task, want);
}


}  // namespace cpu
}  // namespace nl3dmm
