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
#include "runtime/half.h"
#include "runtime/kernel_name.h"
#include "runtime/rounded.h"

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
constexpr size_t kMaxStaticShared = 48 * 1024;    // static __shared__ per block, every architecture
constexpr size_t kMaxSharedPerBlock = 227 * 1024;  // static + dynamic

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

enum class Wait : uint8_t { none, block, warp, warp_group };

// Full checks: lanes waiting at one warp-synchronous call (same mask, same call site).
struct WarpGroup {
  uint64_t id = 0;
  unsigned mask = 0, arrived = 0;
  WarpSite site{};
};

bool same_site(const WarpSite& a, const WarpSite& b) {
  return a.line == b.line && a.column == b.column && std::strcmp(a.op, b.op) == 0 && std::strcmp(a.file, b.file) == 0;
}

std::string describe(const WarpSite& s) {
  return std::string(s.op) + " at " + s.file + ":" + std::to_string(s.line) + ":" + std::to_string(s.column);
}

std::string hex_mask(unsigned m) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", m);
  return buf;
}

std::string lanes_of(unsigned m) {
  std::string out;
  for (unsigned lane = 0; lane < 32; ++lane) {
    if (!(m >> lane & 1u)) continue;
    if (!out.empty()) out += ",";
    out += std::to_string(lane);
  }
  return out.empty() ? "none" : out;
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::atomic<uint64_t> g_seed{0};  // 0: not read from the environment yet
std::atomic<bool> g_access_hooks{false};

uint64_t interleaving_seed() {
  uint64_t seed = g_seed.load(std::memory_order_relaxed);
  if (seed == 0) {
    const char* env = std::getenv("CTSR_EXECUTOR_SEED");
    seed = env && *env ? std::strtoull(env, nullptr, 10) : uint64_t(1);
    g_seed = seed;
  }
  return seed;
}

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
  // Static shared memory of the running block: CTSR_STATIC_SHARED variables by key.
  std::vector<unsigned char> static_shared = std::vector<unsigned char>(kMaxStaticShared);
  std::vector<std::pair<const void*, size_t>> static_offsets;
  std::vector<std::pair<size_t, const char*>> static_names;  // offset, variable
  size_t static_used = 0;
  const void* kernel = nullptr;
  bool full = false;  // CTSR_EXECUTOR_CHECKS=full for this launch
  // Full checks: pending warp groups per warp, lanes that have exited, full-warp syncs so far.
  std::vector<WarpGroup> warp_groups[kMaxWarps];
  unsigned warp_exited[kMaxWarps] = {};
  uint64_t next_group_id = 1;
  uint64_t warp_full_syncs[kMaxWarps] = {};
  std::vector<unsigned> order;  // a pass's schedule
  // Full checks: a shadow record per 4-byte word of shared memory (static, then dynamic).
  // Records older than `epoch` (which advances at each __syncthreads and block) are void.
  struct ShadowWord {
    uint64_t epoch = 0;
    uint64_t writer_sync = 0, reader_sync = 0;  // the warp's full syncs when last written / read
    uint32_t reader_warps = 0;                   // warps that read it in this epoch
    uint16_t writer = 0, reader = 0;             // thread + 1; reader kMany: several threads
    uint8_t write_bytes = 0, read_bytes = 0;     // which of the word's 4 bytes were written / read
    bool atomic = false;                         // written by atomics only
  };
  static constexpr uint16_t kMany = 0xffff;
  std::vector<ShadowWord> shadow;
  uint64_t epoch = 1;
  // Full checks, global memory: the words written in this epoch (an open-addressing table whose
  // entries of older epochs count as empty), so that a read or write by another thread of the
  // block is reported. Reads are not recorded (a write after another thread's read is not found).
  struct GlobalWrite {
    uintptr_t word = 0;
    uint64_t epoch = 0, writer_sync = 0;
    uint16_t writer = 0;
    uint8_t bytes = 0;  // which of the word's 4 bytes were written
    bool atomic = false;
  };
  std::vector<GlobalWrite> global_writes = std::vector<GlobalWrite>(1u << 12);
  size_t global_count = 0;  // entries of the current epoch
  uint64_t global_epoch = 0;
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
  // Each lane's operands of a warp-wide matrix multiply (warp_mma_m16n8k16_bf16): A's four
  // registers, then B's two.
  uint32_t mma_slots[kMaxWarps][kWarpSize][6] = {};

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
  ++w.epoch;
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
  if (f.wait == Wait::warp_group) {
    for (const WarpGroup& g : w.warp_groups[f.warp]) {
      if (g.id == f.wait_generation) return false;
    }
  }
  return true;
}

