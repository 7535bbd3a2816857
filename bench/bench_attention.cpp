// Multi-head attention, forward and backward, on every device this build has, in achieved
// TFLOP/s. GPU shapes: the UNet's attention at the 25 x 16 x 16 latent (6400 tokens, 4 heads of
// 32, C = 128) and the VQ-AE mid-block (8 x 13 x 8 = 832 tokens, 8 heads of 64), at batch 1
// and 8; the cpu and cuda_on_cpu paths run a tiny shape so that `--benchmark_filter=cpu` stays
// quick, and the cpu forward the 4x VQ-AE's middle block too. Args: B, N, heads, head_dim.
//
// FLOPs are counted the usual way for attention (FlashAttention's convention, so figures
// compare with published ones): forward 4 B H N^2 d (q k^T and P v, 2 flops per multiply-add);
// backward 2.5 times that (five N^2 d products against two). Our backward recomputes q k^T and
// dO v^T for dq in its own kernel (seven products, not five), so the arithmetic it really does
// is 1.4 times what its figure counts. exp and the softmax bookkeeping are not counted.
//
// GPU cases enqueue bench::kGpuRepeats calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency.
#include <benchmark/benchmark.h>

#include <vector>

#include "kernels/attention.h"
#include "runtime/stream.h"
#include "bench/bench_util.h"
#include "runtime/tensor.h"

namespace {

using ctsr::Device;
using ctsr::DeviceKind;
using ctsr::Tensor;
using ctsr::bench::filled;
using ctsr::bench::repeats_for;

void run_attention(benchmark::State& state, Device device, bool backward) {
  if (device.kind == DeviceKind::cuda && !ctsr::cuda_available()) {
    state.SkipWithError("no GPU");
    return;
  }
  const int64_t B = state.range(0), N = state.range(1), heads = state.range(2), head_dim = state.range(3);
  const int64_t C = heads * head_dim;
  Tensor qkv = filled({B, N, 3 * C}, -2.0f, 2.0f, 1, device);
  Tensor d_o = backward ? filled({B, N, C}, -1.0f, 1.0f, 2, device) : Tensor();
  ctsr::AttentionOutput saved = ctsr::attention_forward(qkv, heads);
  const int repeats = repeats_for(device);
  ctsr::Stream stream = ctsr::Stream::current(device);
  stream.synchronize();
  for (auto _ : state) {
    for (int r = 0; r < repeats; ++r) {
      if (!backward) {
        ctsr::AttentionOutput out = ctsr::attention_forward(qkv, heads);
        benchmark::DoNotOptimize(out.o.raw_data());
      } else {
        Tensor d_qkv = ctsr::attention_backward(qkv, saved.o, saved.lse, d_o, heads);
        benchmark::DoNotOptimize(d_qkv.raw_data());
      }
    }
    stream.synchronize();
  }
  const double forward_flops = 4.0 * double(B) * double(heads) * double(N) * double(N) * double(head_dim);
  const double flops = backward ? 2.5 * forward_flops : forward_flops;
  state.counters["TFLOP/s"] =
      benchmark::Counter(flops * double(repeats) * double(state.iterations()) / 1e12, benchmark::Counter::kIsRate);
  state.counters["GFLOP/call"] = flops / 1e9;
}

#define CTSR_ATTENTION_BENCH(name, backward)                                                                 \
  void name##_cpu(benchmark::State& s) { run_attention(s, Device::cpu(), backward); }                        \
  void name##_cuda_on_cpu(benchmark::State& s) { run_attention(s, Device::cuda_on_cpu(), backward); }        \
  void name##_cuda(benchmark::State& s) { run_attention(s, Device::cuda(0), backward); }                     \
  BENCHMARK(name##_cpu)->Args({1, 96, 2, 32})->Unit(benchmark::kMillisecond)->UseRealTime();                 \
  BENCHMARK(name##_cuda_on_cpu)->Args({1, 96, 2, 32})->Unit(benchmark::kMillisecond)->UseRealTime();         \
  BENCHMARK(name##_cuda)                                                                                     \
      ->Args({1, 6400, 4, 32})                                                                               \
      ->Args({8, 6400, 4, 32})                                                                               \
      ->Args({1, 832, 8, 64})                                                                                \
      ->Args({8, 832, 8, 64})                                                                                \
      ->Unit(benchmark::kMicrosecond)                                                                        \
      ->UseRealTime();

CTSR_ATTENTION_BENCH(attention_forward, false)
CTSR_ATTENTION_BENCH(attention_backward, true)

// The 4x VQ-AE's middle block on the CPU (a 16^3 latent of a 64^3 volume: 4096 tokens, one head
// of 32), where Device::cpu takes the sgemm path (kernels::cpu::attention_forward_gemm).
BENCHMARK(attention_forward_cpu)->Args({1, 4096, 1, 32})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
