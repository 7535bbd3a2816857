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
void sync_warp();
// Warp exchange: every live lane of the warp publishes `value`; each gets the value published
// by lane `src_lane`, or all-one bits when that lane does not exist or has exited.
uint64_t warp_exchange(uint64_t value, int src_lane);
unsigned warp_ballot(bool predicate);  // bit i set when live lane i has predicate
unsigned warp_active_mask();
unsigned lane_id();

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
enum class ThreadOrder { forward, reverse };
void set_thread_order(ThreadOrder order);
ThreadOrder thread_order();

}  // namespace ctsr::cuda_on_cpu
