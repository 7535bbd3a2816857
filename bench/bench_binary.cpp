// The binary family (kernels/binary.h: elementwise add, sub, mul with the second operand
// broadcast, and scale) on every device this build has, in achieved memory throughput, for the
// UNet's patterns on a channels-last activation x [N, D, H, W, C]:
//   add_forward                  a + b, b of a's shape (the residual add)
//   add_channel_forward          a + b, b [C] (a per-channel bias)
//   add_channel_backward         da = dy (a copy), db = dy summed per channel
//   mul_sample_channel_forward   a * b, b [N, 1, 1, 1, C] (a per-sample-per-channel factor)
//   mul_sample_channel_backward  da = dy * b, db = (dy * a) summed per sample and channel
//   scale_forward                alpha * x
// GPU size: the UNet's level-0 activation [32, 25, 16, 16, 128] float32 (105 MB); the cpu and
// cuda_on_cpu cases run small sizes so that a `--benchmark_min_time=0.001` pass over the host
// paths stays quick on a 2-core machine. Args: N, D, H, W, C.
//
// Bytes are counted per element of a as the kernels move them (a broadcast b, a few KB, and the
// reductions' partial sums are not counted):
//   add_forward                  a and b read, y written                  12 bytes per element
//   add_channel_forward          a read, y written                         8
//   add_channel_backward         dy read twice (copy, sum), da written    12
//   mul_sample_channel_forward   a read, y written                         8
//   mul_sample_channel_backward  dy read twice, a read, da written        16
//   scale_forward                x read, y written                         8
//
// GPU cases enqueue bench::kGpuRepeats calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency.
#include <benchmark/benchmark.h>

#include "bench/bench_util.h"
#include "kernels/binary.h"

namespace {

using ctsr::BinaryOp;
using namespace ctsr::bench;

enum class Case { add, add_channel, add_channel_backward, mul_sample_channel, mul_sample_channel_backward, scale };

void run_binary(benchmark::State& state, Device device, Case c) {
  const ctsr::Shape shape = shape_from_args(state);
  const int64_t n = shape[0], channels = shape[4];
  const bool per_sample = c == Case::mul_sample_channel || c == Case::mul_sample_channel_backward;
  const ctsr::Shape b_shape = c == Case::add ? shape : per_sample ? ctsr::Shape{n, 1, 1, 1, channels} : ctsr::Shape{channels};
  const BinaryOp op = per_sample ? BinaryOp::mul : BinaryOp::add;
  Tensor a = filled(shape, -2.0f, 2.0f, 1, device), b = filled(b_shape, -1.0f, 1.0f, 2, device);
  const bool backward = c == Case::add_channel_backward || c == Case::mul_sample_channel_backward;
  Tensor dy = backward ? filled(shape, -1.0f, 1.0f, 3, device) : Tensor();
  const int repeats = time_calls(state, device, [&] {
    if (backward) {
      ctsr::BinaryGrads g = ctsr::binary_backward(op, a, b, dy);
      benchmark::DoNotOptimize(g.db.raw_data());
    } else {
      Tensor y = c == Case::scale ? ctsr::scale(a, 0.5) : ctsr::binary(op, a, b);
      benchmark::DoNotOptimize(y.raw_data());
    }
  });
  double bytes_per_element = 8;
  if (c == Case::add || c == Case::add_channel_backward) bytes_per_element = 12;
  if (c == Case::mul_sample_channel_backward) bytes_per_element = 16;
  set_bandwidth(state, bytes_per_element * double(shape.numel()), repeats);
}

CTSR_BENCH_CASES {
  const std::pair<Case, const char*> cases[] = {{Case::add, "add_forward"},
                                                {Case::add_channel, "add_channel_forward"},
                                                {Case::add_channel_backward, "add_channel_backward"},
                                                {Case::mul_sample_channel, "mul_sample_channel_forward"},
                                                {Case::mul_sample_channel_backward, "mul_sample_channel_backward"},
                                                {Case::scale, "scale_forward"}};
  for (const auto& [c, name] : cases) {
    on_devices(name, {{2, 25, 16, 16, 16}}, {{1, 5, 8, 8, 16}}, {{32, 25, 16, 16, 128}},
               [c = c](benchmark::State& s, Device d) { run_binary(s, d, c); });
  }
}

}  // namespace
