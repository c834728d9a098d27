// The CPU kernels' thread pool (work_pool.h says why it exists and what it promises).
#include "work_pool.h"

#include <omp.h>
#include <pthread.h>
#include <sched.h>
#ifdef __linux__
#include <time.h>
#include <unistd.h>
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
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

std::atomic<int64_t> team_calls{0}, pool_calls{0};  // pool_counts()

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

// torch's own OpenMP team (libgomp, which this library shares) polls for new work for ~10 ms
// after each of torch's parallel ops before its threads sleep (GOMP_SPINCOUNT). A pool helper
// woken in that window shares a core with a polling team thread: the forward+backward at 512²,
// which starts right after torch copies its inputs, ran 18-21 ms instead of 13-16
// (bench/results/pool-2026-12-06.md). While every thread of the caller's team is running, the
// team is the better helper: it takes the chunks at once, and its end-of-region barrier waits
// on no sleeping thread. When it sleeps, a region would wake it onto the caller's core (the
// ~10 ms stall work_pool.h describes), so the pool runs the call. NL3DMM_POOL_OMP=0 never
// uses the team, =1 always does (tests); unset, whether its threads are on a CPU decides.
#ifdef __linux__
int omp_policy() {
    static const int policy = [] {
        const char* env = std::getenv("NL3DMM_POOL_OMP");
        return env == nullptr ? -1 : (std::strcmp(env, "0") == 0 ? 0 : 1);
    }();
    return policy;
}

const pid_t process_at_load = getpid();

// The caller's team, as libgomp reuses it: threads 1..size-1 of a region of `size` threads,
// and the first want-1 of them in a smaller region.
struct OmpTeam {
    int size = 0;
    std::vector<clockid_t> threads;  // their CPU clocks
    // A team seen idle stays idle while its threads' CPU clocks stand still (until torch's
    // next parallel op): one clock read per thread, instead of the 10 us watch, tells. (A team
    // seen running is watched again: under OMP_WAIT_POLICY=PASSIVE it sleeps as soon as a
    // region ends.)
    std::vector<int64_t> idle_at;  // their CPU clocks when last seen idle; empty: unknown
};
thread_local OmpTeam omp_team;

// Whether threads are on a CPU now: their CPU clocks advance while we watch for kWatch. Their
// /proc state says only "runnable" ('R'), which a thread queued behind other work is too (right
// after a torch op, often behind the caller itself); a region on such a team ends at a barrier
// that waits for it (fb at 224² under four busy threads: median 66-124 ms instead of 38-42).
constexpr auto kWatch = std::chrono::microseconds(10);

int64_t cpu_ns(clockid_t clock) {
    timespec t;
    if (clock_gettime(clock, &t) != 0) return -1;  // the thread has exited
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

// Whether the first n threads of the team are running; remembers a team seen idle. A thread
// that has exited (libgomp replaced the team) makes the next call learn the team again.
bool team_is_running(OmpTeam& team, int n) {
    std::vector<int64_t> before(n);
    bool unchanged = (int)team.idle_at.size() >= n;
    for (int i = 0; i < n; ++i) {
        if ((before[i] = cpu_ns(team.threads[i])) < 0) {
            team.size = 0;
            return false;
        }
        unchanged = unchanged && before[i] == team.idle_at[i];
    }
    if (unchanged) return false;
    const auto start = Clock::now();
    while (Clock::now() - start < kWatch) cpu_relax();
    const int64_t watched = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
    bool running = true;
    for (int i = 0; i < n; ++i) {
        const int64_t after = cpu_ns(team.threads[i]);
        if (after < 0) {
            team.size = 0;
            return false;
        }
        if (after - before[i] == 0) {
            team.idle_at.assign(before.begin(), before.end());
            return false;
        }
        running = running && (after - before[i]) * 2 >= watched;
    }
    return running;
}

// Whether to run this call on the caller's OpenMP team. Learning the team's threads takes one
// region (a one-off wake-up per calling thread and team size).
bool use_omp_team(int want) {
    const int policy = omp_policy();
    if (policy == 0 || omp_in_parallel() || getpid() != process_at_load) return false;
    const int size = omp_get_max_threads();
    if (omp_team.size != size) {
        std::vector<clockid_t> threads(size - 1, 0);
        std::atomic<int> clocks{0};
        int got = 0;
#pragma omp parallel num_threads(size)
        {
            const int i = omp_get_thread_num();
            if (i > 0 && pthread_getcpuclockid(pthread_self(), &threads[i - 1]) == 0) clocks.fetch_add(1);
            if (i == 0) got = omp_get_num_threads();
        }
        omp_team.size = size;
        omp_team.threads = got == size && clocks.load() == size - 1 ? threads : std::vector<clockid_t>();
        omp_team.idle_at.clear();
    }
    if ((int)omp_team.threads.size() < want - 1) return false;  // also: want > size
    return policy == 1 || team_is_running(omp_team, want - 1);
}

void run_on_omp_team(int64_t chunks, const Task& task, int want) {
    team_calls.fetch_add(1, std::memory_order_relaxed);
    Job job{&task, chunks, want};
#pragma omp parallel num_threads(want)
    drain(job, omp_get_thread_num());
    if (job.error) std::rethrow_exception(job.error);
}
#endif

// No thread ever sleeps on a lock or condition while another works for it: a woken thread
// can wait ~10 ms for a core (keep_helpers_off says why), longer than a whole kernel. The caller
// publishes the job with atomics and, at the end, polls until the helpers inside it have left;
// helpers poll for work for spin_time() before they sleep, and only they ever sleep.
class Pool {
   public:
    void run(int64_t chunks, const Task& task, int want) {
        const bool serial = want <= 1 || chunks <= 1 || in_task;
#ifdef __linux__
        if (!serial && use_omp_team(want)) {
            run_on_omp_team(chunks, task, want);
            return;
        }
#endif
        std::unique_lock<std::mutex> one_call(call_mu_, std::try_to_lock);
        if (serial || !one_call.owns_lock()) {
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
        pool_calls.fetch_add(1, std::memory_order_relaxed);
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

PoolCounts pool_counts() {
    PoolCounts c;
    c.team = team_calls.load(std::memory_order_relaxed);
    c.pool = pool_calls.load(std::memory_order_relaxed);
    return c;
}

void run_chunks(int64_t chunks, const Task& task, int max_workers) {
    const int n = workers();
    const int want = max_workers > 0 && max_workers < n ? max_workers : n;
    the_pool().run(chunks, task, want);
}


}  // namespace cpu
}  // namespace nl3dmm
