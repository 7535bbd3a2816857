// The random family (kernels/random.h: uniform and normal fills from counter-based Philox) on
// every device this build has, in achieved memory throughput (4 bytes written per element; the
// draws are computed, nothing is read). GPU size: the noise of a training batch of latents, [32,
// 25, 16, 16, 8] float32; the cpu and cuda_on_cpu cases run small sizes so that a
// `--benchmark_min_time=0.001` pass over the host paths stays quick on a 2-core machine.
// Args: N, D, H, W, C.
//
// GPU cases enqueue bench::kGpuRepeats calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency.
#include <benchmark/benchmark.h>

#include "bench/bench_util.h"
#include "kernels/random.h"

namespace {

using namespace ctsr::bench;

void run_random(benchmark::State& state, Device device, bool normal) {
  const ctsr::Shape shape = shape_from_args(state);
  Tensor t = Tensor::empty(shape, ctsr::DType::float32, device);
  uint64_t offset = 0;
  const int repeats = time_calls(state, device, [&] {
    if (normal) {
      ctsr::fill_normal(t, 7, ++offset);
    } else {
      ctsr::fill_uniform(t, 7, ++offset, -1.0, 1.0);
    }
  });
  set_bandwidth(state, 4.0 * double(shape.numel()), repeats);
}

CTSR_BENCH_CASES {
  for (const bool normal : {false, true}) {
    on_devices(normal ? "fill_normal" : "fill_uniform", {{2, 25, 16, 16, 8}}, {{1, 13, 8, 8, 8}},
               {{32, 25, 16, 16, 8}}, [=](benchmark::State& s, Device d) { run_random(s, d, normal); });
  }
}

}  // namespace
