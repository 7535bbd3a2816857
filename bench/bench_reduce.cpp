// The reduce family (kernels/reduce.h: deterministic sums and means over broadcast dims, and
// broadcast_to, their adjoint) on every device this build has, in achieved memory throughput,
// for the reductions the layers make of a channels-last x [N, D, H, W, C]:
//   sum                        every element -> [1] (a loss's total)
//   sum_to_shape_channel       -> [C] (a bias gradient)
//   mean_to_shape_sample       -> [N, 1, 1, 1, 1] (a per-sample mean)
//   broadcast_to_channel       [C] -> x's shape (the backward of the per-channel sum)
// Bytes: 4 per element of x, read (the sums) or written (broadcast_to); the outputs of the sums
// and the input of broadcast_to are a few KB and not counted. GPU size: the UNet's level-0
// activation [32, 25, 16, 16, 128] float32 (105 MB); the cpu and cuda_on_cpu cases run small
// sizes so that a `--benchmark_min_time=0.001` pass over the host paths stays quick on a 2-core
// machine. Args: N, D, H, W, C.
//
// GPU cases enqueue bench::kGpuRepeats calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency.
#include <benchmark/benchmark.h>

#include "bench/bench_util.h"
#include "kernels/reduce.h"

namespace {

using namespace ctsr::bench;

enum class Op { sum, sum_channel, mean_sample, broadcast_channel };

void run_reduce(benchmark::State& state, Device device, Op op) {
  const ctsr::Shape shape = shape_from_args(state);
  const ctsr::Shape channel{shape[4]}, sample{shape[0], 1, 1, 1, 1};
  Tensor x = filled(op == Op::broadcast_channel ? channel : shape, -1.0f, 1.0f, 1, device);
  const int repeats = time_calls(state, device, [&] {
    Tensor y;
    switch (op) {
      case Op::sum: y = ctsr::sum(x); break;
      case Op::sum_channel: y = ctsr::sum_to_shape(x, channel); break;
      case Op::mean_sample: y = ctsr::mean_to_shape(x, sample); break;
      case Op::broadcast_channel: y = ctsr::broadcast_to(x, shape); break;
    }
    benchmark::DoNotOptimize(y.raw_data());
  });
  set_bandwidth(state, 4.0 * double(shape.numel()), repeats);
}

CTSR_BENCH_CASES {
  const std::pair<Op, const char*> ops[] = {{Op::sum, "sum"},
                                           {Op::sum_channel, "sum_to_shape_channel"},
                                           {Op::mean_sample, "mean_to_shape_sample"},
                                           {Op::broadcast_channel, "broadcast_to_channel"}};
  for (const auto& [op, name] : ops) {
    on_devices(name, {{2, 25, 16, 16, 16}}, {{1, 13, 8, 8, 16}}, {{32, 25, 16, 16, 128}},
               [op = op](benchmark::State& s, Device d) { run_reduce(s, d, op); });
  }
}

}  // namespace
