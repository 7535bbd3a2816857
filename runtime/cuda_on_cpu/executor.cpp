#include "runtime/cuda_on_cpu/executor.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <boost/context/detail/fcontext.hpp>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <omp.h>

#include "runtime/cuda_on_cpu/device_memory.h"
#include "runtime/error.h"
#include "runtime/kernel_name.h"

#if defined(__SANITIZE_ADDRESS__)
#define CTSR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CTSR_ASAN 1
#endif
#endif

#if CTSR_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

namespace ctsr::cuda_on_cpu {

namespace ctx = boost::context::detail;

namespace {

constexpr unsigned kWarpSize = 32;
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxWarps = kMaxThreadsPerBlock / kWarpSize;
constexpr size_t kMaxDynamicShared = 227 * 1024;  // the largest opt-in size on Hopper

std::atomic<int> g_worker_threads{0};
std::atomic<ThreadOrder> g_order{ThreadOrder::forward};

size_t fiber_stack_bytes() {
  static const size_t bytes = [] {
    size_t kb = 0;
    if (const char* env = std::getenv("CTSR_FIBER_STACK_KB")) kb = std::strtoul(env, nullptr, 10);
#if CTSR_ASAN
    if (kb == 0) kb = 512;  // instrumented frames are several times larger
#else
    if (kb == 0) kb = 128;
#endif
    return kb * 1024;
  }();
  return bytes;
}

enum class Wait : uint8_t { none, block, warp };

struct Fiber {
  ctx::fcontext_t context = nullptr;
  char* stack_low = nullptr;  // lowest usable address (above the guard page)
  Dim3 tid;
  unsigned linear = 0;
  unsigned warp = 0;
  Wait wait = Wait::none;
  uint64_t wait_generation = 0;
  bool done = false;
#if CTSR_ASAN
  void* asan_fake_stack = nullptr;
#endif
};

// One per host thread that runs blocks: the fibers' stacks and the state of the block it runs.
struct Worker {
  Worker() {
    page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    stride = fiber_stack_bytes() + page;
    region_bytes = stride * kMaxThreadsPerBlock;
    // Reserve address space for every possible fiber; pages are committed on first touch.
    void* p = mmap(nullptr, region_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    CTSR_CHECK(p != MAP_FAILED, "CUDA-on-CPU executor: cannot reserve ", region_bytes, " bytes for fiber stacks");
    region = static_cast<char*>(p);
    fibers.resize(kMaxThreadsPerBlock);
    for (unsigned i = 0; i < kMaxThreadsPerBlock; ++i) {
      char* base = region + i * stride;
      // A guard page below each stack turns an overflow into a crash at the right place
      // instead of silent corruption of the neighbouring fiber.
      mprotect(base, page, PROT_NONE);
      fibers[i].stack_low = base + page;
    }
  }
  ~Worker() { munmap(region, region_bytes); }

  char* region = nullptr;
  size_t page = 0, stride = 0, region_bytes = 0;
  std::vector<Fiber> fibers;

  // The block being run.
  KernelBody body = nullptr;
  void* closure = nullptr;
  Dim3 block_idx, block_dim, grid_dim;
  unsigned threads = 0;
  std::vector<unsigned char> dynamic_shared;
  ctx::fcontext_t scheduler = nullptr;
  Fiber* current = nullptr;
  std::exception_ptr error;
  Dim3 error_thread;  // the thread whose kernel code threw `error`

  // Barrier state. A generation counter per barrier: a waiting fiber may continue once the
  // generation it arrived in has been closed by the last arrival.
  unsigned live = 0, block_arrived = 0;
  uint64_t block_generation = 0;
  int count_accumulator = 0, count_result = 0;
  unsigned warp_live[kMaxWarps] = {}, warp_arrived[kMaxWarps] = {};
  uint64_t warp_generation[kMaxWarps] = {};
  uint64_t warp_slots[kMaxWarps][kWarpSize] = {};

#if CTSR_ASAN
  const void* scheduler_stack_bottom = nullptr;
  size_t scheduler_stack_size = 0;
#endif
};

thread_local Worker* tl_worker = nullptr;

Worker& worker() {
  if (!tl_worker) tl_worker = new Worker();  // one per host thread, lives as long as the thread
  return *tl_worker;
}

Worker& running_worker() {
  Worker* w = tl_worker;
  CTSR_CHECK(w && w->current, "CUDA builtin used outside a kernel running on the CUDA-on-CPU executor");
  return *w;
}

// Switches from a fiber back to the scheduler; returns when the scheduler resumes this fiber.
void yield_to_scheduler(Worker& w) {
#if CTSR_ASAN
  Fiber* f = w.current;
  __sanitizer_start_switch_fiber(&f->asan_fake_stack, w.scheduler_stack_bottom, w.scheduler_stack_size);
#endif
  ctx::transfer_t t = ctx::jump_fcontext(w.scheduler, nullptr);
#if CTSR_ASAN
  __sanitizer_finish_switch_fiber(f->asan_fake_stack, &w.scheduler_stack_bottom, &w.scheduler_stack_size);
#endif
  w.scheduler = t.fctx;
}

void fiber_main(ctx::transfer_t t) {
  Worker& w = *static_cast<Worker*>(t.data);
  w.scheduler = t.fctx;
#if CTSR_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &w.scheduler_stack_bottom, &w.scheduler_stack_size);
#endif
  Fiber* f = w.current;
  try {
    w.body(w.closure);
  } catch (...) {
    if (!w.error) {
      w.error = std::current_exception();
      w.error_thread = f->tid;
    }
  }
  f->done = true;
#if CTSR_ASAN
  __sanitizer_start_switch_fiber(nullptr, w.scheduler_stack_bottom, w.scheduler_stack_size);
#endif
  ctx::jump_fcontext(w.scheduler, nullptr);
  std::abort();  // a finished fiber is never resumed
}

void release_block_barrier(Worker& w) {
  w.block_arrived = 0;
  ++w.block_generation;
  w.count_result = w.count_accumulator;
  w.count_accumulator = 0;
}

void release_warp_barrier(Worker& w, unsigned warp) {
  w.warp_arrived[warp] = 0;
  ++w.warp_generation[warp];
}

void resume(Worker& w, Fiber& f) {
  w.current = &f;
#if CTSR_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack_low, fiber_stack_bytes());
#endif
  ctx::transfer_t t = ctx::jump_fcontext(f.context, &w);
#if CTSR_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  f.context = t.fctx;
  w.current = nullptr;
}

bool can_run(const Worker& w, const Fiber& f) {
  if (f.done) return false;
  if (f.wait == Wait::block) return f.wait_generation != w.block_generation;
  if (f.wait == Wait::warp) return f.wait_generation != w.warp_generation[f.warp];
  return true;
}

[[noreturn]] void report_deadlock(const Worker& w) {
  unsigned at_block = 0, at_warp = 0;
  for (unsigned i = 0; i < w.threads; ++i) {
    const Fiber& f = w.fibers[i];
    if (f.done) continue;
    if (f.wait == Wait::block) ++at_block;
    if (f.wait == Wait::warp) ++at_warp;
  }
  CTSR_FAIL("barrier deadlock: ", at_block, " thread(s) wait at __syncthreads and ", at_warp,
            " at a warp barrier (shuffle/ballot/__syncwarp), ", w.threads - w.live,
            " finished; a barrier inside a branch not all threads take?");
}

[[noreturn]] void report_divergent_barrier(const Worker& w, const Fiber& f) {
  CTSR_FAIL("divergent __syncthreads: thread (", f.tid.x, ", ", f.tid.y, ", ", f.tid.z, ") finished while ", w.block_arrived,
            " thread(s) wait at __syncthreads; every thread of a block must reach each barrier (an early return "
            "before a barrier, or a barrier inside a branch?)");
}

void run_block(Worker& w, Dim3 bidx) {
  const unsigned n = w.threads;
  w.block_idx = bidx;
  w.live = n;
  w.block_arrived = 0;
  w.block_generation = 0;
  w.count_accumulator = w.count_result = 0;
  const unsigned warps = (n + kWarpSize - 1) / kWarpSize;
  for (unsigned i = 0; i < warps; ++i) {
    w.warp_live[i] = std::min(kWarpSize, n - i * kWarpSize);
    w.warp_arrived[i] = 0;
    w.warp_generation[i] = 0;
  }
  if (!w.dynamic_shared.empty()) {
    // Poison: uninitialised reads of shared memory come out as NaN instead of a plausible 0.
    std::memset(w.dynamic_shared.data(), 0xff, w.dynamic_shared.size());
  }
  const size_t stack_bytes = fiber_stack_bytes();
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = w.fibers[i];
    f.linear = i;
    f.tid = Dim3(i % w.block_dim.x, (i / w.block_dim.x) % w.block_dim.y, i / (w.block_dim.x * w.block_dim.y));
    f.warp = i / kWarpSize;
    f.wait = Wait::none;
    f.done = false;
    f.context = ctx::make_fcontext(f.stack_low + stack_bytes, stack_bytes, fiber_main);
  }
  const bool reverse = g_order.load(std::memory_order_relaxed) == ThreadOrder::reverse;
  while (w.live > 0) {
    bool resumed = false;
    for (unsigned k = 0; k < n; ++k) {
      Fiber& f = w.fibers[reverse ? n - 1 - k : k];
      if (!can_run(w, f)) continue;
      resume(w, f);
      resumed = true;
      if (w.error) {
        const Dim3 t = w.error_thread;
        try {
          std::rethrow_exception(w.error);
        } catch (const std::exception& e) {
          throw Error("thread (" + std::to_string(t.x) + ", " + std::to_string(t.y) + ", " + std::to_string(t.z) +
                      "): " + e.what());
        }
      }
      if (f.done) {
        // CUDA requires __syncthreads to be reached by every thread of the block; a thread
        // that exits while others wait there is a bug that hangs or corrupts on some GPUs.
        if (w.block_arrived > 0) report_divergent_barrier(w, f);
        // Warp barriers (inside shuffles) no longer wait for an exited lane.
        --w.live;
        --w.warp_live[f.warp];
        if (w.warp_arrived[f.warp] > 0 && w.warp_arrived[f.warp] == w.warp_live[f.warp]) release_warp_barrier(w, f.warp);
      }
    }
    if (!resumed && w.live > 0) report_deadlock(w);
  }
}

void check_launch(Dim3 grid, Dim3 block, size_t smem) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  CTSR_CHECK(block.x >= 1 && block.y >= 1 && block.z >= 1 && threads <= kMaxThreadsPerBlock && block.z <= 64,
             "kernel launch: block (", block.x, ", ", block.y, ", ", block.z, ") is invalid: expected at most ",
             kMaxThreadsPerBlock, " threads and z <= 64");
  CTSR_CHECK(grid.y <= 65535 && grid.z <= 65535 && grid.x <= 0x7fffffffu, "kernel launch: grid (", grid.x, ", ",
             grid.y, ", ", grid.z, ") exceeds CUDA's limits (x < 2^31, y and z <= 65535)");
  CTSR_CHECK(smem <= kMaxDynamicShared, "kernel launch: ", smem, " bytes of dynamic shared memory requested, at most ",
             kMaxDynamicShared, " are available");
}

// CTSR_EXECUTOR_LAUNCH_LOG=path: every kernel launched and the largest block it ran with,
// written at exit as "threads<TAB>kernel name" lines (scripts/kernel_resources.py reads it to
// check registers x block size against the GPU's register file).
class LaunchLog {
 public:
  static LaunchLog* instance() {
    static LaunchLog* log = [] {
      const char* path = std::getenv("CTSR_EXECUTOR_LAUNCH_LOG");
      return path && *path ? new LaunchLog(path) : nullptr;
    }();
    return log;
  }
  void record(const void* kernel, unsigned threads) {
    std::lock_guard<std::mutex> lock(mutex_);
    unsigned& t = largest_[kernel];
    t = std::max(t, threads);
  }

