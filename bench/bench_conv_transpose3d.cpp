// The conv_transpose3d family (kernels/conv_transpose3d.h): the transposed 3D convolution's
// forward, backward-data and backward-weight throughput, in TFLOP/s counted as the convolution
// it is the adjoint of (kernels/conv_transpose3d.h: C, Co -> Ci): 2 * M * Ci * K per call, M the
// voxels of x (C's output), K = taps * Co; padding taps counted as if real.
//
// GPU cases run the VQ-AE-style upsampling by a transposed k4 s2 p1 convolution, [32, 13, 8, 8,
// 128] -> [32, 26, 16, 16, 128] (56 GFLOP per call), once per engine: the cudnn engine
// first, then the custom one, whose `vs_cudnn` counter is its throughput over cuDNN's for the
// same op and shape (present only when that cuDNN case ran in this process). The cpu and
// cuda_on_cpu cases run a tiny shape, so `ctsr_bench --benchmark_filter=cpu
// --benchmark_min_time=0.001` stays quick. Args: N, D, H, W, Ci, Co, kernel, stride, padding
// (cubic). backward_bias (a sum of dy per channel, kernels/reduce.h's) is not timed here.
//
// GPU cases enqueue 5 calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency. backward_weight accumulates into one dw throughout.
#include <benchmark/benchmark.h>

#include "bench/bench_util.h"
#include "kernels/conv_transpose3d.h"

namespace {

using namespace ctsr::bench;

enum class Op { forward, backward_data, backward_weight };

void run_conv_transpose3d(benchmark::State& state, Device device, ConvEngine engine, Op op, const char* op_name) {
  const ctsr::Shape x_shape = shape_from_args(state);
  const int64_t ci = state.range(4), co = state.range(5), k = state.range(6);
  const ctsr::Conv3dParams params = ctsr::Conv3dParams::cubic(k, state.range(7), state.range(8));
  Tensor x = filled(x_shape, -1.0f, 1.0f, 1, device);
  Tensor weight = filled({ci, k, k, k, co}, -0.05f, 0.05f, 2, device);
  Tensor bias = filled({co}, -0.1f, 0.1f, 3, device);
  Tensor y = ctsr::conv_transpose3d_forward(x, weight, bias, params);
  Tensor dy = filled(y.shape(), -0.5f, 0.5f, 4, device);
  Tensor dw;
  const double flops = 2.0 * double(x.numel() / ci) * double(ci) * double(co) * double(k * k * k);
  // The key names the family, so it never meets a conv3d case's.
  const std::string key = args_key(op_name, state, 9) + ",transpose";
  time_against_baseline(state, device, flops, 5, key, engine == ConvEngine::cudnn, "vs_cudnn", [&] {
    switch (op) {
      case Op::forward:
        benchmark::DoNotOptimize(ctsr::conv_transpose3d_forward(x, weight, bias, params).raw_data());
        break;
      case Op::backward_data:
        benchmark::DoNotOptimize(ctsr::conv_transpose3d_backward_data(dy, weight, x_shape, params).raw_data());
        break;
      case Op::backward_weight: ctsr::conv_transpose3d_backward_weight(x, dy, params, dw); break;
    }
  });
}

CTSR_BENCH_CASES {
  const ArgsList production = {{32, 13, 8, 8, 128, 128, 4, 2, 1}}, tiny = {{1, 3, 4, 4, 16, 16, 4, 2, 1}};
  const std::pair<Op, const char*> ops[] = {
      {Op::forward, "forward"}, {Op::backward_data, "backward_data"}, {Op::backward_weight, "backward_weight"}};
  for (const auto& [op, op_name] : ops) {
    on_conv_engines(std::string("conv_transpose3d_") + op_name, tiny, production,
                    [op = op, op_name = op_name](benchmark::State& s, Device d, ConvEngine e) {
                      run_conv_transpose3d(s, d, e, op, op_name);
                    });
  }
}

}  // namespace
