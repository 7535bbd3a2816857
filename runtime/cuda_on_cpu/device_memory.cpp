#include "runtime/cuda_on_cpu/device_memory.h"

#include <execinfo.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>

#include "runtime/cuda_on_cpu/executor.h"
#include "runtime/error.h"

namespace ctsr::cuda_on_cpu {

namespace {

constexpr size_t kAlignment = 256;  // like cudaMalloc

// Read by the signal handler, so plain atomics set once.
std::atomic<uintptr_t> g_base{0};
std::atomic<size_t> g_size{0};

std::mutex g_access_mutex;  // guards g_open_scopes and the range's protection
int g_open_scopes = 0;

struct sigaction g_previous_handler;

void protect_locked(int protection) {
  const uintptr_t base = g_base.load();
  if (base == 0) return;
  CTSR_CHECK(mprotect(reinterpret_cast<void*>(base), g_size.load(), protection) == 0,
             "CUDA-on-CPU executor: mprotect of the device memory range (", g_size.load(),
             " bytes) failed: ", std::strerror(errno), "; expected it to switch between no access and read-write");
}

void write_text(const char* s) {
  ssize_t ignored = write(STDERR_FILENO, s, std::strlen(s));
  (void)ignored;
}

// Async-signal-safe: no allocation, no stdio.
void report_host_access(const void* address) {
  char hex[2 + 16 + 1] = "0x";
  uintptr_t a = reinterpret_cast<uintptr_t>(address);
  char digits[16];
  int n = 0;
  do {
    digits[n++] = "0123456789abcdef"[a & 15];
    a >>= 4;
  } while (a != 0);
  for (int i = 0; i < n; ++i) hex[2 + i] = digits[n - 1 - i];
  hex[2 + n] = 0;
  write_text("CUDA-on-CPU executor (CTSR_EXECUTOR_CHECKS=full): host code read or wrote device memory at ");
  write_text(hex);
  write_text(" outside a kernel launch or a copy (on a GPU this is an invalid host access to device memory)\n");
  void* frames[64];
  const int depth = backtrace(frames, 64);
  backtrace_symbols_fd(frames, depth, STDERR_FILENO);
}

// The default action for SIGSEGV: returning from the handler re-runs the faulting access, which
// then ends the process.
void restore_default_action() {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGSEGV, &dfl, nullptr);
}

void on_segv(int signal, siginfo_t* info, void* context) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(info->si_addr);
  const uintptr_t base = g_base.load();
  if (base != 0 && address >= base && address - base < g_size.load()) {
    if (checks() != Checks::full) {
      // Fast mode again after full mode: the range stays open from now on; retry the access.
      if (mprotect(reinterpret_cast<void*>(base), g_size.load(), PROT_READ | PROT_WRITE) == 0) return;
    }
    report_host_access(info->si_addr);
    restore_default_action();
    return;
  }
  if ((g_previous_handler.sa_flags & SA_SIGINFO) && g_previous_handler.sa_sigaction != nullptr) {
    g_previous_handler.sa_sigaction(signal, info, context);
    return;
  }
  if (g_previous_handler.sa_handler != SIG_DFL && g_previous_handler.sa_handler != SIG_IGN) {
    g_previous_handler.sa_handler(signal);
    return;
  }
  restore_default_action();
}

void install_handler() {
  void* warm[1];
  backtrace(warm, 1);  // loads the unwinder now, not in the handler
  struct sigaction action {};
  action.sa_sigaction = on_segv;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  CTSR_CHECK(sigaction(SIGSEGV, &action, &g_previous_handler) == 0,
             "CUDA-on-CPU executor: installing the SIGSEGV handler failed: ", std::strerror(errno));
}

size_t range_size_for_this_machine() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  const size_t physical = pages > 0 && page > 0 ? size_t(pages) * size_t(page) : size_t{64} << 30;
  return std::max(physical, size_t{1} << 30);
}

// Transparent huge pages: mprotect then changes one entry per 2 MiB instead of one per 4 KiB,
// which is most of what a scope costs once the range holds a model's tensors.
constexpr size_t kHugePage = size_t{2} << 20;

