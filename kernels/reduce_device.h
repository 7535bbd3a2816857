// Device code of the deterministic reductions, shared by kernels/reduce.cu and kernels/binary.cu
// (the backward of a broadcast b). Included after runtime/kernel_prelude.h; everything is in an
// anonymous namespace inside ctsr::kernels::CTSR_KERNEL_NS, so each kernel file (and each of
// its two builds) has its own copy and nothing collides at link time.
//
// A reduction sums, for each output j, the terms at input offsets kept_offset(j) +
// reduced_offset(r), r < extent: the input is seen through its BroadcastLayout, split into the
// kept groups (which index j) and the broadcast groups (which index r). The passes are chosen by
// kernels::choose_reduce_pass (kernels/reduce.h), by shape alone.
#pragma once

#include "kernels/broadcast.h"
#include "kernels/reduce.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {
namespace {

constexpr int kMaxGroupsOfAKind = kMaxDims / 2;  // groups alternate in kind

// Input offsets of the kept groups (indexed by the output j) and of the summed groups (indexed
// by the term r), each outermost first, with their strides in the input.
struct ReduceIndex {
  int kept_groups = 0, reduced_groups = 0;
  int64_t kept_extent[kMaxGroupsOfAKind] = {}, kept_stride[kMaxGroupsOfAKind] = {};
  int64_t reduced_extent[kMaxGroupsOfAKind] = {}, reduced_stride[kMaxGroupsOfAKind] = {};
  int64_t outputs = 1, extent = 1;
  bool inner_reduced = false;
};

ReduceIndex reduce_index_of(const BroadcastLayout& layout) {
  ReduceIndex ix;
  int64_t stride = 1;
  int kept = 0, reduced = 0;
  for (int g = layout.groups - 1; g >= 0; --g) {  // count first, fill outermost-first below
    (layout.kept[g] ? kept : reduced) += 1;
  }
  ix.kept_groups = kept;
  ix.reduced_groups = reduced;
  for (int g = layout.groups - 1; g >= 0; --g) {
    if (layout.kept[g]) {
      --kept;
      ix.kept_extent[kept] = layout.extent[g];
      ix.kept_stride[kept] = stride;
    } else {
      --reduced;
      ix.reduced_extent[reduced] = layout.extent[g];
      ix.reduced_stride[reduced] = stride;
    }
    stride *= layout.extent[g];
  }
  ix.outputs = layout.kept_numel;
  ix.extent = layout.broadcast_numel;
  ix.inner_reduced = layout_inner_reduced(layout);
  return ix;
}

// Offset of the k-th element of the groups (extent, stride), outermost first.
CTSR_DEVICE_INLINE int64_t group_offset(int groups, const int64_t* extent, const int64_t* stride, int64_t k) {
  if (groups == 1) return k * stride[0];
  int64_t offset = 0;
  for (int g = groups - 1; g >= 0; --g) {
    const int64_t e = extent[g];
    offset += (g == 0 ? k : k % e) * stride[g];
    k /= e;
  }
  return offset;
}

// The terms: x[i], or x[i] * weight[i] (the backward of b in a * b sums dy * a).
struct ReduceTerms {
  const float* x;
  const float* weight;
  CTSR_DEVICE_INLINE float operator()(int64_t i) const { return weight ? x[i] * weight[i] : x[i]; }
};

// One thread per (chunk s, output j); writes out[s * outputs + j].
__global__ void reduce_thread_per_output_kernel(ReduceTerms terms, ReduceIndex ix, int64_t chunk, int64_t splits,
                                                float scale, float* __restrict__ out) {
  const int64_t items = ix.outputs * splits;
  for (int64_t item = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; item < items;
       item += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = item / ix.outputs, j = item - s * ix.outputs;
    const int64_t base = group_offset(ix.kept_groups, ix.kept_extent, ix.kept_stride, j);
    const int64_t r_begin = s * chunk;
    const int64_t r_end = r_begin + chunk < ix.extent ? r_begin + chunk : ix.extent;
    float sum = 0.0f;
    for (int64_t r = r_begin; r < r_end; ++r)
      sum += terms(base + group_offset(ix.reduced_groups, ix.reduced_extent, ix.reduced_stride, r));
    out[item] = sum * scale;
  }
}

constexpr int kReduceBlockThreads = 256;  // a power of two, >= 64 (the tree stops at one warp)

// One block per (output j, chunk s); writes out[j * splits + s]. Each thread sums a strided
// slice of the chunk, a shared-memory tree halves the block's sums down to one warp's 32, and
// warp shuffles finish. The tree's shape is fixed, so the order of additions is too.
__global__ void __launch_bounds__(kReduceBlockThreads)
    reduce_block_per_output_kernel(ReduceTerms terms, ReduceIndex ix, int64_t chunk, int64_t splits, float scale,
                                   float* __restrict__ out) {
  CTSR_LAUNCH_BOUNDS_CHECK(kReduceBlockThreads);
  CTSR_STATIC_SHARED(partial, float[kReduceBlockThreads]);
  const int t = int(threadIdx.x);
  const int64_t items = ix.outputs * splits;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t j = item / splits, s = item - j * splits;
    const int64_t base = group_offset(ix.kept_groups, ix.kept_extent, ix.kept_stride, j);
    const int64_t r_begin = s * chunk;
    const int64_t r_end = r_begin + chunk < ix.extent ? r_begin + chunk : ix.extent;
    float sum = 0.0f;
    for (int64_t r = r_begin + t; r < r_end; r += kReduceBlockThreads)
      sum += terms(base + group_offset(ix.reduced_groups, ix.reduced_extent, ix.reduced_stride, r));
    partial[t] = sum;
    __syncthreads();
    for (int half = kReduceBlockThreads / 2; half >= 32; half /= 2) {
      if (t < half) partial[t] += partial[t + half];
      __syncthreads();
    }
    if (t < 32) {
      float v = partial[t];
      for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
      if (t == 0) out[item] = v * scale;
    }
    __syncthreads();  // the next item overwrites `partial`
  }
}

