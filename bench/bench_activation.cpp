// Small ops on every device this build has: SiLU and the MSE loss in achieved memory throughput,
// the fully connected layer (GEMMs + bias kernels) in TFLOP/s. GPU cases run the production
// sizes: SiLU on the UNet's level-0 activation [32, 25, 16, 16, 128] float32 (105 MB), the loss
// on a latent batch [32, 25, 16, 16, 4] and on the same 105 MB, and linear 6400 x 512 -> 1536
// (attention's QKV projection of 6400 tokens). The cpu and cuda_on_cpu cases run small sizes so
// that a `--benchmark_min_time=0.01` pass over everything stays quick on a 2-core machine; the
// cuda_on_cpu figures measure the executor, not a GPU.
//
// Bytes are counted as the kernels move them, per call:
//   silu forward     x read, y written                                    8 bytes per element
//   silu backward    x and dy read, dx written                           12 bytes per element
//   mse_loss         pred and target read (the partials are ~1/2048)      8 bytes per element
//   mse_loss bwd     pred and target read, dpred and dtarget written     16 bytes per element
// Linear FLOPs: forward 2 rows in out (the bias add is not counted); backward 4 rows in out (dx
// and dW; the bias-gradient sums are not counted).
//
// GPU cases enqueue bench::kGpuRepeats calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency.
#include <benchmark/benchmark.h>

#include <vector>

#include "kernels/activation.h"
#include "kernels/linear.h"
#include "kernels/loss.h"
#include "runtime/stream.h"
#include "bench/bench_util.h"
#include "runtime/tensor.h"

