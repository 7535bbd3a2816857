// The dropout family (kernels/dropout.h: a counter-based Philox mask, regenerated in backward)
// on every device this build has, in achieved memory throughput, at the UNet's rate p = 0.1
// (configs/diffusion.yaml). GPU size: the UNet's level-0 activation [32, 25, 16, 16, 128]
// float32 (105 MB); the cpu and cuda_on_cpu cases run small sizes so that a
// `--benchmark_min_time=0.001` pass over the host paths stays quick on a 2-core machine.
// Args: N, D, H, W, C.
//
// Bytes per element, as the kernels move them (the mask is computed, never stored):
//   dropout_forward    x read, y written       8  (4 in bf16: the *_bf16 cases, mixed precision's
//   dropout_backward   dy read, dx written     8   conv operand between GroupNorm and conv2)
//
// GPU cases enqueue bench::kGpuRepeats calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency.
#include <benchmark/benchmark.h>

#include <string>

#include "bench/bench_util.h"
#include "kernels/dropout.h"

namespace {

using namespace ctsr::bench;

void run_dropout(benchmark::State& state, Device device, bool backward, ctsr::DType dtype) {
  const ctsr::Shape shape = shape_from_args(state);
  Tensor x = filled_as(dtype, shape, -2.0f, 2.0f, 1, device);
  const double p = 0.1;
  const uint64_t seed = 1234;
  uint64_t offset = 0;
  const int repeats = time_calls(state, device, [&] {
    // A new offset per call, as training draws a new mask per step.
    ++offset;
    Tensor y = backward ? ctsr::dropout_backward(x, p, seed, offset) : ctsr::dropout_forward(x, p, seed, offset);
    benchmark::DoNotOptimize(y.raw_data());
  });
  set_bandwidth(state, 2.0 * double(x.nbytes()), repeats);
}

CTSR_BENCH_CASES {
  for (const bool backward : {false, true}) {
    for (const ctsr::DType dtype : {ctsr::DType::float32, ctsr::DType::bfloat16}) {
      const std::string name = std::string(backward ? "dropout_backward" : "dropout_forward") +
                               (dtype == ctsr::DType::bfloat16 ? "_bf16" : "");
      on_devices(name, {{2, 25, 16, 16, 16}}, {{1, 13, 8, 8, 16}}, {{32, 25, 16, 16, 128}},
                 [=](benchmark::State& s, Device d) { run_dropout(s, d, backward, dtype); });
    }
  }
}

}  // namespace