 private:
  explicit LaunchLog(std::string path) : path_(std::move(path)) {
    std::atexit([] { instance()->write(); });
  }
  void write() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::FILE* f = std::fopen(path_.c_str(), "a");
    if (!f) {
      std::fprintf(stderr, "CTSR_EXECUTOR_LAUNCH_LOG: cannot open %s for appending\n", path_.c_str());
      return;
    }
    for (const auto& [kernel, threads] : largest_) std::fprintf(f, "%u\t%s\n", threads, kernel_name(kernel).c_str());
    std::fclose(f);
  }
  std::string path_;
  std::mutex mutex_;
  std::map<const void*, unsigned> largest_;
};

void record_launch(const void* kernel, Dim3 block) {
  if (LaunchLog* log = LaunchLog::instance()) log->record(kernel, block.x * block.y * block.z);
}

void launch_checked(const void* kernel, Dim3 grid, Dim3 block, size_t smem, KernelBody body, void* closure);

}  // namespace

void trap() { CTSR_FAIL("__trap() called: the kernel aborted"); }

void launch(const void* kernel, Dim3 grid, Dim3 block, size_t smem, KernelBody body, void* closure) {
  DeviceMemoryAccess access;  // kernels read and write device memory (device_memory.h)
  record_launch(kernel, block);
  try {
    launch_checked(kernel, grid, block, smem, body, closure);
  } catch (const std::exception& e) {
    throw Error("CUDA-on-CPU executor: kernel " + kernel_name(kernel) + ", grid (" + std::to_string(grid.x) + ", " +
                std::to_string(grid.y) + ", " + std::to_string(grid.z) + "), block (" + std::to_string(block.x) +
                ", " + std::to_string(block.y) + ", " + std::to_string(block.z) + "): " + e.what());
  }
}

