// Test kernels for the CUDA-on-CPU executor (tests/executor_kernels.h).
#include "runtime/kernel_prelude.h"

#include "kernels/mma.h"
#include "tests/executor_kernels.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

__global__ void tiled_sum_kernel(const float* x, float* sums, int n) {
  CTSR_STATIC_SHARED(tile, float[1024]);
  const unsigned t = threadIdx.x;
  const int i = int(blockIdx.x * blockDim.x + t);
  tile[t] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (t < stride) tile[t] += tile[t + stride];
    __syncthreads();
  }
  if (t == 0) sums[blockIdx.x] = tile[0];
}

__global__ void shuffle_sum_kernel(const float* x, float* sums, int n) {
  CTSR_STATIC_SHARED(warp_sums, float[32]);
  const unsigned t = threadIdx.x, lane = t % 32, warp = t / 32;
  const int i = int(blockIdx.x * blockDim.x + t);
  // A partial last warp (blockDim not a multiple of 32) must not read lanes that do not exist.
  const unsigned lanes = min(32u, blockDim.x - warp * 32);
  float v = i < n ? x[i] : 0.0f;
  for (int offset = 16; offset > 0; offset /= 2) {
    const float other = __shfl_down_sync(0xffffffffu, v, offset);
    if (lane + offset < lanes) v += other;
  }
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  const unsigned warps = (blockDim.x + 31) / 32;
  if (warp == 0) {
    v = lane < warps ? warp_sums[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset /= 2) {
      const float other = __shfl_down_sync(0xffffffffu, v, offset);
      if (lane + offset < lanes) v += other;
    }
    if (lane == 0) sums[blockIdx.x] = v;
  }
}

__global__ void scan_kernel(const float* x, float* y, int n, bool skip_first_barrier) {
  CTSR_STATIC_SHARED(buffer, float[1024]);
  const unsigned t = threadIdx.x;
  const int i = int(blockIdx.x * blockDim.x + t);
  buffer[t] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (unsigned offset = 1; offset < blockDim.x; offset *= 2) {
    const float add = t >= offset ? buffer[t - offset] : 0.0f;
    if (!skip_first_barrier) __syncthreads();  // every read of this step before any write
    buffer[t] += add;
    __syncthreads();                           // every write before the next step's reads
  }
  if (i < n) y[i] = buffer[t];
}

__global__ void atomics_kernel(const int* values, int n, int* histogram, float* total, int* max_int,
                               unsigned* max_unsigned, float* max_float, int* cas_int, unsigned* cas_unsigned,
                               float* cas_float) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  const int v = values[i];
  atomicAdd(&histogram[v % 16], 1);
  atomicAdd(total, 0.5f);
  atomicMax(max_int, v - 1000);
  atomicMax(max_unsigned, unsigned(v) * 3u);
  atomicMax(max_float, float(v) * 0.25f);
  int old_i = *cas_int, seen_i;
  do {
    seen_i = old_i;
    old_i = atomicCAS(cas_int, seen_i, seen_i + 1);
  } while (old_i != seen_i);
  unsigned old_u = *cas_unsigned, seen_u;
  do {
    seen_u = old_u;
    old_u = atomicCAS(cas_unsigned, seen_u, seen_u + 2u);
  } while (old_u != seen_u);
  float old_f = *cas_float, seen_f;
  do {
    seen_f = old_f;
    old_f = atomicCAS(cas_float, seen_f, seen_f + 1.0f);
  } while (__float_as_uint(old_f) != __float_as_uint(seen_f));
}

__global__ void reverse_kernel(const float* x, float* y, int n, unsigned pad) {
  CTSR_DYNAMIC_SHARED(float, segment);
  const unsigned t = threadIdx.x;
  const int base = int(blockIdx.x * blockDim.x);
  const int len = min(int(blockDim.x), n - base);
  if (int(t) < len) segment[pad + t] = x[base + int(t)];
  __syncthreads();
  if (int(t) < len) y[base + int(t)] = segment[pad + unsigned(len) - 1 - t];
}

__global__ void linear_id_kernel(int* out) {
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned id = block * (blockDim.x * blockDim.y * blockDim.z) + thread;
  out[id] = int(id);
}

