// Kernels that test the CUDA-on-CPU executor itself (tests/executor_kernels.cu, compiled for
// the executor and, with CUDA, for the GPU, so the same expectations hold on real hardware).
// All tensors are int32 or float32 on the launcher's device.
#pragma once

#include "kernels/launchers.h"
#include "runtime/tensor.h"

CTSR_DECLARE_LAUNCHERS(
  // One warp-wide bf16 tensor-core multiply (kernels/mma.h) on `threads` threads (32 for a whole
  // warp): a [16, 16] and b [16, 8] bf16 row major, d [16, 8] float32 holds C on entry and D = A B
  // + C on return. Fragments are loaded from and stored to global memory by the documented layout,
  // or with one index wrong: `mutation` 1 swaps the k halves of A's register 3, 2 reads B's
  // register 1 from k 0..7 instead of 8..15, 3 exchanges the two columns of each C pair.
  void mma_tile(const Tensor& a, const Tensor& b, Tensor& d, int mutation, unsigned threads);
  // Per-block sums of x with a shared-memory tree (blockDim must be a power of two).
  void tiled_block_sums(const Tensor& x, Tensor& block_sums, unsigned threads);
  // Per-block sums with __shfl_down_sync within warps, then across warps; any blockDim.
  void shuffle_block_sums(const Tensor& x, Tensor& block_sums, unsigned threads);
  // Inclusive scan of each block's segment (Hillis-Steele, two barriers per step).
  // skip_first_barrier removes the barrier between the read and the write of a step.
  void block_inclusive_scan(const Tensor& x, Tensor& y, unsigned threads, bool skip_first_barrier);
  // Histogram (int atomicAdd), float atomicAdd total, atomicMax int/unsigned/float, and a
  // counter incremented through atomicCAS on int, unsigned and float, from every thread.
  void atomics_from_many_blocks(const Tensor& values, Tensor& histogram, Tensor& float_total, Tensor& maxima,
                                Tensor& cas_counters, unsigned blocks, unsigned threads);
  // Reverses each block's segment through dynamic shared memory of (threads + pad) floats.
  void reverse_through_dynamic_shared(const Tensor& x, Tensor& y, unsigned threads, unsigned pad);
  // Writes each thread's global linear id at its own slot for a 3-D grid of 3-D blocks.
  void write_linear_ids(Tensor& out, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz);
  // Per-lane results of __shfl_sync/up/down/xor with `width`, and __ballot_sync of odd values.
  void warp_intrinsics(const Tensor& x, Tensor& idx, Tensor& up, Tensor& down, Tensor& xr, Tensor& ballot,
                       unsigned threads, int width);
  // __syncthreads_count of (x > 0) per block.
  void syncthreads_count(const Tensor& x, Tensor& counts, unsigned threads);
  // __syncthreads inside a branch only even threads take (a bug the executor must report).
  void divergent_barrier(Tensor& out, unsigned threads);
  // Lane 0 waits at __syncthreads while lanes 1..31 wait in a shuffle: can never complete.
  void barrier_deadlock(Tensor& out);
  // Three blocks of 64 threads write their ids; thread `thread` of block `block` calls __trap().
  void trap_in_one_thread(Tensor& out, unsigned block, unsigned thread);
  // Breaking (and conforming) kernels of the strict mode (tests/test_strict_executor.cpp):
  // 32 lanes shuffle with mask 0x0000ffff (lanes 16..31 are outside their mask).
  void shuffle_outside_mask(Tensor& out);
  // The two half-warps shuffle with the full mask at two different calls.
  void shuffles_at_two_sites(Tensor& out);
  // Each of out.numel() blocks: every thread writes its id to one shared int, then thread 0
  // stores the survivor in out[block].
  void last_writer_wins(Tensor& out, unsigned threads);
  // y[t] = x[n - 1 - t] through shared memory; sync 0: no barrier, 1: __syncwarp, 2: __syncthreads.
  void exchange_through_shared(const Tensor& x, Tensor& y, int sync);
  // 64 threads read a neighbour's shared word and overwrite their own with no barrier between.
  void overwrite_after_barrier(Tensor& y);
  // out (uint32 bits in an int32 tensor, 32 per block) = static shared memory read before any write.
  void read_static_shared_first(Tensor& out);
  // One block of `threads` adds 1 each to total[0], with atomicAdd or with a plain +=.
  void accumulate_in_global(Tensor& total, unsigned threads, bool atomic);
  // A kernel with __launch_bounds__(64), launched with `threads` per block.
  void bounded_to_64(Tensor& out, unsigned threads);
  // y[t] = the sum of the float4 at x + offset + 4t (offset 1: misaligned).
  void vector_load(const Tensor& x, Tensor& y, int offset);
  // 32 threads read a 128-float static shared array as float4s.
  void vector_load_from_shared(const Tensor& x, Tensor& y);
  // Executor only: 32 KiB of static shared memory (64 KiB with second_array) plus dynamic_bytes.
  void shared_over_limits(Tensor& out, bool second_array, size_t dynamic_bytes);
)
