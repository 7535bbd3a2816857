// 3D convolution throughput: conv3d forward, backward-data and backward-weight (and the
// transposed convolution's forward), in TFLOP/s counted as 2 * M * Co * K per call (M output
// voxels of the convolution, K = taps * Ci; padding taps counted as if real, the usual
// convention).
//
// GPU cases run the production shape of the UNet's level 0, x [32, 25, 16, 16, 128] NDHWC with
// 128 -> 128 channels, k3 s1 p1 (181 GFLOP per call), plus its k3 s2 p1 downsampling, once per
// engine: the cudnn engine first, then the custom one, whose `vs_cudnn` counter is its
// throughput over cuDNN's for the same op and shape (present only when that cuDNN case ran in
// this process, i.e. it was not filtered out or skipped). The cpu and cuda_on_cpu cases run a
// tiny shape, so `ctsr_bench --benchmark_filter=cpu --benchmark_min_time=0.001` stays quick.
//
// GPU cases enqueue 5 calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency. backward_weight accumulates into one dw throughout.
#include <benchmark/benchmark.h>

#include <chrono>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "kernels/conv3d.h"
#include "kernels/conv_transpose3d.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"

namespace {

using ctsr::ConvEngine;
using ctsr::Device;
using ctsr::DeviceKind;
using ctsr::Tensor;

enum class Op { forward, backward_data, backward_weight, transpose_forward };

const char* op_name(Op op) {
  switch (op) {
    case Op::forward: return "forward";
    case Op::backward_data: return "backward_data";
    case Op::backward_weight: return "backward_weight";
    case Op::transpose_forward: return "transpose_forward";
  }
  return "?";
}

// cuDNN's TFLOP/s per (op, shape), for the custom engine's ratio.
std::map<std::string, double>& cudnn_results() {
  static std::map<std::string, double> results;
  return results;
}
std::mutex g_results_mutex;

std::string shape_key(Op op, const benchmark::State& state) {
  std::ostringstream key;
  key << op_name(op);
  for (int i = 0; i < 9; ++i) key << ',' << state.range(i);
  return key.str();
}

// Args: N, D, H, W, Ci, Co, kernel, stride, padding (cubic).
void run_conv_body(benchmark::State& state, Device device, ConvEngine engine, Op op) {
  const ctsr::ScopedConvEngine scoped(engine);
  const int64_t n = state.range(0), d = state.range(1), h = state.range(2), w = state.range(3);
  const int64_t ci = state.range(4), co = state.range(5);
  const ctsr::Conv3dParams params = ctsr::Conv3dParams::cubic(state.range(6), state.range(7), state.range(8));
  const int64_t k = state.range(6);
  const ctsr::Shape x_shape{n, d, h, w, ci};
  // conv3d: weight [Co, k, k, k, Ci]; conv_transpose3d: weight [Ci, k, k, k, Co].
  const bool transpose = op == Op::transpose_forward;
  Tensor x = ctsr::bench::filled(x_shape, -1.0f, 1.0f, 1, device);
  Tensor weight = ctsr::bench::filled(transpose ? ctsr::Shape{ci, k, k, k, co} : ctsr::Shape{co, k, k, k, ci}, -0.05f,
                                      0.05f, 2, device);
  Tensor bias = ctsr::bench::filled({co}, -0.1f, 0.1f, 3, device);
  Tensor y = transpose ? ctsr::conv_transpose3d_forward(x, weight, bias, params)
                       : ctsr::conv3d_forward(x, weight, bias, params);
  Tensor dy = ctsr::bench::filled(y.shape(), -0.5f, 0.5f, 4, device);
  Tensor dw;
  // FLOPs of the convolution being computed: for the transposed one, its adjoint conv3d's.
  const double voxels = transpose ? double(x.numel() / ci) : double(y.numel() / co);
  const double flops = 2.0 * voxels * double(ci) * double(co) * double(k * k * k);
  const int repeats = ctsr::bench::repeats_for(device, 5);  // 5: a production call takes milliseconds
  auto run_once = [&] {
    switch (op) {
      case Op::forward: benchmark::DoNotOptimize(ctsr::conv3d_forward(x, weight, bias, params).raw_data()); break;
      case Op::backward_data:
        benchmark::DoNotOptimize(ctsr::conv3d_backward_data(dy, weight, x_shape, params).raw_data());
        break;
      case Op::backward_weight: ctsr::conv3d_backward_weight(x, dy, params, dw); break;
      case Op::transpose_forward:
        benchmark::DoNotOptimize(ctsr::conv_transpose3d_forward(x, weight, bias, params).raw_data());
        break;
    }
  };
  ctsr::Stream stream = ctsr::Stream::current(device);
  run_once();  // warm-up: cuDNN's handle and algorithm choice, the allocator's first blocks
  stream.synchronize();
  // Our own clock around the loop (the span UseRealTime measures), for the ratio to cuDNN.
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    for (int r = 0; r < repeats; ++r) run_once();
    stream.synchronize();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double total = flops * repeats * double(state.iterations());
  state.counters["TFLOP/s"] = benchmark::Counter(total / 1e12, benchmark::Counter::kIsRate);
  state.counters["GFLOP/call"] = flops / 1e9;
  if (device.kind != DeviceKind::cuda || seconds <= 0) return;
  const double rate = total / seconds;
  const std::string key = shape_key(op, state);
  std::lock_guard<std::mutex> lock(g_results_mutex);
  if (engine == ConvEngine::cudnn) {
    cudnn_results()[key] = rate;
  } else if (auto it = cudnn_results().find(key); it != cudnn_results().end()) {
    state.counters["vs_cudnn"] = rate / it->second;
  }
}

void run_conv(benchmark::State& state, Device device, ConvEngine engine, Op op) {
  if (ctsr::bench::skip_without_gpu(state, device)) return;
  try {
    run_conv_body(state, device, engine, op);
  } catch (const ctsr::Error& e) {  // e.g. cuDNN refusing a shape: reported, the others still run
    state.SkipWithError(e.what());
  }
}

// Production: the UNet's level 0 (k3 s1 p1) and its downsampling (k3 s2 p1); the VQ-AE-style
// upsampling by a transposed k4 s2 p1 convolution. Tiny: for the host paths.
#define CTSR_CONV_PRODUCTION_ARGS                                            \
  ->Args({32, 25, 16, 16, 128, 128, 3, 1, 1})->Args({32, 25, 16, 16, 128, 128, 3, 2, 1}) \
      ->Unit(benchmark::kMillisecond)->UseRealTime()
#define CTSR_CONV_TINY_ARGS ->Args({1, 5, 8, 8, 16, 16, 3, 1, 1})->Unit(benchmark::kMillisecond)->UseRealTime()

// cuDNN cases are registered (and so run) before the custom ones, for vs_cudnn.
#define CTSR_CONV_BENCH(name, op)                                                                              \
  void name##_cpu(benchmark::State& s) { run_conv(s, Device::cpu(), ConvEngine::custom, op); }                  \
  void name##_cuda_on_cpu(benchmark::State& s) { run_conv(s, Device::cuda_on_cpu(), ConvEngine::custom, op); }  \
  void name##_cuda_cudnn(benchmark::State& s) { run_conv(s, Device::cuda(0), ConvEngine::cudnn, op); }          \
  void name##_cuda_custom(benchmark::State& s) { run_conv(s, Device::cuda(0), ConvEngine::custom, op); }        \
  BENCHMARK(name##_cpu) CTSR_CONV_TINY_ARGS;                                                                   \
  BENCHMARK(name##_cuda_on_cpu) CTSR_CONV_TINY_ARGS;                                                           \
  BENCHMARK(name##_cuda_cudnn) CTSR_CONV_PRODUCTION_ARGS;                                                      \
  BENCHMARK(name##_cuda_custom) CTSR_CONV_PRODUCTION_ARGS;

CTSR_CONV_BENCH(conv3d_forward, Op::forward)
CTSR_CONV_BENCH(conv3d_backward_data, Op::backward_data)
CTSR_CONV_BENCH(conv3d_backward_weight, Op::backward_weight)

// Transposed k4 s2 p1: [32, 13, 8, 8, 128] -> [32, 26, 16, 16, 128] on the GPU.
void conv_transpose3d_forward_cpu(benchmark::State& s) {
  run_conv(s, Device::cpu(), ConvEngine::custom, Op::transpose_forward);
}
void conv_transpose3d_forward_cuda_on_cpu(benchmark::State& s) {
  run_conv(s, Device::cuda_on_cpu(), ConvEngine::custom, Op::transpose_forward);
}
void conv_transpose3d_forward_cuda_cudnn(benchmark::State& s) {
  run_conv(s, Device::cuda(0), ConvEngine::cudnn, Op::transpose_forward);
}
void conv_transpose3d_forward_cuda_custom(benchmark::State& s) {
  run_conv(s, Device::cuda(0), ConvEngine::custom, Op::transpose_forward);
}
BENCHMARK(conv_transpose3d_forward_cpu)
    ->Args({1, 3, 4, 4, 16, 16, 4, 2, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(conv_transpose3d_forward_cuda_on_cpu)
    ->Args({1, 3, 4, 4, 16, 16, 4, 2, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(conv_transpose3d_forward_cuda_cudnn)
    ->Args({32, 13, 8, 8, 128, 128, 4, 2, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(conv_transpose3d_forward_cuda_custom)
    ->Args({32, 13, 8, 8, 128, 128, 4, 2, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