namespace {
void launch_checked(const void*, Dim3 grid, Dim3 block, size_t smem, KernelBody body, void* closure) {
  check_launch(grid, block, smem);
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  if (blocks == 0) return;
  const unsigned threads = block.x * block.y * block.z;
  auto run_range = [&](Worker& w, uint64_t b) {
    Dim3 bidx(unsigned(b % grid.x), unsigned((b / grid.x) % grid.y), unsigned(b / (uint64_t(grid.x) * grid.y)));
    try {
      run_block(w, bidx);
    } catch (const std::exception& e) {
      throw Error("block (" + std::to_string(bidx.x) + ", " + std::to_string(bidx.y) + ", " + std::to_string(bidx.z) +
                  "): " + e.what());
    }
  };
  auto prepare = [&](Worker& w) {
    w.body = body;
    w.closure = closure;
    w.block_dim = block;
    w.grid_dim = grid;
    w.threads = threads;
    w.error = nullptr;
    w.dynamic_shared.assign(smem, 0);
  };
  int nthreads = worker_threads();
  if (blocks == 1 || nthreads <= 1) {
    Worker& w = worker();
    prepare(w);
    for (uint64_t b = 0; b < blocks; ++b) run_range(w, b);
    return;
  }
  std::exception_ptr first_error;
  std::atomic<bool> failed{false};
#pragma omp parallel num_threads(nthreads)
  {
    Worker& w = worker();
    prepare(w);
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < static_cast<int64_t>(blocks); ++b) {
      if (failed.load(std::memory_order_relaxed)) continue;
      try {
        run_range(w, static_cast<uint64_t>(b));
      } catch (...) {
#pragma omp critical(ctsr_cuda_on_cpu_error)
        if (!first_error) first_error = std::current_exception();
        failed = true;
      }
    }
  }
  if (first_error) std::rethrow_exception(first_error);
}
}  // namespace

