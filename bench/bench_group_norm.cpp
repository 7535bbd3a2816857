// The group_norm family (kernels/group_norm.h): GroupNorm and GroupNorm + SiLU, forward and
// backward, on every device this build has, in achieved memory throughput. The production shape
// is the UNet's level 0: x [32, 25, 16, 16, 128] float32 (105 MB), 32 groups; the cpu and
// cuda_on_cpu paths run a tiny shape so that `--benchmark_filter=cpu` stays quick.
//
// Bytes are counted as the kernels move them, per call:
//   forward   x read twice (statistics, then normalise) + y written once   = 12 bytes per element
//             (10 with y in bf16: the *_forward_bf16 cases, mixed precision's conv operand; the
//             unfused alternative, a float32 y then cast, moves 12 + 4 + 2 = 18)
//   backward  x and dy read twice (sums, then dx) + dx written once        = 20 bytes per element
// (the per-channel partials, [N, chunks, C], add under 2% and are not counted). memory_copy_cuda
// measures the device's own copy bandwidth (read + write) at the same size, the figure the
// 70% target is relative to.
//
// GPU cases enqueue bench::kGpuRepeats calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency.
#include <benchmark/benchmark.h>

#include <optional>

#include "bench/bench_util.h"
#include "kernels/group_norm.h"

namespace {

using namespace ctsr::bench;

// Args: N, D, H, W, C, groups.
void run_group_norm(benchmark::State& state, Device device, bool silu, bool backward, bool bf16_y = false) {
  const ctsr::Shape shape = shape_from_args(state);
  const int64_t channels = state.range(4), groups = state.range(5);
  Tensor x = filled(shape, -2.0f, 3.0f, 1, device);
  Tensor dy = backward ? filled(shape, -1.0f, 1.0f, 2, device) : Tensor();
  Tensor gamma = filled({channels}, 0.5f, 1.5f, 3, device), beta = filled({channels}, -0.5f, 0.5f, 4, device);
  ctsr::GroupNormOutput saved = silu ? ctsr::group_norm_silu_forward(x, gamma, beta, groups, 1e-5)
                                     : ctsr::group_norm_forward(x, gamma, beta, groups, 1e-5);
  Tensor dgamma, dbeta;
  const int repeats = time_calls(state, device, [&] {
    if (!backward) {
      const std::optional<ctsr::DType> y_dtype = bf16_y ? std::optional(ctsr::DType::bfloat16) : std::nullopt;
      ctsr::GroupNormOutput out = silu ? ctsr::group_norm_silu_forward(x, gamma, beta, groups, 1e-5, y_dtype)
                                       : ctsr::group_norm_forward(x, gamma, beta, groups, 1e-5, y_dtype);
      benchmark::DoNotOptimize(out.y.raw_data());
    } else {
      Tensor dx = silu ? ctsr::group_norm_silu_backward(x, gamma, beta, saved.mean, saved.rstd, dy, groups, dgamma,
                                                        dbeta)
                       : ctsr::group_norm_backward(x, gamma, saved.mean, saved.rstd, dy, groups, dgamma, dbeta);
      benchmark::DoNotOptimize(dx.raw_data());
    }
  });
  const double bytes_per_element = backward ? 20.0 : bf16_y ? 10.0 : 12.0;
  set_bandwidth(state, bytes_per_element * double(shape.numel()), repeats);
  state.counters["bytes/elem"] = bytes_per_element;
}

// The device's own copy (Tensor::copy_from), read + write: the reference of the 70% target.
void memory_copy(benchmark::State& state, Device device) {
  const ctsr::Shape shape = shape_from_args(state);
  Tensor src = Tensor::zeros(shape, ctsr::DType::float32, device);
  Tensor dst = Tensor::empty(shape, ctsr::DType::float32, device);
  const int repeats = time_calls(state, device, [&] { dst.copy_from(src); });
  set_bandwidth(state, 2.0 * double(src.nbytes()), repeats);
}

CTSR_BENCH_CASES {
  for (const bool silu : {false, true}) {
    for (const bool backward : {false, true}) {
      const std::string name = std::string(silu ? "group_norm_silu" : "group_norm") + (backward ? "_backward" : "_forward");
      on_devices(name, {{2, 5, 4, 4, 32, 8}}, {{2, 5, 4, 4, 32, 8}}, {{32, 25, 16, 16, 128, 32}},
                 [=](benchmark::State& s, Device d) { run_group_norm(s, d, silu, backward); });
    }
    on_devices(std::string(silu ? "group_norm_silu" : "group_norm") + "_forward_bf16", {{2, 5, 4, 4, 32, 8}},
               {{2, 5, 4, 4, 32, 8}}, {{32, 25, 16, 16, 128, 32}},
               [=](benchmark::State& s, Device d) { run_group_norm(s, d, silu, false, true); });
  }
  register_case("memory_copy_cuda", Device::cuda(0), {{32, 25, 16, 16, 128}}, memory_copy, benchmark::kMicrosecond);
}

}  // namespace
