// The linear family (kernels/linear.h: the fully connected layer, GEMMs through ctsr::gemm plus
// our bias kernels) on every device this build has, in TFLOP/s. GPU size: 6400 x 512 -> 1536,
// attention's QKV projection of 6400 tokens (the UNet's 25 x 16 x 16 latent). The cpu and
// cuda_on_cpu cases run smaller sizes so that a `--benchmark_min_time=0.001` pass over the host
// paths stays quick on a 2-core machine. Args: rows, in, out.
//
// FLOPs: forward 2 rows in out (the bias add is not counted); backward 4 rows in out (dx and dW;
// the bias-gradient sums are not counted).
//
// GPU cases enqueue bench::kGpuRepeats calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency.
#include <benchmark/benchmark.h>

#include "bench/bench_util.h"
#include "kernels/linear.h"

namespace {

using namespace ctsr::bench;

void run_linear(benchmark::State& state, Device device, bool backward) {
  const int64_t rows = state.range(0), in = state.range(1), out = state.range(2);
  Tensor x = filled({rows, in}, -1.0f, 1.0f, 5, device);
  Tensor w = filled({out, in}, -0.1f, 0.1f, 6, device), b = filled({out}, -0.1f, 0.1f, 7, device);
  Tensor dy = backward ? filled({rows, out}, -1.0f, 1.0f, 8, device) : Tensor();
  Tensor dw, db;
  const int repeats = time_calls(state, device, [&] {
    Tensor result = backward ? ctsr::linear_backward(x, w, dy, dw, &db) : ctsr::linear_forward(x, w, b);
    benchmark::DoNotOptimize(result.raw_data());
  });
  set_flop_rate(state, (backward ? 4.0 : 2.0) * double(rows) * double(in) * double(out), repeats);
}

CTSR_BENCH_CASES {
  for (const bool backward : {false, true}) {
    on_devices(backward ? "linear_backward" : "linear_forward", {{1600, 256, 768}}, {{256, 64, 192}},
               {{6400, 512, 1536}}, [=](benchmark::State& s, Device d) { run_linear(s, d, backward); });
  }
}

}  // namespace