void create_range() {
  const size_t size = (range_size_for_this_machine() + kHugePage - 1) / kHugePage * kHugePage;
  void* reserved = mmap(nullptr, size + kHugePage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  CTSR_CHECK(reserved != MAP_FAILED, "CUDA-on-CPU executor: reserving ", size,
             " bytes of address space for device memory (CTSR_EXECUTOR_CHECKS=full) failed: ", std::strerror(errno));
  const uintptr_t base = (reinterpret_cast<uintptr_t>(reserved) + kHugePage - 1) / kHugePage * kHugePage;
  madvise(reinterpret_cast<void*>(base), size, MADV_HUGEPAGE);  // a hint: without it only slower
  install_handler();
  std::lock_guard<std::mutex> lock(g_access_mutex);
  g_size = size;
  g_base = base;
  if (g_open_scopes > 0) protect_locked(PROT_READ | PROT_WRITE);
}

// First fit over the free extents, then the untouched top of the range.
struct SubAllocator {
  std::mutex mutex;
  size_t top = 0;   // offsets below it have been handed out at least once
  size_t used = 0;  // bytes in live blocks
  std::map<size_t, size_t> free;             // offset -> length
  std::unordered_map<size_t, size_t> live;   // offset -> length

  size_t allocate(size_t length) {  // returns SIZE_MAX when full
    for (auto it = free.begin(); it != free.end(); ++it) {
      if (it->second < length) continue;
      const size_t offset = it->first, rest = it->second - length;
      free.erase(it);
      if (rest) free[offset + length] = rest;
      return offset;
    }
    if (g_size.load() - top < length) return SIZE_MAX;
    top += length;
    return top - length;
  }
  // Returns the freed extent after merging with its neighbours.
  std::pair<size_t, size_t> release(size_t offset, size_t length) {
    auto next = free.lower_bound(offset);
    if (next != free.end() && next->first == offset + length) {
      length += next->second;
      next = free.erase(next);
    }
    if (next != free.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == offset) {
        offset = prev->first;
        length += prev->second;
        free.erase(prev);
      }
    }
    if (offset + length == top) top = offset;
    else free[offset] = length;
    return {offset, length};
  }
};

SubAllocator& sub_allocator() {
  static SubAllocator* s = new SubAllocator();  // leaked: blocks may be freed during exit
  return *s;
}

}  // namespace

bool device_memory_protected() { return checks() == Checks::full; }

DeviceMemoryAccess::DeviceMemoryAccess(bool open) : open_(open) {
  if (!open_) return;
  std::lock_guard<std::mutex> lock(g_access_mutex);
  if (g_open_scopes++ == 0) protect_locked(PROT_READ | PROT_WRITE);
}

DeviceMemoryAccess::~DeviceMemoryAccess() {
  if (!open_) return;
  std::lock_guard<std::mutex> lock(g_access_mutex);
  if (--g_open_scopes == 0 && checks() == Checks::full) {
    const uintptr_t base = g_base.load();
    // Not protect_locked: a destructor must not throw; a failure leaves the range open.
    if (base != 0) mprotect(reinterpret_cast<void*>(base), g_size.load(), PROT_NONE);
  }
}

void* protected_allocate(size_t bytes, size_t capacity) {
  static std::once_flag once;
  std::call_once(once, create_range);
  const size_t length = (std::max<size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
  SubAllocator& s = sub_allocator();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (capacity && s.used + length > capacity) return nullptr;
  const size_t offset = s.allocate(length);
  if (offset == SIZE_MAX) return nullptr;
  s.live[offset] = length;
  s.used += length;
  return reinterpret_cast<void*>(g_base.load() + offset);
}

void protected_release(void* ptr) {
  const size_t offset = reinterpret_cast<uintptr_t>(ptr) - g_base.load();
  SubAllocator& s = sub_allocator();
  std::lock_guard<std::mutex> lock(s.mutex);
  auto it = s.live.find(offset);
  CTSR_CHECK(it != s.live.end(), "CUDA-on-CPU executor: release of ", ptr,
             ", which is not a block of the protected device memory range");
  s.used -= it->second;
  auto [start, length] = s.release(offset, it->second);
  s.live.erase(it);
  // Whole pages inside the merged free extent go back to the system (they read as zeros later).
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  const size_t first = (start + page - 1) / page * page, last = (start + length) / page * page;
  if (last > first) madvise(reinterpret_cast<void*>(g_base.load() + first), last - first, MADV_DONTNEED);
}

size_t protected_used_bytes() {
  SubAllocator& s = sub_allocator();
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.used;
}

size_t protected_range_bytes() { return g_size.load(); }

bool in_protected_range(const void* ptr) {
  const uintptr_t base = g_base.load(), p = reinterpret_cast<uintptr_t>(ptr);
  return base != 0 && p >= base && p - base < g_size.load();
}

}  // namespace ctsr::cuda_on_cpu