__global__ void warp_intrinsics_kernel(const int* x, int* idx, int* up, int* down, int* xr, unsigned* ballot,
                                       int width) {
  const unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
  const int v = x[t];
  idx[t] = __shfl_sync(0xffffffffu, v, 3, width);
  up[t] = __shfl_up_sync(0xffffffffu, v, 2, width);
  down[t] = __shfl_down_sync(0xffffffffu, v, 5, width);
  xr[t] = __shfl_xor_sync(0xffffffffu, v, 1, width);
  ballot[t] = __ballot_sync(0xffffffffu, v % 2 != 0);
}

__global__ void syncthreads_count_kernel(const float* x, int* counts) {
  const unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
  const int c = __syncthreads_count(x[t] > 0.0f);
  if (threadIdx.x == 0) counts[blockIdx.x] = c;
}

__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x % 2 == 0) __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void shuffle_waits_for_barrier_kernel(int* out) {
  // Lane 0 waits at __syncthreads, lanes 1..31 wait in a shuffle that needs lane 0.
  int v = int(threadIdx.x);
  if (threadIdx.x == 0) __syncthreads();
  else v = __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

__global__ void trap_in_one_thread_kernel(int* out, unsigned block, unsigned thread) {
  if (blockIdx.x == block && threadIdx.x == thread) __trap();
  out[blockIdx.x * blockDim.x + threadIdx.x] = int(threadIdx.x);
}


// ---- kernels that break (or keep) a rule of the strict mode, CTSR_EXECUTOR_CHECKS=full ----

__global__ void shuffle_outside_mask_kernel(int* out) {
  // Lanes 16..31 take part in a shuffle whose mask names lanes 0..15 only.
  out[threadIdx.x] = __shfl_sync(0x0000ffffu, int(threadIdx.x), 0);
}

__global__ void shuffles_at_two_sites_kernel(int* out) {
  // Both halves of the warp shuffle with the full mask, but at two different calls.
  int v = int(threadIdx.x);
  if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffffu, v, 16);
  else v = __shfl_xor_sync(0xffffffffu, v, 16);
  out[threadIdx.x] = v;
}

__global__ void last_writer_wins_kernel(int* out) {
  // Every thread writes the same shared word before the barrier: which value survives depends
  // on the order the threads run in (a write-write race).
  CTSR_STATIC_SHARED(winner, int[1]);
  winner[0] = int(threadIdx.x);
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = winner[0];
}

__global__ void exchange_through_shared_kernel(const float* x, float* y, int sync) {
  // Thread t reads the word thread (n - 1 - t) wrote: needs __syncthreads (sync = 2) or, within
  // one warp, __syncwarp (sync = 1); sync = 0 is a race.
  CTSR_STATIC_SHARED(buf, float[64]);
  const unsigned t = threadIdx.x, n = blockDim.x;
  buf[t] = x[t];
  if (sync == 2) __syncthreads();
  if (sync == 1) __syncwarp();
  y[t] = buf[n - 1 - t];
}

__global__ void overwrite_after_barrier_kernel(float* y) {
  // Reads a neighbour's word and overwrites its own with no barrier between: a neighbour may
  // still have to read it (write after read).
  CTSR_STATIC_SHARED(buf, float[64]);
  buf[threadIdx.x] = float(threadIdx.x);
  __syncthreads();
  const float v = buf[(threadIdx.x + 1) % 64];
  buf[threadIdx.x] = 2 * v;
  y[threadIdx.x] = v;
}

__global__ void read_static_shared_first_kernel(unsigned* out) {
  // Reads static shared memory before any thread of the block wrote it.
  CTSR_STATIC_SHARED(s, unsigned[32]);
  out[blockIdx.x * 32 + threadIdx.x] = s[threadIdx.x];
  s[threadIdx.x] = 7u;
}

__global__ void __launch_bounds__(64) bounded_to_64_kernel(int* out) {
  CTSR_LAUNCH_BOUNDS_CHECK(64);
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}

__global__ void vector_load_kernel(const float* x, float* y, int offset) {
  const float4 v = *reinterpret_cast<const float4*>(x + offset + 4 * threadIdx.x);
  y[threadIdx.x] = v.x + v.y + v.z + v.w;
}

__global__ void vector_load_from_shared_kernel(const float* x, float* y) {
  // float4 reads of a float array: its declaration does not ask for 16-byte alignment.
  CTSR_STATIC_SHARED(tile, float[128]);
  for (unsigned i = threadIdx.x; i < 128; i += blockDim.x) tile[i] = x[i];
  __syncthreads();
  const float4 v = *reinterpret_cast<const float4*>(tile + 4 * threadIdx.x);
  y[threadIdx.x] = v.x + v.y + v.z + v.w;
}

