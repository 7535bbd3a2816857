// The CUDA-on-CPU executor: runs kernels written in CUDA C++ on the host.
//
// A launch runs the grid's blocks on host threads (OpenMP, in parallel). Within a block, every
// CUDA thread is a fiber with its own stack; fibers run one after another on the block's host
// thread and switch only at barriers (__syncthreads, and the warp-level barriers inside
// shuffles, ballots and __syncwarp). Between two barriers a fiber therefore runs alone, so a
// missing barrier shows up as a wrong result rather than a rare race. Schedule order can be
// reversed (set_thread_order) to expose code that silently relies on thread 0 running first.
// Barrier misuse is reported as an error, not a hang: a thread that finishes while others
// wait at __syncthreads (divergent barrier), or a barrier that can never complete (threads
// waiting at __syncthreads while their warp-mates wait in a shuffle).
//
// Kernels never call this header directly: they use CUDA's names through cuda_compat.h, and
// are launched through ctsr::launch_kernel (runtime/kernel_prelude.h).
#pragma once

#include <cstddef>
#include <cstdint>

namespace ctsr::cuda_on_cpu {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr Dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

using KernelBody = void (*)(void* closure);

// Runs body(closure) once per CUDA thread of the grid. Throws ctsr::Error on an invalid
// configuration (CUDA's limits: 1024 threads per block, block z <= 64, grid y, z <= 65535),
// on a barrier deadlock, or when the kernel throws; the message names the kernel (`kernel`, the
// kernel function itself, used for its name only), the block and the thread.
void launch(const void* kernel, Dim3 grid, Dim3 block, size_t dynamic_shared_bytes, KernelBody body, void* closure);

// __trap(): the kernel stops with an error (the executor's form of a device-side fault).
[[noreturn]] void trap();

// Builtins, valid inside a running kernel.
const Dim3& thread_idx();
const Dim3& block_idx();
const Dim3& block_dim();
const Dim3& grid_dim();
void* dynamic_shared_memory();
void sync_threads();
int sync_threads_count(int predicate);  // __syncthreads_count: barrier, then how many had it
// Where a warp-synchronous intrinsic was called: which one, and its source position.
struct WarpSite {
  const char* op;
  const char* file;
  unsigned line, column;
};
void sync_warp(unsigned mask, WarpSite site);
// Warp exchange: every live lane of the warp publishes `value`; each gets the value published
// by lane `src_lane`, or all-one bits when that lane does not exist or has exited (or, under
// full checks, is outside `mask`).
uint64_t warp_exchange(uint64_t value, int src_lane, unsigned mask, WarpSite site);
unsigned warp_ballot(bool predicate, unsigned mask, WarpSite site);  // bit i: live lane i has predicate
// The warp-wide tensor-core multiply mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32:
// d += A B for the 16x16 A and 16x8 B whose fragments the 32 lanes hold (PTX ISA layouts; see
// kernels/mma.h). Every lane of the warp must call it; a partial warp or an exited lane is an error.
void warp_mma_m16n8k16_bf16(const uint32_t a[4], const uint32_t b[2], float d[4], WarpSite site);
// The running block's copy of a static __shared__ variable (CTSR_STATIC_SHARED), identified by
// `key` (unique per declaration and template instance): allocated at its first use in the block,
// filled with 0xff bytes, at most 48 KiB of static shared memory per block and 227 KiB with the
// dynamic shared memory.
void* static_shared_memory(const void* key, size_t bytes, size_t align, const char* name);
template <class T>
T& static_shared(const void* key, const char* name) {
  return *static_cast<T*>(static_shared_memory(key, sizeof(T), alignof(T), name));
}
// CTSR_LAUNCH_BOUNDS_CHECK(n): the block may have at most n threads (the kernel's
// __launch_bounds__, which a GPU enforces by refusing the launch).
void enforce_launch_bounds(unsigned max_threads);
unsigned warp_active_mask();
unsigned lane_id();

// Called for each memory access of instrumented kernel code (ctsr_tests_checked; see
// runtime/cuda_on_cpu/access_hooks.cpp). Under full checks, inside a kernel: an access of 2, 4,
// 8 or 16 bytes must be naturally aligned (`maybe_unaligned` marks the compiler's own unaligned
// accesses, which are not checked), and a shared-memory word must not be read or written by one
// thread after another thread wrote it, or written after another thread read it, with no
// __syncthreads between (a full-warp __syncwarp or shuffle orders lanes of one warp); atomics
// do not race with atomics. Throws ctsr::Error naming the kernel's thread, the variable and
// the other thread.
enum class Access : uint8_t { read, write, atomic };
void check_access(const void* address, unsigned size, Access kind, bool maybe_unaligned, const void* pc);

// Settings (process-wide).
void set_worker_threads(int n);    // host threads for blocks; 0 = OpenMP's default
int worker_threads();
// Checks: `fast` (the default, for the main job) or `full` (CTSR_EXECUTOR_CHECKS=full): warp
// masks and call sites of warp barriers checked, threads of a block interleaved in a seeded
// random order (CTSR_EXECUTOR_SEED), static shared memory allocated per block, poisoned and
// size-checked, __launch_bounds__ enforced, executor device memory unreadable by host code
// outside kernels and copies, and, in a binary whose kernels are instrumented
// (ctsr_tests_checked), shared-memory races and misaligned vector accesses reported.
enum class Checks { fast, full };
void set_checks(Checks checks);  // overrides CTSR_EXECUTOR_CHECKS
Checks checks();
void set_interleaving_seed(uint64_t seed);  // overrides CTSR_EXECUTOR_SEED (default 1)
// Whether this binary's kernels report their memory accesses (ctsr_tests_checked): only then
// do full checks include the shared-memory race and alignment rules.
bool access_checks_available();
void set_access_checks_available();  // called by runtime/cuda_on_cpu/access_hooks.cpp
enum class ThreadOrder { forward, reverse };
void set_thread_order(ThreadOrder order);
ThreadOrder thread_order();

}  // namespace ctsr::cuda_on_cpu