constexpr unsigned kReduceThreads = 256;
constexpr int64_t kReduceMaxGrid = 65536;  // grid-stride beyond this

// out[j] = scale * sum_r terms(kept_offset(j) + reduced_offset(r)), by the passes of
// kernels::reduce_plan. Partial sums live in temporary device tensors; all passes run on the
// device's stream in order, so the caching allocator may reuse them as soon as they are freed.
void run_reduction(Device device, ReduceTerms terms, const ReduceIndex& ix, float scale, float* out) {
  if (ix.outputs == 0) return;
  const ReducePass pass = choose_reduce_pass(ix.outputs, ix.extent, ix.inner_reduced);
  const int64_t items = ix.outputs * pass.splits;
  Tensor partial;
  float* target = out;
  if (pass.splits > 1) {
    partial = Tensor::empty({items}, DType::float32, device);
    target = partial.data<float>();
  }
  const float pass_scale = pass.splits > 1 ? 1.0f : scale;
  if (pass.kernel == ReduceKernel::thread_per_output) {
    const unsigned grid = unsigned(std::min<int64_t>(kReduceMaxGrid, std::max<int64_t>(1, blocks_for(items, kReduceThreads))));
    launch_kernel(device, reduce_thread_per_output_kernel, grid, kReduceThreads, 0, terms, ix, pass.chunk, pass.splits,
                  pass_scale, target);
  } else {
    const unsigned grid = unsigned(std::min<int64_t>(kReduceMaxGrid, items));
    launch_kernel(device, reduce_block_per_output_kernel, grid, unsigned(kReduceBlockThreads), 0, terms, ix, pass.chunk,
                  pass.splits, pass_scale, target);
  }
  if (pass.splits == 1) return;
  ReduceIndex next;
  next.kept_groups = next.reduced_groups = 1;
  next.kept_extent[0] = ix.outputs;
  next.reduced_extent[0] = pass.splits;
  if (pass.kernel == ReduceKernel::thread_per_output) {  // partial is [splits, outputs]
    next.kept_stride[0] = 1;
    next.reduced_stride[0] = ix.outputs;
    next.inner_reduced = ix.outputs == 1;
  } else {  // partial is [outputs, splits]
    next.kept_stride[0] = pass.splits;
    next.reduced_stride[0] = 1;
    next.inner_reduced = true;
  }
  next.outputs = ix.outputs;
  next.extent = pass.splits;
  run_reduction(device, ReduceTerms{target, nullptr}, next, scale, out);
}

}  // namespace
}  // namespace ctsr::kernels::CTSR_KERNEL_NS
