// CUDA kernels for AdamW, the sum of squares behind the global gradient norm, scaling and the
// weight EMA (kernels/optimizer.h), float32, multi-tensor.
//
// Multi-tensor launches: each tensor is cut into chunks of kChunk elements, and one grid covers
// the chunks of up to kMaxTensors tensors; block b finds its tensor by scanning the group's
// chunk offsets (kernel parameter, at most 33 entries). The tensors' pointers and sizes travel
// in the kernel's parameter block (under 2 KB, inside CUDA's 4 KB), so a launch needs no
// host-to-device copy. A model of a few hundred tensors takes a few launches.
//
// AdamW is memory-bound: p, g, m, v read and p, m, v written, 28 bytes per element. A tensor
// whose four pointers are 16-byte aligned goes through packs of 4 elements (16-byte loads and
// stores on the GPU; the executor runs the same indexing with scalar accesses), the rest one
// element at a time. The element update is adamw_update (kernels/optimizer.h), identical to
// the reference's.
//
// The EMA has the same structure: ema and p read, ema written (12 bytes per element), packs of
// 4 where both pointers are 16-byte aligned; the element update is ema_value, the reference's.
//
// Sum of squares (2 launches per group + 1): every block sums its chunk's squares in double and
// a fixed tree over its threads, writing one partial per chunk; one block then sums all
// partials (thread-strided, then a fixed tree). The order depends only on the tensors' sizes and
// order, never on the device: deterministic, no atomics.
#include "runtime/kernel_prelude.h"

#include "kernels/vector_access.h"

#include "kernels/block_sum.h"
#include "kernels/optimizer.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

constexpr int kThreads = 256;         // a power of two: the reduction tree halves it
constexpr int64_t kChunk = 16 * kThreads;
constexpr int kMaxTensors = 32;
constexpr int64_t kMaxBlocksPerLaunch = int64_t(1) << 30;

// L parallel lists (AdamW: p, g, m, v) over the same tensors.
template <int L>
struct Group {
  float* data[L][kMaxTensors];
  int64_t numel[kMaxTensors];
  int64_t first_block[kMaxTensors + 1];  // tensor t owns blocks [first_block[t], first_block[t + 1])
  bool vec4[kMaxTensors];                // all L pointers of tensor t are 16-byte aligned
  int count;
  int64_t blocks() const { return first_block[count]; }
};

template <int L>
CTSR_DEVICE_INLINE int tensor_of_block(const Group<L>& group, int64_t block) {
  int t = 0;
  while (t + 1 < group.count && block >= group.first_block[t + 1]) ++t;
  return t;
}

// Splits the lists into groups (at most kMaxTensors tensors and kMaxBlocksPerLaunch blocks each)
// and calls launch(group) for every group with at least one block.
template <int L, class Launch>
void for_each_group(const TensorList* const (&lists)[L], Launch&& launch) {
  const size_t n = lists[0]->data.size();
  Group<L> group{};
  auto flush = [&] {
    if (group.count > 0 && group.blocks() > 0) launch(group);
    group = Group<L>{};
  };
  for (size_t i = 0; i < n; ++i) {
    const int64_t numel = lists[0]->numel[i];
    const int64_t blocks = (numel + kChunk - 1) / kChunk;
    CTSR_CHECK(blocks <= kMaxBlocksPerLaunch, "multi-tensor launch: tensor ", i, " of ", numel,
               " elements is too large");
    if (group.count == kMaxTensors || group.blocks() + blocks > kMaxBlocksPerLaunch) flush();
    const int t = group.count;
    bool aligned = true;
    for (int l = 0; l < L; ++l) {
      group.data[l][t] = lists[l]->data[i];
      aligned = aligned && reinterpret_cast<uintptr_t>(lists[l]->data[i]) % 16 == 0;
    }
    group.numel[t] = numel;
    group.vec4[t] = aligned;
    group.first_block[t + 1] = group.first_block[t] + blocks;
    group.count = t + 1;
  }
  flush();
}