const Dim3& thread_idx() { return running_worker().current->tid; }
const Dim3& block_idx() { return running_worker().block_idx; }
const Dim3& block_dim() { return running_worker().block_dim; }
const Dim3& grid_dim() { return running_worker().grid_dim; }

void* dynamic_shared_memory() {
  Worker& w = running_worker();
  return w.dynamic_shared.empty() ? nullptr : w.dynamic_shared.data();
}

namespace {
// Arrive at the block barrier; returns once every live thread of the block has arrived.
void block_barrier(Worker& w, int predicate) {
  Fiber* f = w.current;
  if (w.live != w.threads) report_divergent_barrier(w, *f);
  w.count_accumulator += predicate ? 1 : 0;
  if (++w.block_arrived == w.live) {
    release_block_barrier(w);
    return;
  }
  f->wait = Wait::block;
  f->wait_generation = w.block_generation;
  yield_to_scheduler(w);
  f->wait = Wait::none;
}

void warp_barrier(Worker& w) {
  Fiber* f = w.current;
  const unsigned warp = f->warp;
  if (++w.warp_arrived[warp] == w.warp_live[warp]) {
    release_warp_barrier(w, warp);
    return;
  }
  f->wait = Wait::warp;
  f->wait_generation = w.warp_generation[warp];
  yield_to_scheduler(w);
  f->wait = Wait::none;
}
}  // namespace