[[noreturn]] void report_deadlock(const Worker& w) {
  if (w.full) {
    std::string groups;
    for (unsigned warp = 0; warp < kMaxWarps; ++warp) {
      for (const WarpGroup& g : w.warp_groups[warp]) {
        groups += "; warp " + std::to_string(warp) + ": lanes " + lanes_of(g.arrived) + " wait at " + describe(g.site) +
                  " with mask " + hex_mask(g.mask) + " for lanes " + lanes_of(g.mask & ~g.arrived & ~w.warp_exited[warp]);
      }
    }
    unsigned at_block = 0;
    for (unsigned i = 0; i < w.threads; ++i) at_block += !w.fibers[i].done && w.fibers[i].wait == Wait::block;
    CTSR_FAIL("barrier deadlock: ", at_block, " thread(s) wait at __syncthreads", groups,
              " (a lane named in a mask that never arrives, or a barrier inside a branch not all threads take?)");
  }
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

// Full checks: lanes that exist in a warp (a partial last warp has fewer than 32).
unsigned existing_lanes(const Worker& w, unsigned warp) {
  const unsigned n = std::min(kWarpSize, w.threads - warp * kWarpSize);
  return n == kWarpSize ? ~0u : (1u << n) - 1u;
}

// A group completes when every lane of its mask that exists and has not exited has arrived
// (CUDA: all non-exited threads named in the mask must execute the same intrinsic). Removes it
// and returns true then.
bool release_if_complete(Worker& w, unsigned warp, uint64_t id) {
  auto& groups = w.warp_groups[warp];
  for (size_t i = 0; i < groups.size(); ++i) {
    if (groups[i].id != id) continue;
    const unsigned live = existing_lanes(w, warp) & ~w.warp_exited[warp];
    const unsigned required = groups[i].mask & live;
    if ((groups[i].arrived & required) != required) return false;
    if (required == live) ++w.warp_full_syncs[warp];
    groups.erase(groups.begin() + static_cast<std::ptrdiff_t>(i));
    return true;
  }
  return true;
}

void lane_exited(Worker& w, const Fiber& f) {
  w.warp_exited[f.warp] |= 1u << (f.linear % kWarpSize);
  std::vector<uint64_t> ids;
  for (const WarpGroup& g : w.warp_groups[f.warp]) ids.push_back(g.id);
  for (uint64_t id : ids) release_if_complete(w, f.warp, id);
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
  // Static shared memory is allocated (and poisoned) afresh at its first use in each block.
  w.static_offsets.clear();
  w.static_names.clear();
  w.static_used = 0;
  ++w.epoch;
  for (unsigned i = 0; i < warps; ++i) {
    w.warp_groups[i].clear();
    w.warp_exited[i] = 0;
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
  // Full checks: each pass resumes the runnable threads in a fresh seeded random order, so the
  // code between two barriers runs in a different interleaving of threads in each block.
  uint64_t rng = interleaving_seed() ^ (uint64_t(bidx.x) * 0x9e3779b97f4a7c15ull) ^ (uint64_t(bidx.y) << 32) ^ bidx.z;
  w.order.resize(n);
  for (unsigned k = 0; k < n; ++k) w.order[k] = reverse ? n - 1 - k : k;
  while (w.live > 0) {
    bool resumed = false;
    if (w.full) {
      for (unsigned k = n; k > 1; --k) std::swap(w.order[k - 1], w.order[splitmix64(rng) % k]);
    }
    for (unsigned k = 0; k < n; ++k) {
      Fiber& f = w.fibers[w.order[k]];
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
        if (w.full) lane_exited(w, f);
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
void launch_checked(const void* kernel, Dim3 grid, Dim3 block, size_t smem, KernelBody body, void* closure) {
  check_launch(grid, block, smem);
  const bool full = checks() == Checks::full;
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
    w.kernel = kernel;
    w.full = full;
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

// Full checks: arrive at the warp-synchronous call `site` with `mask`; returns once every
// non-exited lane of the mask has arrived at the same call.
void group_barrier(Worker& w, unsigned mask, const WarpSite& site) {
  Fiber* f = w.current;
  const unsigned warp = f->warp, lane = f->linear % kWarpSize, bit = 1u << lane;
  CTSR_CHECK(mask & bit, "lane ", lane, " of warp ", warp, " calls ", describe(site), " with mask ", hex_mask(mask),
             ", which does not include its own lane (a lane must be named in the mask it passes)");
  auto& groups = w.warp_groups[warp];
  uint64_t id = 0;
  for (WarpGroup& g : groups) {
    if (g.mask == mask) {
      CTSR_CHECK(same_site(g.site, site), "warp ", warp, ": lanes ", lanes_of(g.arrived), " wait at ", describe(g.site),
                 " while lane ", lane, " arrives at ", describe(site), " with the same mask ", hex_mask(mask),
                 ": lanes at different warp-synchronous calls do not exchange values on a GPU");
      g.arrived |= bit;
      id = g.id;
    } else {
      CTSR_CHECK((g.mask & mask) == 0, "warp ", warp, ": lane ", lane, " calls ", describe(site), " with mask ",
                 hex_mask(mask), " while lanes ", lanes_of(g.arrived), " wait at ", describe(g.site), " with mask ",
                 hex_mask(g.mask), ": the masks overlap but differ");
    }
  }
  if (id == 0) {
    id = w.next_group_id++;
    groups.push_back(WarpGroup{id, mask, bit, site});
  }
  if (release_if_complete(w, warp, id)) return;
  f->wait = Wait::warp_group;
  f->wait_generation = id;
  yield_to_scheduler(w);
  f->wait = Wait::none;
}

void any_warp_barrier(Worker& w, unsigned mask, const WarpSite& site) {
  if (w.full) group_barrier(w, mask, site);
  else warp_barrier(w);
}

// Whether lane src_lane of the caller's warp can be read after the barrier of a shuffle.
bool readable_lane(const Worker& w, unsigned warp, int src_lane, unsigned mask) {
  if (src_lane < 0 || static_cast<unsigned>(src_lane) >= kWarpSize) return false;
  const unsigned src = warp * kWarpSize + static_cast<unsigned>(src_lane);
  if (src >= w.threads || w.fibers[src].done) return false;
  return !w.full || (mask >> src_lane & 1u);
}

void sync_threads() { block_barrier(running_worker(), 0); }

int sync_threads_count(int predicate) {
  Worker& w = running_worker();
  block_barrier(w, predicate);
  // count_result holds the total of the generation just closed; read it before any thread can
  // reach the next barrier (they cannot: this fiber runs until its own next switch).
  return w.count_result;
}

void sync_warp(unsigned mask, WarpSite site) {
  Worker& w = running_worker();
  any_warp_barrier(w, mask, site);
}

void* static_shared_memory(const void* key, size_t bytes, size_t align, const char* name) {
  Worker& w = running_worker();
  for (const auto& [k, offset] : w.static_offsets) {
    if (k == key) return w.static_shared.data() + offset;
  }
  align = std::max<size_t>(align, 1);
  size_t offset = (w.static_used + align - 1) / align * align;
  // Full checks: a variable whose type asks for less than 16-byte alignment is placed off a
  // 16-byte boundary, so vector accesses that rely on incidental alignment are caught.
  if (w.full && align < 16 && offset % 16 == 0) offset += align;
  CTSR_CHECK(offset + bytes <= kMaxStaticShared, "static shared memory: `", name, "` (", bytes,
             " bytes) brings the block's static shared memory to ", offset + bytes, " bytes; at most ",
             kMaxStaticShared, " (48 KiB) can be declared statically (use dynamic shared memory beyond)");
  CTSR_CHECK(offset + bytes + w.dynamic_shared.size() <= kMaxSharedPerBlock, "shared memory: `", name, "` (", bytes,
             " bytes) and ", w.dynamic_shared.size(), " bytes of dynamic shared memory exceed the ", kMaxSharedPerBlock,
             " bytes (227 KiB) a block can have");
  std::memset(w.static_shared.data() + offset, 0xff, bytes);  // poison, as dynamic shared memory
  w.static_offsets.emplace_back(key, offset);
  w.static_names.emplace_back(offset, name);
  w.static_used = offset + bytes;
  return w.static_shared.data() + offset;
}

void enforce_launch_bounds(unsigned max_threads) {
  const Worker& w = running_worker();
  CTSR_CHECK(w.threads <= max_threads, "a block of ", w.threads, " threads exceeds the kernel's __launch_bounds__(",
             max_threads, "); a GPU refuses this launch (too many resources requested for launch)");
}

unsigned lane_id() { return running_worker().current->linear % kWarpSize; }

uint64_t warp_exchange(uint64_t value, int src_lane, unsigned mask, WarpSite site) {
  Worker& w = running_worker();
  Fiber* f = w.current;
  const unsigned warp = f->warp;
  const unsigned lane = f->linear % kWarpSize;
  w.warp_slots[warp][lane] = value;
  any_warp_barrier(w, mask, site);  // every live lane has published
  // A source lane that does not exist (past blockDim in a partial warp) or has exited gives
  // an undefined value on a GPU; here it gives all-one bits (NaN, -1), so code that reads
  // one fails visibly. Callers pass their own lane when CUDA defines "own value".
  const uint64_t result = readable_lane(w, warp, src_lane, mask) ? w.warp_slots[warp][src_lane] : ~uint64_t(0);
  any_warp_barrier(w, mask, site);  // every lane has read before anyone publishes again
  return result;
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, written from the PTX ISA's fragment
// tables (and independently of kernels/mma.h, whose layout it therefore checks). With g = lane / 4
// and t = lane % 4, each 32-bit register holds two bf16, the lower k in the low half:
//   A (16 x 16, row)  a[0]: row g, k 2t..2t+1    a[1]: row g+8, k 2t..2t+1
//                     a[2]: row g, k 2t+8..+9    a[3]: row g+8, k 2t+8..+9
//   B (16 x 8, col)   b[0]: k 2t..2t+1, column g b[1]: k 2t+8..+9, column g
//   C, D (16 x 8)     c[0], c[1]: row g, columns 2t, 2t+1; c[2], c[3]: row g+8, same columns
// Products of two bf16 are exact in float; they are summed in float in order of k, then added to
// c. A GPU's tensor core may add in another order, which the tests' bounds allow for.
void warp_mma_m16n8k16_bf16(const uint32_t a[4], const uint32_t b[2], float d[4], WarpSite site) {
  Worker& w = running_worker();
  Fiber* f = w.current;
  const unsigned warp = f->warp, lane = f->linear % kWarpSize;
  // .aligned: every lane of the warp executes the same mma; a partial or diverged warp is an error.
  const unsigned first = warp * kWarpSize;
  CTSR_CHECK(first + kWarpSize <= w.threads, describe(site), ": warp ", warp,
             " has fewer than 32 threads; mma.sync needs a whole warp (the block has ", w.threads, " threads)");
  for (unsigned l = 0; l < kWarpSize; ++l) {
    CTSR_CHECK(!w.fibers[first + l].done, describe(site), ": lane ", l, " of warp ", warp,
               " has exited; mma.sync needs every lane of the warp");
  }
  uint32_t* mine = w.mma_slots[warp][lane];
  for (int i = 0; i < 4; ++i) mine[i] = a[i];
  for (int i = 0; i < 2; ++i) mine[4 + i] = b[i];
  any_warp_barrier(w, 0xffffffffu, site);  // every lane has published
  const auto& slots = w.mma_slots[warp];
  auto half = [](uint32_t reg, unsigned k) { return bits_float((k & 1u) ? (reg & 0xffff0000u) : (reg << 16)); };
  auto a_at = [&](unsigned row, unsigned k) {
    const unsigned src = (row % 8) * 4 + (k % 8) / 2, reg = row / 8 + 2 * (k / 8);
    return half(slots[src][reg], k);
  };
  auto b_at = [&](unsigned k, unsigned col) {
    const unsigned src = col * 4 + (k % 8) / 2, reg = k / 8;
    return half(slots[src][4 + reg], k);
  };
  float out[4];
  for (unsigned i = 0; i < 4; ++i) {
    const unsigned row = lane / 4 + 8 * (i / 2), col = 2 * (lane % 4) + i % 2;
    float sum = 0.0f;
    for (unsigned k = 0; k < 16; ++k) sum = rounded::add(sum, rounded::mul(a_at(row, k), b_at(k, col)));
    out[i] = rounded::add(d[i], sum);
  }
  any_warp_barrier(w, 0xffffffffu, site);  // every lane has read before anyone publishes again
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}

unsigned warp_ballot(bool predicate, unsigned mask, WarpSite site) {
  Worker& w = running_worker();
  Fiber* f = w.current;
  const unsigned warp = f->warp;
  w.warp_slots[warp][f->linear % kWarpSize] = predicate ? 1 : 0;
  any_warp_barrier(w, mask, site);
  unsigned votes = 0;
  for (unsigned lane = 0; lane < kWarpSize; ++lane) {
    if (readable_lane(w, warp, int(lane), mask) && w.warp_slots[warp][lane]) votes |= 1u << lane;
  }
  any_warp_barrier(w, mask, site);
  return votes;
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

namespace {

std::string thread_of(const Worker& w, unsigned linear) {
  const Dim3& t = w.fibers[linear].tid;
  return "thread (" + std::to_string(t.x) + ", " + std::to_string(t.y) + ", " + std::to_string(t.z) + ")";
}

// "`tile` + 12 bytes" for static shared memory, "dynamic shared memory + 12 bytes" otherwise.
std::string shared_word(const Worker& w, bool is_static, size_t offset) {
  if (!is_static) return "dynamic shared memory + " + std::to_string(offset) + " bytes";
  const char* name = "static shared memory";
  size_t base = 0;
  for (const auto& [start, n] : w.static_names) {
    if (start <= offset && start >= base) {
      base = start;
      name = n;
    }
  }
  return "`" + std::string(name) + "` + " + std::to_string(offset - base) + " bytes";
}

std::string code_position(const Worker& w, const void* pc) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", pc);
  return std::string(" (code address ") + buf + " in " + kernel_name(w.kernel) + "; addr2line -e <binary> finds the line)";
}

// The bytes of the 4-byte word at `word` that [a, a + size) covers, as a mask.
uint8_t bytes_in_word(uintptr_t a, unsigned size, uintptr_t word) {
  uint8_t mask = 0;
  for (unsigned k = 0; k < 4; ++k) {
    if (word + k >= a && word + k < a + size) mask |= uint8_t(1u << k);
  }
  return mask;
}

// Shared memory: the rules of racecheck between threads of the block within one epoch (between
// two __syncthreads). A read of a word that was only updated atomically is allowed (the load
// of a compare-and-swap loop).
void check_shared_word(Worker& w, Worker::ShadowWord& s, bool is_static, size_t offset, uint8_t bytes, Access kind,
                       const void* pc) {
  const Fiber& f = *w.current;
  const uint16_t me = static_cast<uint16_t>(f.linear + 1);
  const unsigned warp = f.warp;
  if (s.epoch != w.epoch) s = Worker::ShadowWord{w.epoch};
  // Ordered after `other`'s access: the same thread, or a lane of the same warp with a full-warp
  // sync since (stamp = the warp's sync count at that access).
  auto ordered = [&](uint16_t other, uint64_t stamp) {
    if (other == 0 || other == me) return true;
    return (other - 1u) / kWarpSize == warp && w.warp_full_syncs[warp] != stamp;
  };
  auto fail = [&](const char* hazard, const char* verb, uint16_t other, const char* other_verb) {
    CTSR_FAIL("shared memory race (", hazard, "): ", thread_of(w, f.linear), " ", verb, " ",
              shared_word(w, is_static, offset), " which ",
              other == Worker::kMany ? std::string("several threads") : thread_of(w, other - 1u), " ", other_verb,
              " since the last __syncthreads", code_position(w, pc));
  };
  const bool after_write = (s.write_bytes & bytes) != 0 && !ordered(s.writer, s.writer_sync);
  const bool after_read = (s.read_bytes & bytes) != 0 && s.reader != me &&
                          !(s.reader_warps == (1u << warp) && w.warp_full_syncs[warp] != s.reader_sync);
  switch (kind) {
    case Access::read:
      if (after_write && !s.atomic) fail("read after write", "reads", s.writer, "wrote");
      s.reader = (s.reader == 0 || s.reader == me) ? me : Worker::kMany;
      s.reader_warps |= 1u << warp;
      s.reader_sync = w.warp_full_syncs[warp];
      s.read_bytes |= bytes;
      return;
    case Access::write:
      if (after_write) fail("write after write", "writes", s.writer, s.atomic ? "updated atomically" : "wrote");
      if (after_read) fail("write after read", "writes", s.reader, "read");
      s.atomic = false;
      break;
    case Access::atomic:
      if (after_write && !s.atomic) fail("atomic after write", "updates atomically", s.writer, "wrote");
      if (after_read) fail("atomic after read", "updates atomically", s.reader, "read");
      s.atomic = s.write_bytes == 0 || s.atomic || s.writer == me;
      break;
  }
  s.writer = me;
  s.writer_sync = w.warp_full_syncs[warp];
  s.write_bytes |= bytes;
}

}  // namespace

namespace {

Worker::GlobalWrite* find_global_write(Worker& w, uintptr_t word, bool insert) {
  if (w.global_epoch != w.epoch) {
    w.global_epoch = w.epoch;
    w.global_count = 0;
  }
  if (!insert && w.global_count == 0) return nullptr;
  if (insert && 2 * (w.global_count + 1) > w.global_writes.size()) {
    std::vector<Worker::GlobalWrite> old(w.global_writes.size() * 2);
    old.swap(w.global_writes);
    w.global_count = 0;
    for (const auto& e : old) {
      if (e.epoch == w.epoch) *find_global_write(w, e.word, true) = e;
    }
  }
  const size_t mask = w.global_writes.size() - 1;
  for (size_t i = (word * 0x9e3779b97f4a7c15ull >> 20) & mask;; i = (i + 1) & mask) {
    Worker::GlobalWrite& e = w.global_writes[i];
    if (e.epoch != w.epoch) {
      if (!insert) return nullptr;
      e = Worker::GlobalWrite{word, w.epoch};
      ++w.global_count;
      return &e;
    }
    if (e.word == word) return &e;
  }
}

void check_global_word(Worker& w, uintptr_t word, uint8_t bytes, Access kind, const void* pc) {
  const Fiber& f = *w.current;
  const uint16_t me = static_cast<uint16_t>(f.linear + 1);
  Worker::GlobalWrite* e = find_global_write(w, word, kind != Access::read);
  if (e == nullptr) return;
  const bool ordered = (e->bytes & bytes) == 0 || e->writer == 0 || e->writer == me ||
                       ((e->writer - 1u) / kWarpSize == f.warp && w.warp_full_syncs[f.warp] != e->writer_sync);
  // Atomics do not race with atomics, and a plain read of a word only updated atomically is the
  // load of a compare-and-swap loop.
  const bool allowed = e->atomic && kind != Access::write;
  if (!ordered && !allowed) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%p", reinterpret_cast<const void*>(word));
    const char* hazard = kind == Access::read ? "read after write" : kind == Access::write ? "write after write"
                                                                                           : "atomic after write";
    CTSR_FAIL("global memory race (", hazard, ") in block: ", thread_of(w, f.linear),
              kind == Access::read ? " reads" : " writes", " the word at ", buf, " which ", thread_of(w, e->writer - 1u),
              e->atomic ? " updated atomically" : " wrote",
              " since the last __syncthreads (accumulate with atomics, or give each element one writer)",
              code_position(w, pc));
  }
  if (kind == Access::read) return;
  e->atomic = kind == Access::atomic && (e->bytes == 0 || e->atomic || e->writer == me);
  e->writer = me;
  e->writer_sync = w.warp_full_syncs[f.warp];
  e->bytes |= bytes;
}

}  // namespace

void check_access(const void* address, unsigned size, Access kind, bool maybe_unaligned, const void* pc) {
  Worker* wp = tl_worker;
  if (wp == nullptr || wp->current == nullptr || !wp->full) return;
  Worker& w = *wp;
  const auto a = reinterpret_cast<uintptr_t>(address);
  if (!maybe_unaligned && size > 1 && a % size != 0) {
    CTSR_FAIL("misaligned ", size, "-byte access at ", address, " by ", thread_of(w, w.current->linear),
              ": a GPU requires ", size, "-byte alignment (a vector load from an offset pointer?)", code_position(w, pc));
  }
  const auto st = reinterpret_cast<uintptr_t>(w.static_shared.data());
  const auto dy = reinterpret_cast<uintptr_t>(w.dynamic_shared.data());
  bool is_static;
  size_t offset;
  if (a >= st && a < st + w.static_used) {
    is_static = true;
    offset = a - st;
  } else if (!w.dynamic_shared.empty() && a >= dy && a < dy + w.dynamic_shared.size()) {
    is_static = false;
    offset = a - dy;
  } else {
    // Global (or local) memory: a fiber's own stack is touched by that thread only, so only
    // device memory shared by the block's threads can conflict.
    for (uintptr_t word = a / 4 * 4; word < a + size; word += 4) {
      check_global_word(w, word, bytes_in_word(a, size, word), kind, pc);
    }
    return;
  }
  if (w.shadow.size() < (kMaxStaticShared + kMaxDynamicShared) / 4) w.shadow.resize((kMaxStaticShared + kMaxDynamicShared) / 4);
  const size_t base = is_static ? 0 : kMaxStaticShared;
  for (size_t word = offset / 4 * 4; word < offset + size; word += 4) {
    check_shared_word(w, w.shadow[(base + word) / 4], is_static, word, bytes_in_word(offset, size, word), kind, pc);
  }
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
void set_interleaving_seed(uint64_t seed) { g_seed = seed; }
bool access_checks_available() { return g_access_hooks.load(); }
void set_access_checks_available() { g_access_hooks = true; }

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
