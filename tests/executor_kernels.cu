// Test kernels for the CUDA-on-CPU executor (tests/executor_kernels.h).
#include "runtime/kernel_prelude.h"

#include "tests/executor_kernels.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

__global__ void tiled_sum_kernel(const float* x, float* sums, int n) {
  __shared__ float tile[1024];
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
  __shared__ float warp_sums[32];
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
  __shared__ float buffer[1024];
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

}  // namespace

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

void barrier_deadlock(Tensor& out) {
  launch_kernel(out.device(), shuffle_waits_for_barrier_kernel, 1u, 32u, 0, out.data<int>());
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