void sync_threads() { block_barrier(running_worker(), 0); }

int sync_threads_count(int predicate) {
  Worker& w = running_worker();
  block_barrier(w, predicate);
  // count_result holds the total of the generation just closed; read it before any thread can
  // reach the next barrier (they cannot: this fiber runs until its own next switch).
  return w.count_result;
}

void sync_warp() { warp_barrier(running_worker()); }

unsigned lane_id() { return running_worker().current->linear % kWarpSize; }

uint64_t warp_exchange(uint64_t value, int src_lane) {
  Worker& w = running_worker();
  Fiber* f = w.current;
  const unsigned warp = f->warp;
  const unsigned lane = f->linear % kWarpSize;
  w.warp_slots[warp][lane] = value;
  warp_barrier(w);  // every live lane has published
  // A source lane that does not exist (past blockDim in a partial warp) or has exited gives
  // an undefined value on a GPU; here it gives all-one bits (NaN, -1), so code that reads
  // one fails visibly. Callers pass their own lane when CUDA defines "own value".
  uint64_t result = ~uint64_t(0);
  const unsigned src = warp * kWarpSize + static_cast<unsigned>(src_lane);
  if (src_lane >= 0 && static_cast<unsigned>(src_lane) < kWarpSize && src < w.threads && !w.fibers[src].done) {
    result = w.warp_slots[warp][src_lane];
  }
  warp_barrier(w);  // every lane has read before anyone publishes again
  return result;
}

unsigned warp_ballot(bool predicate) {
  Worker& w = running_worker();
  Fiber* f = w.current;
  const unsigned warp = f->warp;
  w.warp_slots[warp][f->linear % kWarpSize] = predicate ? 1 : 0;
  warp_barrier(w);
  unsigned mask = 0;
  for (unsigned lane = 0; lane < kWarpSize; ++lane) {
    unsigned t = warp * kWarpSize + lane;
    if (t < w.threads && !w.fibers[t].done && w.warp_slots[warp][lane]) mask |= 1u << lane;
  }
  warp_barrier(w);
  return mask;
}

unsigned warp_active_mask() {
  Worker& w = running_worker();
  const unsigned warp = w.current->warp;
  unsigned mask = 0;
  for (unsigned lane = 0; lane < kWarpSize; ++lane) {
    unsigned t = warp * kWarpSize + lane;
    if (t < w.threads && !w.fibers[t].done) mask |= 1u << lane;
  }
  return mask;
}

void set_worker_threads(int n) { g_worker_threads = n; }

int worker_threads() {
  int n = g_worker_threads.load();
  if (n > 0) return n;
  if (const char* env = std::getenv("CTSR_CUDA_ON_CPU_THREADS")) {
    int e = std::atoi(env);
    if (e > 0) return e;
  }
  return omp_get_max_threads();
}

namespace {
Checks checks_from_environment() {
  const char* env = std::getenv("CTSR_EXECUTOR_CHECKS");
  if (env == nullptr || *env == 0 || std::strcmp(env, "fast") == 0) return Checks::fast;
  if (std::strcmp(env, "full") == 0) return Checks::full;
  CTSR_FAIL("CTSR_EXECUTOR_CHECKS='", env, "': expected fast or full");
}
std::atomic<int> g_checks{-1};  // -1: not read from the environment yet
}  // namespace

void set_checks(Checks c) { g_checks = static_cast<int>(c); }

Checks checks() {
  int c = g_checks.load(std::memory_order_relaxed);
  if (c < 0) {
    c = static_cast<int>(checks_from_environment());
    g_checks = c;
  }
  return static_cast<Checks>(c);
}

void set_thread_order(ThreadOrder order) { g_order = order; }
ThreadOrder thread_order() { return g_order.load(); }

}  // namespace ctsr::cuda_on_cpu
