// The resample family (kernels/resample.h: nearest-neighbour resizing and channel
// concatenation, the UNet's up path) on every device this build has, in achieved memory
// throughput.
//   resample_nearest_forward, _backward   Args N, D, H, W, C, Do, Ho, Wo: x [N, D, H, W, C] to
//       [N, Do, Ho, Wo, C] and the adjoint (a gather, no atomics). GPU size: the UNet's level-1
//       activation resized to level 0's, [32, 13, 8, 8, 256] -> [32, 25, 16, 16, 256] (26 and
//       210 MB). Bytes: the smaller side read or written once and the larger side once, 4 (in +
//       out) per call.
//   concat_channels, split_channels       Args N, D, H, W, Ca, Cb: [..., Ca] and [..., Cb] to
//       [..., Ca + Cb] and back. GPU size: a level-0 skip concatenation, 128 + 128 channels at
//       [32, 25, 16, 16]. Bytes: every element read once and written once, 8 (Ca + Cb) per row.
// The cpu and cuda_on_cpu cases run small sizes so that a `--benchmark_min_time=0.001` pass over
// the host paths stays quick on a 2-core machine.
//
// GPU cases enqueue bench::kGpuRepeats calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency.
#include <benchmark/benchmark.h>

#include <array>
#include <utility>

#include "bench/bench_util.h"
#include "kernels/resample.h"

namespace {

using namespace ctsr::bench;

void run_resample(benchmark::State& state, Device device, bool backward) {
  const ctsr::Shape in = shape_from_args(state);
  const std::array<int64_t, 3> in_size{in[1], in[2], in[3]}, out_size{state.range(5), state.range(6), state.range(7)};
  const ctsr::Shape out{in[0], out_size[0], out_size[1], out_size[2], in[4]};
  Tensor x = filled(backward ? out : in, -1.0f, 1.0f, 1, device);
  const int repeats = time_calls(state, device, [&] {
    Tensor y = backward ? ctsr::resample_nearest_backward(x, in_size) : ctsr::resample_nearest_forward(x, out_size);
    benchmark::DoNotOptimize(y.raw_data());
  });
  set_bandwidth(state, 4.0 * double(in.numel() + out.numel()), repeats);
}

void run_concat(benchmark::State& state, Device device, bool split) {
  const ctsr::Shape a_shape = shape_from_args(state);
  const int64_t ca = state.range(4), cb = state.range(5);
  const ctsr::Shape b_shape{a_shape[0], a_shape[1], a_shape[2], a_shape[3], cb};
  const ctsr::Shape out_shape{a_shape[0], a_shape[1], a_shape[2], a_shape[3], ca + cb};
  Tensor a = filled(a_shape, -1.0f, 1.0f, 1, device), b = filled(b_shape, -1.0f, 1.0f, 2, device);
  Tensor dy = split ? filled(out_shape, -1.0f, 1.0f, 3, device) : Tensor();
  const int repeats = time_calls(state, device, [&] {
    if (split) {
      std::pair<Tensor, Tensor> parts = ctsr::split_channels(dy, ca);
      benchmark::DoNotOptimize(parts.second.raw_data());
    } else {
      benchmark::DoNotOptimize(ctsr::concat_channels(a, b).raw_data());
    }
  });
  set_bandwidth(state, 8.0 * double(out_shape.numel()), repeats);
}

CTSR_BENCH_CASES {
  for (const bool backward : {false, true}) {
    on_devices(backward ? "resample_nearest_backward" : "resample_nearest_forward", {{2, 7, 4, 4, 16, 13, 8, 8}},
               {{1, 4, 4, 4, 16, 7, 8, 8}}, {{32, 13, 8, 8, 256, 25, 16, 16}},
               [=](benchmark::State& s, Device d) { run_resample(s, d, backward); });
  }
  for (const bool split : {false, true}) {
    on_devices(split ? "split_channels" : "concat_channels", {{2, 13, 8, 8, 16, 16}}, {{1, 7, 8, 8, 8, 8}},
               {{32, 25, 16, 16, 128, 128}}, [=](benchmark::State& s, Device d) { run_concat(s, d, split); });
  }
}

}  // namespace