namespace {

using ctsr::Device;
using ctsr::DeviceKind;
using ctsr::Tensor;
using ctsr::bench::filled;
using ctsr::bench::skip_without_gpu;
using ctsr::bench::repeats_for;

ctsr::Shape shape_from_args(const benchmark::State& state) {
  return ctsr::Shape{state.range(0), state.range(1), state.range(2), state.range(3), state.range(4)};
}

void set_bandwidth(benchmark::State& state, double bytes_per_call, int repeats) {
  state.counters["GB/s"] = benchmark::Counter(bytes_per_call * repeats * double(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}

// Args: N, D, H, W, C.
void run_silu(benchmark::State& state, Device device, bool backward) {
  if (skip_without_gpu(state, device)) return;
  const ctsr::Shape shape = shape_from_args(state);
  Tensor x = filled(shape, -4.0f, 4.0f, 1, device);
  Tensor dy = backward ? filled(shape, -1.0f, 1.0f, 2, device) : Tensor();
  const int repeats = repeats_for(device);
  ctsr::Stream stream = ctsr::Stream::current(device);
  stream.synchronize();
  for (auto _ : state) {
    for (int r = 0; r < repeats; ++r) {
      Tensor out = backward ? ctsr::silu_backward(x, dy) : ctsr::silu_forward(x);
      benchmark::DoNotOptimize(out.raw_data());
    }
    stream.synchronize();
  }
  set_bandwidth(state, (backward ? 12.0 : 8.0) * double(shape.numel()), repeats);
}

// Args: N, D, H, W, C.
void run_mse_loss(benchmark::State& state, Device device, bool backward) {
  if (skip_without_gpu(state, device)) return;
  const ctsr::Shape shape = shape_from_args(state);
  Tensor pred = filled(shape, -2.0f, 2.0f, 3, device), target = filled(shape, -2.0f, 2.0f, 4, device);
  Tensor dloss = Tensor::from_vector<float>({1.0f}, {1}, device);
  const int repeats = repeats_for(device);
  ctsr::Stream stream = ctsr::Stream::current(device);
  stream.synchronize();
  for (auto _ : state) {
    for (int r = 0; r < repeats; ++r) {
      if (backward) {
        ctsr::MseLossGradients g = ctsr::mse_loss_backward(pred, target, dloss);
        benchmark::DoNotOptimize(g.dpred.raw_data());
      } else {
        Tensor loss = ctsr::mse_loss(pred, target);
        benchmark::DoNotOptimize(loss.raw_data());
      }
    }
    stream.synchronize();
  }
  set_bandwidth(state, (backward ? 16.0 : 8.0) * double(shape.numel()), repeats);
}

// Args: rows, in, out.
void run_linear(benchmark::State& state, Device device, bool backward) {
  if (skip_without_gpu(state, device)) return;
  const int64_t rows = state.range(0), in = state.range(1), out = state.range(2);
  Tensor x = filled({rows, in}, -1.0f, 1.0f, 5, device);
  Tensor w = filled({out, in}, -0.1f, 0.1f, 6, device), b = filled({out}, -0.1f, 0.1f, 7, device);
  Tensor dy = backward ? filled({rows, out}, -1.0f, 1.0f, 8, device) : Tensor();
  Tensor dw, db;
  const int repeats = repeats_for(device);
  ctsr::Stream stream = ctsr::Stream::current(device);
  stream.synchronize();
  for (auto _ : state) {
    for (int r = 0; r < repeats; ++r) {
      Tensor result = backward ? ctsr::linear_backward(x, w, dy, dw, &db) : ctsr::linear_forward(x, w, b);
      benchmark::DoNotOptimize(result.raw_data());
    }
    stream.synchronize();
  }
  const double flops = (backward ? 4.0 : 2.0) * double(rows) * double(in) * double(out);
  state.counters["TFLOP/s"] =
      benchmark::Counter(flops * repeats * double(state.iterations()) / 1e12, benchmark::Counter::kIsRate);
}

#define CTSR_OPS_BENCH(name, runner, backward, cpu_args, executor_args, gpu_args)                         \
  void name##_cpu(benchmark::State& s) { runner(s, Device::cpu(), backward); }                            \
  void name##_cuda_on_cpu(benchmark::State& s) { runner(s, Device::cuda_on_cpu(), backward); }            \
  void name##_cuda(benchmark::State& s) { runner(s, Device::cuda(0), backward); }                         \
  BENCHMARK(name##_cpu)->Args(cpu_args)->Unit(benchmark::kMillisecond)->UseRealTime();                    \
  BENCHMARK(name##_cuda_on_cpu)->Args(executor_args)->Unit(benchmark::kMillisecond)->UseRealTime();       \
  BENCHMARK(name##_cuda)->Args(gpu_args)->Unit(benchmark::kMicrosecond)->UseRealTime();

#define CTSR_ARGS(...) std::vector<int64_t>({__VA_ARGS__})

CTSR_OPS_BENCH(silu_forward, run_silu, false, CTSR_ARGS(2, 25, 16, 16, 16), CTSR_ARGS(1, 13, 8, 8, 16),
               CTSR_ARGS(32, 25, 16, 16, 128))
CTSR_OPS_BENCH(silu_backward, run_silu, true, CTSR_ARGS(2, 25, 16, 16, 16), CTSR_ARGS(1, 13, 8, 8, 16),
               CTSR_ARGS(32, 25, 16, 16, 128))
CTSR_OPS_BENCH(mse_loss_forward, run_mse_loss, false, CTSR_ARGS(2, 25, 16, 16, 16), CTSR_ARGS(1, 13, 8, 8, 16),
               CTSR_ARGS(32, 25, 16, 16, 4))
CTSR_OPS_BENCH(mse_loss_backward, run_mse_loss, true, CTSR_ARGS(2, 25, 16, 16, 16), CTSR_ARGS(1, 13, 8, 8, 16),
               CTSR_ARGS(32, 25, 16, 16, 4))
CTSR_OPS_BENCH(linear_forward, run_linear, false, CTSR_ARGS(1600, 256, 768), CTSR_ARGS(256, 64, 192),
               CTSR_ARGS(6400, 512, 1536))
CTSR_OPS_BENCH(linear_backward, run_linear, true, CTSR_ARGS(1600, 256, 768), CTSR_ARGS(256, 64, 192),
               CTSR_ARGS(6400, 512, 1536))

// The loss at the activation size too (memory-bound figure comparable with silu's).
void mse_loss_forward_large_cuda(benchmark::State& s) { run_mse_loss(s, Device::cuda(0), false); }
BENCHMARK(mse_loss_forward_large_cuda)->Args({32, 25, 16, 16, 128})->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
