// The activation family (kernels/activation.h) on every device this build has, in achieved
// memory throughput: SiLU, and clamp, which is the ReLU of RED-CNN and the refiner (clamp(x, 0,
// inf)) and the samplers' and decoders' clipping. GPU sizes: SiLU on the UNet's level-0
// activation [32, 25, 16, 16, 128] float32 (105 MB); clamp on a batch of RED-CNN feature maps,
// 16 axial patches of 51 x 51 with 96 channels (its training batch of 55 x 55 patches, 16 MB).
// The cpu and cuda_on_cpu cases run small sizes so that a `--benchmark_min_time=0.001` pass over
// the host paths stays quick on a 2-core machine; the cuda_on_cpu figures measure the executor,
// not a GPU. Args: N, D, H, W, C.
//
// Bytes are counted as the kernels move them, per call:
//   silu forward, clamp forward     x read, y written                    8 bytes per element
//   silu backward, clamp backward   x and dy read, dx written           12 bytes per element
//
// GPU cases enqueue bench::kGpuRepeats calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency.
#include <benchmark/benchmark.h>

#include <limits>

#include "bench/bench_util.h"
#include "kernels/activation.h"

namespace {

using namespace ctsr::bench;

enum class Op { silu, clamp };

void run_activation(benchmark::State& state, Device device, Op op, bool backward) {
  const ctsr::Shape shape = shape_from_args(state);
  Tensor x = filled(shape, -4.0f, 4.0f, 1, device);
  Tensor dy = backward ? filled(shape, -1.0f, 1.0f, 2, device) : Tensor();
  const double lo = 0.0, hi = std::numeric_limits<double>::infinity();  // ReLU
  const int repeats = time_calls(state, device, [&] {
    Tensor out = op == Op::silu ? (backward ? ctsr::silu_backward(x, dy) : ctsr::silu_forward(x))
                                : (backward ? ctsr::clamp_backward(x, dy, lo, hi) : ctsr::clamp(x, lo, hi));
    benchmark::DoNotOptimize(out.raw_data());
  });
  set_bandwidth(state, (backward ? 12.0 : 8.0) * double(shape.numel()), repeats);
}

CTSR_BENCH_CASES {
  const ArgsList cpu = {{2, 25, 16, 16, 16}}, executor = {{1, 13, 8, 8, 16}};
  const ArgsList unet = {{32, 25, 16, 16, 128}}, redcnn = {{16, 1, 51, 51, 96}};
  for (const bool backward : {false, true}) {
    const std::string pass = backward ? "_backward" : "_forward";
    on_devices("silu" + pass, cpu, executor, unet,
               [=](benchmark::State& s, Device d) { run_activation(s, d, Op::silu, backward); });
  }
  for (const bool backward : {false, true}) {
    const std::string pass = backward ? "_backward" : "_forward";
    on_devices("clamp" + pass, cpu, executor, redcnn,
               [=](benchmark::State& s, Device d) { run_activation(s, d, Op::clamp, backward); });
  }
}

}  // namespace
