// The attention family (kernels/attention.h): multi-head attention, forward and backward, on
// every device this build has, in achieved TFLOP/s. GPU shapes: the UNet's attention at the 25 x 16 x 16 latent (6400 tokens, 4 heads of
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
//
// bf16: attention_{forward,backward}_bf16_* take bf16 qkv and dO (float32 lse) on the tensor-core
// kernels (kernels/mma.h); the cpu case is the widening reference. Dense bf16 peak of an H100 SXM is
// about 989 TFLOP/s (the target: the forward at 6400 tokens at half of it).
#include <benchmark/benchmark.h>

#include "bench/bench_util.h"
#include "kernels/attention.h"

namespace {

using namespace ctsr::bench;

void run_attention(benchmark::State& state, Device device, bool backward, DType dtype = DType::float32) {
  const int64_t B = state.range(0), N = state.range(1), heads = state.range(2), head_dim = state.range(3);
  const int64_t C = heads * head_dim;
  Tensor qkv = filled_as(dtype, {B, N, 3 * C}, -2.0f, 2.0f, 1, device);
  Tensor d_o = backward ? filled_as(dtype, {B, N, C}, -1.0f, 1.0f, 2, device) : Tensor();
  ctsr::AttentionOutput saved = ctsr::attention_forward(qkv, heads);
  const int repeats = time_calls(state, device, [&] {
    if (!backward) {
      ctsr::AttentionOutput out = ctsr::attention_forward(qkv, heads);
      benchmark::DoNotOptimize(out.o.raw_data());
    } else {
      Tensor d_qkv = ctsr::attention_backward(qkv, saved.o, saved.lse, d_o, heads);
      benchmark::DoNotOptimize(d_qkv.raw_data());
    }
  });
  const double forward_flops = 4.0 * double(B) * double(heads) * double(N) * double(N) * double(head_dim);
  const double flops = backward ? 2.5 * forward_flops : forward_flops;
  set_flop_rate(state, flops, repeats);
  state.counters["GFLOP/call"] = flops / 1e9;
}

CTSR_BENCH_CASES {
  const ArgsList tiny = {{1, 96, 2, 32}};
  const ArgsList gpu = {{1, 6400, 4, 32}, {8, 6400, 4, 32}, {1, 832, 8, 64}, {8, 832, 8, 64}};
  // The forward on the CPU at the 4x VQ-AE's middle block too (a 16^3 latent of a 64^3 volume:
  // 4096 tokens, one head of 32), where Device::cpu takes the sgemm path
  // (kernels::cpu::attention_forward_gemm).
  on_devices("attention_forward", {tiny[0], {1, 4096, 1, 32}}, tiny, gpu,
             [](benchmark::State& s, Device d) { run_attention(s, d, false); });
  on_devices("attention_backward", tiny, tiny, gpu, [](benchmark::State& s, Device d) { run_attention(s, d, true); });
  on_devices("attention_forward_bf16", tiny, tiny, gpu,
             [](benchmark::State& s, Device d) { run_attention(s, d, false, DType::bfloat16); });
  on_devices("attention_backward_bf16", tiny, tiny, gpu,
             [](benchmark::State& s, Device d) { run_attention(s, d, true, DType::bfloat16); });
}

}  // namespace
