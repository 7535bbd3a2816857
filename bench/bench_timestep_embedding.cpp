// The timestep_embedding family (kernels/timestep_embedding.h: the UNet's sinusoidal embedding
// of the diffusion step) on every device this build has, in achieved memory throughput. The
// size is the production one everywhere, so small that it measures a launch more than a
// bandwidth: t [32] (a training batch) to [32, 128] (model_channels, configs/diffusion.yaml).
// The forward takes int64 steps, as the UNet does; the backward takes float32 t (it has a
// gradient only for floating t). Args: N, dim.
//
// Bytes, as the kernels move them: forward t read (8 N) and the embedding written (4 N dim);
// backward t and dt (4 N each) and the embedding's gradient read (4 N dim). The sines and
// cosines (full-range sinf / cosf) are the real cost and are not counted.
//
// GPU cases enqueue bench::kGpuRepeats calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency.
#include <benchmark/benchmark.h>

#include <vector>

#include "bench/bench_util.h"
#include "kernels/timestep_embedding.h"

namespace {

using namespace ctsr::bench;

void run_timestep_embedding(benchmark::State& state, Device device, bool backward) {
  const int64_t n = state.range(0), dim = state.range(1);
  std::vector<int64_t> steps;
  for (int64_t i = 0; i < n; ++i) steps.push_back((i * 37) % 1000);
  Tensor t_int = Tensor::from_vector(steps, {n}, device);
  Tensor t_float = filled({n}, 0.0f, 1000.0f, 1, device);
  Tensor demb = filled({n, dim}, -1.0f, 1.0f, 2, device);
  const int repeats = time_calls(state, device, [&] {
    Tensor y = backward ? ctsr::timestep_embedding_backward(t_float, dim, demb) : ctsr::timestep_embedding(t_int, dim);
    benchmark::DoNotOptimize(y.raw_data());
  });
  set_bandwidth(state, 8.0 * double(n) + 4.0 * double(n * dim), repeats);  // the same count both ways
}

CTSR_BENCH_CASES {
  for (const bool backward : {false, true}) {
    on_devices(backward ? "timestep_embedding_backward" : "timestep_embedding_forward", {{32, 128}}, {{32, 128}},
               {{32, 128}}, [=](benchmark::State& s, Device d) { run_timestep_embedding(s, d, backward); });
  }
}

}  // namespace