// Elements [begin, end) of one tensor: packs of V from begin (a multiple of kChunk, so packs
// stay aligned), then the last end - begin mod V one at a time.
template <int V>
CTSR_DEVICE_INLINE void adamw_range(float* p, const float* g, float* m, float* v, int64_t begin, int64_t end,
                                    const AdamWScalars<float>& s) {
  const int64_t packed_end = begin + (end - begin) / V * V;
  for (int64_t i = begin + int64_t(threadIdx.x) * V; i < packed_end; i += int64_t(kThreads) * V) {
    Pack<V> pv = load_pack<V>(p + i), mv = load_pack<V>(m + i), vv = load_pack<V>(v + i);
    const Pack<V> gv = load_pack<V>(g + i);
    for (int j = 0; j < V; ++j) adamw_update<float>(pv.v[j], mv.v[j], vv.v[j], gv.v[j], s);
    store_pack<V>(p + i, pv);
    store_pack<V>(m + i, mv);
    store_pack<V>(v + i, vv);
  }
  for (int64_t i = packed_end + threadIdx.x; i < end; i += kThreads) {
    float pe = p[i], me = m[i], ve = v[i];
    adamw_update<float>(pe, me, ve, g[i], s);
    p[i] = pe, m[i] = me, v[i] = ve;
  }
}

__global__ void __launch_bounds__(kThreads) adamw_kernel(Group<4> group, AdamWScalars<float> scalars) {
  CTSR_LAUNCH_BOUNDS_CHECK(kThreads);
  const int64_t block = blockIdx.x;
  const int t = tensor_of_block(group, block);
  const int64_t begin = (block - group.first_block[t]) * kChunk;
  const int64_t end = min(group.numel[t], begin + kChunk);
  float* p = group.data[0][t];
  const float* g = group.data[1][t];
  float* m = group.data[2][t];
  float* v = group.data[3][t];
  if (group.vec4[t]) adamw_range<4>(p, g, m, v, begin, end, scalars);
  else adamw_range<1>(p, g, m, v, begin, end, scalars);
}

// ema[begin, end) from p[begin, end), packs of V first as in adamw_range.
template <int V>
CTSR_DEVICE_INLINE void ema_range(float* ema, const float* p, int64_t begin, int64_t end, const EmaScalars<float>& s) {
  const int64_t packed_end = begin + (end - begin) / V * V;
  for (int64_t i = begin + int64_t(threadIdx.x) * V; i < packed_end; i += int64_t(kThreads) * V) {
    Pack<V> ev = load_pack<V>(ema + i);
    const Pack<V> pv = load_pack<V>(p + i);
    for (int j = 0; j < V; ++j) ev.v[j] = ema_value<float>(ev.v[j], pv.v[j], s);
    store_pack<V>(ema + i, ev);
  }
  for (int64_t i = packed_end + threadIdx.x; i < end; i += kThreads) ema[i] = ema_value<float>(ema[i], p[i], s);
}

__global__ void __launch_bounds__(kThreads) ema_kernel(Group<2> group, EmaScalars<float> scalars) {
  CTSR_LAUNCH_BOUNDS_CHECK(kThreads);
  const int64_t block = blockIdx.x;
  const int t = tensor_of_block(group, block);
  const int64_t begin = (block - group.first_block[t]) * kChunk;
  const int64_t end = min(group.numel[t], begin + kChunk);
  if (group.vec4[t]) ema_range<4>(group.data[0][t], group.data[1][t], begin, end, scalars);
  else ema_range<1>(group.data[0][t], group.data[1][t], begin, end, scalars);
}

