// The copy family (kernels/copy.h: fill, copy, cast) on every device this build has, in achieved
// memory throughput. GPU size: the UNet's level-0 activation [32, 25, 16, 16, 128] float32 (105
// MB); the cpu and cuda_on_cpu cases run small sizes so that a `--benchmark_min_time=0.001` pass
// over the host paths stays quick on a 2-core machine. Args: N, D, H, W, C.
//
// Bytes per element, as the kernels move them:
//   fill                       y written                                      4
//   copy                       x read, y written                              8
//   cast_float32_to_bfloat16   x read (4), y written (2)                      6
// (The device's own memcpy, Tensor::copy_from, is memory_copy_cuda in bench_group_norm.cpp.)
//
// GPU cases enqueue bench::kGpuRepeats calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency.
#include <benchmark/benchmark.h>

#include "bench/bench_util.h"
#include "kernels/copy.h"

namespace {

using namespace ctsr::bench;

enum class Op { fill, copy, cast };

void run_copy(benchmark::State& state, Device device, Op op) {
  const ctsr::Shape shape = shape_from_args(state);
  Tensor x = filled(shape, -2.0f, 2.0f, 1, device);
  const int repeats = time_calls(state, device, [&] {
    switch (op) {
      case Op::fill: ctsr::fill(x, 0.5); break;
      case Op::copy: benchmark::DoNotOptimize(ctsr::copy(x).raw_data()); break;
      case Op::cast: benchmark::DoNotOptimize(ctsr::cast(x, ctsr::DType::bfloat16).raw_data()); break;
    }
  });
  const double bytes_per_element = op == Op::fill ? 4.0 : op == Op::copy ? 8.0 : 6.0;
  set_bandwidth(state, bytes_per_element * double(shape.numel()), repeats);
}

CTSR_BENCH_CASES {
  const std::pair<Op, const char*> ops[] = {
      {Op::fill, "fill"}, {Op::copy, "copy"}, {Op::cast, "cast_float32_to_bfloat16"}};
  for (const auto& [op, name] : ops) {
    on_devices(name, {{2, 25, 16, 16, 16}}, {{1, 13, 8, 8, 16}}, {{32, 25, 16, 16, 128}},
               [op = op](benchmark::State& s, Device d) { run_copy(s, d, op); });
  }
}

}  // namespace