__global__ void accumulate_in_global_kernel(float* total, int atomic) {
  // Every thread of the block adds 1 to one global word: a race unless atomic.
  if (atomic) atomicAdd(total, 1.0f);
  else *total += 1.0f;
}

#if !defined(__CUDACC__)
// Over the limits nvcc itself refuses at compile time (static shared memory over 48 KiB), or
// that a GPU refuses at launch: executor only.
__global__ void shared_over_limits_kernel(float* out, int second_array) {
  CTSR_STATIC_SHARED(a, float[8192]);  // 32 KiB
  a[threadIdx.x] = 1.0f;
  float total = a[threadIdx.x];
  if (second_array) {
    CTSR_STATIC_SHARED(b, float[8192]);  // 32 KiB more: 64 KiB of static shared memory
    b[threadIdx.x] = 2.0f;
    total += b[threadIdx.x];
  }
  out[threadIdx.x] = total;
}
#endif

__global__ void mma_tile_kernel(const uint16_t* a, const uint16_t* b, float* d, int mutation) {
  using L = mma::FragmentLayout;
  const int lane = int(threadIdx.x) % 32;
  mma::FragA fa;
  for (int reg = 0; reg < 4; ++reg) {
    int k0 = L::a_col(lane, reg, 0), k1 = L::a_col(lane, reg, 1);
    if (mutation == 1 && reg == 3) k0 ^= 8, k1 ^= 8;
    const int row = L::a_row(lane, reg);
    fa.r[reg] = mma::pack_bf16x2(a[row * 16 + k0], a[row * 16 + k1]);
  }
  mma::FragB fb;
  for (int reg = 0; reg < 2; ++reg) {
    const int k0 = L::b_row(lane, mutation == 2 ? 0 : reg, 0), k1 = L::b_row(lane, mutation == 2 ? 0 : reg, 1);
    fb.r[reg] = mma::pack_bf16x2(b[k0 * 8 + L::b_col(lane)], b[k1 * 8 + L::b_col(lane)]);
  }
  auto c_at = [&](int i) { return L::c_row(lane, i) * 8 + (mutation == 3 ? L::c_col(lane, i ^ 1) : L::c_col(lane, i)); };
  mma::FragC fc;
  for (int i = 0; i < 4; ++i) fc.v[i] = d[c_at(i)];
  mma::mma_bf16(fc, fa, fb);
  __syncwarp();  // every lane has read its C before any lane writes D
  for (int i = 0; i < 4; ++i) d[c_at(i)] = fc.v[i];
}

}  // namespace

void mma_tile(const Tensor& a, const Tensor& b, Tensor& d, int mutation, unsigned threads) {
  launch_kernel(a.device(), mma_tile_kernel, 1, threads, 0, reinterpret_cast<const uint16_t*>(a.data<bfloat16>()),
                reinterpret_cast<const uint16_t*>(b.data<bfloat16>()), d.data<float>(), mutation);
}

void tiled_block_sums(const Tensor& x, Tensor& sums, unsigned threads) {
  launch_kernel(x.device(), tiled_sum_kernel, unsigned(sums.numel()), threads, 0, x.data<float>(), sums.data<float>(),
                int(x.numel()));
}

void shuffle_block_sums(const Tensor& x, Tensor& sums, unsigned threads) {
  launch_kernel(x.device(), shuffle_sum_kernel, unsigned(sums.numel()), threads, 0, x.data<float>(),
                sums.data<float>(), int(x.numel()));
}

void block_inclusive_scan(const Tensor& x, Tensor& y, unsigned threads, bool skip_first_barrier) {
  launch_kernel(x.device(), scan_kernel, blocks_for(x.numel(), threads), threads, 0, x.data<float>(), y.data<float>(),
                int(x.numel()), skip_first_barrier);
}

void atomics_from_many_blocks(const Tensor& values, Tensor& histogram, Tensor& total, Tensor& maxima,
                              Tensor& cas_counters, unsigned blocks, unsigned threads) {
  int* m = maxima.data<int>();
  int* c = cas_counters.data<int>();
  launch_kernel(values.device(), atomics_kernel, blocks, threads, 0, values.data<int>(), int(values.numel()),
                histogram.data<int>(), total.data<float>(), m, reinterpret_cast<unsigned*>(m + 1),
                reinterpret_cast<float*>(m + 2), c, reinterpret_cast<unsigned*>(c + 1), reinterpret_cast<float*>(c + 2));
}