// partial[block] = the chunk's sum of squares (partial already points at this group's slots).
__global__ void __launch_bounds__(kThreads) sum_of_squares_kernel(Group<1> group, double* __restrict__ partial) {
  CTSR_LAUNCH_BOUNDS_CHECK(kThreads);
  CTSR_STATIC_SHARED(reduce, double[kThreads]);
  const int64_t block = blockIdx.x;
  const int t = tensor_of_block(group, block);
  const int64_t begin = (block - group.first_block[t]) * kChunk;
  const int64_t end = min(group.numel[t], begin + kChunk);
  const float* x = group.data[0][t];
  double sum = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const double value = double(x[i]);
    sum += value * value;
  }
  const double total = block_sum<kThreads>(sum, reduce);
  if (threadIdx.x == 0) partial[block] = total;
}

// One block: out[0] = the sum of partial[0 .. n).
__global__ void __launch_bounds__(kThreads) sum_partials_kernel(const double* __restrict__ partial, int64_t n,
                                                                double* __restrict__ out) {
  CTSR_LAUNCH_BOUNDS_CHECK(kThreads);
  CTSR_STATIC_SHARED(reduce, double[kThreads]);
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) sum += partial[i];
  const double total = block_sum<kThreads>(sum, reduce);
  if (threadIdx.x == 0) out[0] = total;
}

__global__ void __launch_bounds__(kThreads) scale_kernel(Group<1> group, float factor) {
  CTSR_LAUNCH_BOUNDS_CHECK(kThreads);
  const int64_t block = blockIdx.x;
  const int t = tensor_of_block(group, block);
  const int64_t begin = (block - group.first_block[t]) * kChunk;
  const int64_t end = min(group.numel[t], begin + kChunk);
  float* x = group.data[0][t];
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) x[i] = rounded::mul(x[i], factor);
}

}  // namespace

void adamw_step(const TensorList& params, const TensorList& grads, const TensorList& exp_avg,
                const TensorList& exp_avg_sq, const AdamWScalars<float>& scalars, Device device) {
  const TensorList* const lists[4] = {&params, &grads, &exp_avg, &exp_avg_sq};
  for_each_group<4>(lists, [&](const Group<4>& group) {
    launch_kernel(device, adamw_kernel, unsigned(group.blocks()), unsigned(kThreads), 0, group, scalars);
  });
}

void sum_of_squares(const TensorList& tensors, Device device, double& sum) {
  int64_t total_blocks = 0;
  for (int64_t numel : tensors.numel) total_blocks += (numel + kChunk - 1) / kChunk;
  if (total_blocks == 0) {
    sum = 0.0;
    return;
  }
  Tensor partial = Tensor::empty(Shape{total_blocks}, DType::float64, device);
  Tensor result = Tensor::empty(Shape{1}, DType::float64, device);
  int64_t offset = 0;
  const TensorList* const lists[1] = {&tensors};
  for_each_group<1>(lists, [&](const Group<1>& group) {
    launch_kernel(device, sum_of_squares_kernel, unsigned(group.blocks()), unsigned(kThreads), 0, group,
                  partial.data<double>() + offset);
    offset += group.blocks();
  });
  launch_kernel(device, sum_partials_kernel, 1u, unsigned(kThreads), 0, partial.data<double>(), total_blocks,
                result.data<double>());
  sum = result.to_vector<double>()[0];
}

void scale(const TensorList& tensors, float factor, Device device) {
  const TensorList* const lists[1] = {&tensors};
  for_each_group<1>(lists, [&](const Group<1>& group) {
    launch_kernel(device, scale_kernel, unsigned(group.blocks()), unsigned(kThreads), 0, group, factor);
  });
}

void ema_update(const TensorList& ema, const TensorList& params, const EmaScalars<float>& scalars, Device device) {
  const TensorList* const lists[2] = {&ema, &params};
  for_each_group<2>(lists, [&](const Group<2>& group) {
    launch_kernel(device, ema_kernel, unsigned(group.blocks()), unsigned(kThreads), 0, group, scalars);
  });
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
