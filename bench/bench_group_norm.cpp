// GroupNorm and GroupNorm + SiLU, forward and backward, on every device this build has, in
// achieved memory throughput. The production shape is the UNet's level 0: x [32, 25, 16, 16,
// 128] float32 (105 MB), 32 groups; the cpu and cuda_on_cpu paths run a tiny shape so that
// `--benchmark_filter=cpu` stays quick.
//
// Bytes are counted as the kernels move them, per call:
//   forward   x read twice (statistics, then normalise) + y written once   = 12 bytes per element
//   backward  x and dy read twice (sums, then dx) + dx written once        = 20 bytes per element
// (the per-channel partials, [N, chunks, C], add under 2% and are not counted). memory_copy_cuda
// measures the device's own copy bandwidth (read + write) at the same size, the figure the
// 70% target is relative to.
//
// GPU cases enqueue bench::kGpuRepeats calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency.
#include <benchmark/benchmark.h>

#include <vector>

#include "kernels/group_norm.h"
#include "runtime/stream.h"
#include "bench/bench_util.h"
#include "runtime/tensor.h"

namespace {

using ctsr::Device;
using ctsr::DeviceKind;
using ctsr::Tensor;
using ctsr::bench::filled;
using ctsr::bench::repeats_for;
using ctsr::bench::skip_without_gpu;

// Args: N, D, H, W, C, groups.
void run_group_norm(benchmark::State& state, Device device, bool silu, bool backward) {
  if (skip_without_gpu(state, device)) return;
  const ctsr::Shape shape{state.range(0), state.range(1), state.range(2), state.range(3), state.range(4)};
  const int64_t channels = state.range(4), groups = state.range(5);
  Tensor x = filled(shape, -2.0f, 3.0f, 1, device);
  Tensor dy = backward ? filled(shape, -1.0f, 1.0f, 2, device) : Tensor();
  Tensor gamma = filled({channels}, 0.5f, 1.5f, 3, device), beta = filled({channels}, -0.5f, 0.5f, 4, device);
  ctsr::GroupNormOutput saved = silu ? ctsr::group_norm_silu_forward(x, gamma, beta, groups, 1e-5)
                                     : ctsr::group_norm_forward(x, gamma, beta, groups, 1e-5);
  Tensor dgamma, dbeta;
  const int repeats = repeats_for(device);
  ctsr::Stream stream = ctsr::Stream::current(device);
  stream.synchronize();
  for (auto _ : state) {
    for (int r = 0; r < repeats; ++r) {
      if (!backward) {
        ctsr::GroupNormOutput out = silu ? ctsr::group_norm_silu_forward(x, gamma, beta, groups, 1e-5)
                                         : ctsr::group_norm_forward(x, gamma, beta, groups, 1e-5);
        benchmark::DoNotOptimize(out.y.raw_data());
      } else {
        Tensor dx =
            silu ? ctsr::group_norm_silu_backward(x, gamma, beta, saved.mean, saved.rstd, dy, groups, dgamma, dbeta)
                 : ctsr::group_norm_backward(x, gamma, saved.mean, saved.rstd, dy, groups, dgamma, dbeta);
        benchmark::DoNotOptimize(dx.raw_data());
      }
    }
    stream.synchronize();
  }
  const double bytes_per_element = backward ? 20.0 : 12.0;
  const double bytes = bytes_per_element * double(shape.numel());
  state.counters["GB/s"] =
      benchmark::Counter(bytes * double(repeats) * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
  state.counters["bytes/elem"] = bytes_per_element;
}

void memory_copy(benchmark::State& state, Device device) {
  if (skip_without_gpu(state, device)) return;
  const ctsr::Shape shape{state.range(0), state.range(1), state.range(2), state.range(3), state.range(4)};
  Tensor src = Tensor::zeros(shape, ctsr::DType::float32, device);
  Tensor dst = Tensor::empty(shape, ctsr::DType::float32, device);
  const int repeats = repeats_for(device);
  ctsr::Stream stream = ctsr::Stream::current(device);
  for (auto _ : state) {
    for (int r = 0; r < repeats; ++r) dst.copy_from(src);
    stream.synchronize();
  }
  state.counters["GB/s"] = benchmark::Counter(2.0 * double(src.nbytes()) * repeats * double(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}

#define CTSR_NORM_BENCH(name, silu, backward)                                                                    \
  void name##_cpu(benchmark::State& s) { run_group_norm(s, Device::cpu(), silu, backward); }                     \
  void name##_cuda_on_cpu(benchmark::State& s) { run_group_norm(s, Device::cuda_on_cpu(), silu, backward); }     \
  void name##_cuda(benchmark::State& s) { run_group_norm(s, Device::cuda(0), silu, backward); }                  \
  BENCHMARK(name##_cpu)->Args({2, 5, 4, 4, 32, 8})->Unit(benchmark::kMillisecond)->UseRealTime();                \
  BENCHMARK(name##_cuda_on_cpu)->Args({2, 5, 4, 4, 32, 8})->Unit(benchmark::kMillisecond)->UseRealTime();        \
  BENCHMARK(name##_cuda)->Args({32, 25, 16, 16, 128, 32})->Unit(benchmark::kMicrosecond)->UseRealTime();

CTSR_NORM_BENCH(group_norm_forward, false, false)
CTSR_NORM_BENCH(group_norm_backward, false, true)
CTSR_NORM_BENCH(group_norm_silu_forward, true, false)
CTSR_NORM_BENCH(group_norm_silu_backward, true, true)

void memory_copy_cuda(benchmark::State& s) { memory_copy(s, Device::cuda(0)); }
BENCHMARK(memory_copy_cuda)->Args({32, 25, 16, 16, 128})->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