void reverse_through_dynamic_shared(const Tensor& x, Tensor& y, unsigned threads, unsigned pad) {
  launch_kernel(x.device(), reverse_kernel, blocks_for(x.numel(), threads), threads, (threads + pad) * sizeof(float),
                x.data<float>(), y.data<float>(), int(x.numel()), pad);
}

void write_linear_ids(Tensor& out, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz) {
  launch_kernel(out.device(), linear_id_kernel, dim3(gx, gy, gz), dim3(bx, by, bz), 0, out.data<int>());
}

void warp_intrinsics(const Tensor& x, Tensor& idx, Tensor& up, Tensor& down, Tensor& xr, Tensor& ballot,
                     unsigned threads, int width) {
  launch_kernel(x.device(), warp_intrinsics_kernel, blocks_for(x.numel(), threads), threads, 0, x.data<int>(),
                idx.data<int>(), up.data<int>(), down.data<int>(), xr.data<int>(),
                reinterpret_cast<unsigned*>(ballot.data<int>()), width);
}

void syncthreads_count(const Tensor& x, Tensor& counts, unsigned threads) {
  launch_kernel(x.device(), syncthreads_count_kernel, unsigned(counts.numel()), threads, 0, x.data<float>(),
                counts.data<int>());
}

void divergent_barrier(Tensor& out, unsigned threads) {
  launch_kernel(out.device(), divergent_barrier_kernel, 1u, threads, 0, out.data<int>());
}

void trap_in_one_thread(Tensor& out, unsigned block, unsigned thread) {
  launch_kernel(out.device(), trap_in_one_thread_kernel, 3u, 64u, 0, out.data<int>(), block, thread);
}

void shuffle_outside_mask(Tensor& out) {
  launch_kernel(out.device(), shuffle_outside_mask_kernel, 1u, 32u, 0, out.data<int>());
}

void shuffles_at_two_sites(Tensor& out) {
  launch_kernel(out.device(), shuffles_at_two_sites_kernel, 1u, 32u, 0, out.data<int>());
}

void last_writer_wins(Tensor& out, unsigned threads) {
  launch_kernel(out.device(), last_writer_wins_kernel, unsigned(out.numel()), threads, 0, out.data<int>());
}

void exchange_through_shared(const Tensor& x, Tensor& y, int sync) {
  launch_kernel(x.device(), exchange_through_shared_kernel, 1u, unsigned(x.numel()), 0, x.data<float>(),
                y.data<float>(), sync);
}

void overwrite_after_barrier(Tensor& y) {
  launch_kernel(y.device(), overwrite_after_barrier_kernel, 1u, 64u, 0, y.data<float>());
}

void read_static_shared_first(Tensor& out) {
  launch_kernel(out.device(), read_static_shared_first_kernel, unsigned(out.numel() / 32), 32u, 0,
                reinterpret_cast<unsigned*>(out.data<int>()));
}

void bounded_to_64(Tensor& out, unsigned threads) {
  launch_kernel(out.device(), bounded_to_64_kernel, unsigned(out.numel() / threads), threads, 0, out.data<int>());
}

void accumulate_in_global(Tensor& total, unsigned threads, bool atomic) {
  launch_kernel(total.device(), accumulate_in_global_kernel, 1u, threads, 0, total.data<float>(), int(atomic));
}

void vector_load(const Tensor& x, Tensor& y, int offset) {
  launch_kernel(x.device(), vector_load_kernel, 1u, unsigned(y.numel()), 0, x.data<float>(), y.data<float>(), offset);
}

void vector_load_from_shared(const Tensor& x, Tensor& y) {
  launch_kernel(x.device(), vector_load_from_shared_kernel, 1u, 32u, 0, x.data<float>(), y.data<float>());
}

void shared_over_limits(Tensor& out, bool second_array, size_t dynamic_bytes) {
#if defined(__CUDACC__)
  (void)out, (void)second_array, (void)dynamic_bytes;
  CTSR_FAIL("shared_over_limits: executor only (nvcc refuses static shared memory over 48 KiB when compiling)");
#else
  launch_kernel(out.device(), shared_over_limits_kernel, 1u, 32u, dynamic_bytes, out.data<float>(), int(second_array));
#endif
}

void barrier_deadlock(Tensor& out) {
  launch_kernel(out.device(), shuffle_waits_for_barrier_kernel, 1u, 32u, 0, out.data<int>());
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
