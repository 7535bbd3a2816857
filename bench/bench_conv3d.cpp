// The conv3d family (kernels/conv3d.h): 3D convolution forward, backward-data and
// backward-weight throughput, in TFLOP/s counted as 2 * M * Co * K per call (M output voxels,
// K = taps * Ci; padding taps counted as if real, the usual convention).
//
// GPU cases run the production shape of the UNet's level 0, x [32, 25, 16, 16, 128] NDHWC with
// 128 -> 128 channels, k3 s1 p1 (181 GFLOP per call), plus its k3 s2 p1 downsampling, once per
// engine: the cudnn engine first, then the custom one, whose `vs_cudnn` counter is its
// throughput over cuDNN's for the same op and shape (present only when that cuDNN case ran in
// this process, i.e. it was not filtered out or skipped). The cpu and cuda_on_cpu cases run a
// tiny shape, so `ctsr_bench --benchmark_filter=cpu --benchmark_min_time=0.001` stays quick.
// Args: N, D, H, W, Ci, Co, kernel, stride, padding (cubic). The transposed convolution is
// bench_conv_transpose3d.cpp.
//
// GPU cases enqueue 5 calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency. backward_weight accumulates into one dw throughout.
//
// bf16: conv3d_<op>_bf16_{cpu, cuda_on_cpu, cuda} run the same shapes with bf16 x, weight and dy
// (float32 bias and dw) on the custom engine's tensor-core kernels (kernels/mma.h; the cpu case is
// the widening reference). cuDNN takes float32 only here, so they have no vs_cudnn; compare their
// TFLOP/s with conv3d_<op>_cuda_cudnn's. Every case also reports MB_per_call, the bytes the op
// must move at least (its inputs read once, its output written once) in its dtype.
#include <benchmark/benchmark.h>

#include "bench/bench_util.h"
#include "kernels/conv3d.h"

namespace {

using namespace ctsr::bench;

enum class Op { forward, backward_data, backward_weight };

void run_conv3d(benchmark::State& state, Device device, ConvEngine engine, Op op, const char* op_name,
                DType dtype = DType::float32) {
  const ctsr::Shape x_shape = shape_from_args(state);
  const int64_t ci = state.range(4), co = state.range(5), k = state.range(6);
  const ctsr::Conv3dParams params = ctsr::Conv3dParams::cubic(k, state.range(7), state.range(8));
  Tensor x = filled_as(dtype, x_shape, -1.0f, 1.0f, 1, device);
  Tensor weight = filled_as(dtype, {co, k, k, k, ci}, -0.05f, 0.05f, 2, device);
  Tensor bias = filled({co}, -0.1f, 0.1f, 3, device);
  Tensor y = ctsr::conv3d_forward(x, weight, bias, params);
  Tensor dy = filled_as(dtype, y.shape(), -0.5f, 0.5f, 4, device);
  Tensor dw;
  const double flops = 2.0 * double(y.numel() / co) * double(ci) * double(co) * double(k * k * k);
  const double e = double(ctsr::dtype_size(dtype));
  const double x_bytes = e * double(x.numel()), w_bytes = e * double(weight.numel()), y_bytes = e * double(y.numel());
  const double bytes = op == Op::backward_weight ? x_bytes + y_bytes + 2 * 4.0 * double(weight.numel())  // dw in float
                                                 : x_bytes + w_bytes + y_bytes;
  state.counters["MB_per_call"] = bytes / 1e6;
  // 5 GPU calls per iteration: a production call takes milliseconds.
  time_against_baseline(state, device, flops, 5, args_key(op_name, state, 9), engine == ConvEngine::cudnn,
                        "vs_cudnn", [&] {
                          switch (op) {
                            case Op::forward:
                              benchmark::DoNotOptimize(ctsr::conv3d_forward(x, weight, bias, params).raw_data());
                              break;
                            case Op::backward_data:
                              benchmark::DoNotOptimize(ctsr::conv3d_backward_data(dy, weight, x_shape, params).raw_data());
                              break;
                            case Op::backward_weight: ctsr::conv3d_backward_weight(x, dy, params, dw); break;
                          }
                        });
}

CTSR_BENCH_CASES {
  // Production: the UNet's level 0 (k3 s1 p1) and its downsampling (k3 s2 p1). Tiny: for the host paths.
  const ArgsList production = {{32, 25, 16, 16, 128, 128, 3, 1, 1}, {32, 25, 16, 16, 128, 128, 3, 2, 1}};
  const ArgsList tiny = {{1, 5, 8, 8, 16, 16, 3, 1, 1}};
  const std::pair<Op, const char*> ops[] = {
      {Op::forward, "forward"}, {Op::backward_data, "backward_data"}, {Op::backward_weight, "backward_weight"}};
  for (const auto& [op, op_name] : ops) {
    on_conv_engines(std::string("conv3d_") + op_name, tiny, production,
                    [op = op, op_name = op_name](benchmark::State& s, Device d, ConvEngine e) {
                      run_conv3d(s, d, e, op, op_name);
                    });
  }
  for (const auto& [op, op_name] : ops) {
    on_devices(std::string("conv3d_") + op_name + "_bf16", tiny, tiny, production,
               [op = op, op_name = op_name](benchmark::State& s, Device d) {
                 const ctsr::ScopedConvEngine scoped(ConvEngine::custom);
                 run_conv3d(s, d, ConvEngine::custom, op, op_name, DType::bfloat16);
               },
               benchmark::kMillisecond);
  }
}

}  // namespace
