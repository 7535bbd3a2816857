// The loss family (kernels/loss.h) on every device this build has, in achieved memory
// throughput: the MSE loss (the diffusion UNet's objective) and the L1 loss (the VQ-AE's
// reconstruction term), forward and backward (both gradients). GPU sizes: MSE on a latent batch
// [32, 25, 16, 16, 4] and, as mse_loss_forward_large_cuda, on the UNet's level-0 activation
// [32, 25, 16, 16, 128] (105 MB, a memory-bound figure comparable with silu's); L1 on a VQ-AE
// training batch, 2 patches of 64^3 with one channel. The cpu and cuda_on_cpu cases run small
// sizes so that a `--benchmark_min_time=0.001` pass over the host paths stays quick on a 2-core
// machine. Args: N, D, H, W, C.
//
// Bytes are counted as the kernels move them, per call:
//   forward    pred and target read (the partials are ~1/2048)          8 bytes per element
//   backward   pred and target read, dpred and dtarget written         16 bytes per element
//
// GPU cases enqueue bench::kGpuRepeats calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency.
#include <benchmark/benchmark.h>

#include "bench/bench_util.h"
#include "kernels/loss.h"

namespace {

using namespace ctsr::bench;

enum class Loss { mse, l1 };

void run_loss(benchmark::State& state, Device device, Loss loss, bool backward) {
  const ctsr::Shape shape = shape_from_args(state);
  Tensor pred = filled(shape, -2.0f, 2.0f, 3, device), target = filled(shape, -2.0f, 2.0f, 4, device);
  Tensor dloss = Tensor::from_vector<float>({1.0f}, {1}, device);
  const int repeats = time_calls(state, device, [&] {
    if (backward) {
      ctsr::PairLossGradients g = loss == Loss::mse ? ctsr::mse_loss_backward(pred, target, dloss)
                                                    : ctsr::l1_loss_backward(pred, target, dloss);
      benchmark::DoNotOptimize(g.dpred.raw_data());
    } else {
      Tensor value = loss == Loss::mse ? ctsr::mse_loss(pred, target) : ctsr::l1_loss(pred, target);
      benchmark::DoNotOptimize(value.raw_data());
    }
  });
  set_bandwidth(state, (backward ? 16.0 : 8.0) * double(shape.numel()), repeats);
}

CTSR_BENCH_CASES {
  const ArgsList cpu = {{2, 25, 16, 16, 16}}, executor = {{1, 13, 8, 8, 16}};
  const ArgsList latents = {{32, 25, 16, 16, 4}}, patches = {{2, 64, 64, 64, 1}};
  for (const bool backward : {false, true}) {
    on_devices(backward ? "mse_loss_backward" : "mse_loss_forward", cpu, executor, latents,
               [=](benchmark::State& s, Device d) { run_loss(s, d, Loss::mse, backward); });
  }
  for (const bool backward : {false, true}) {
    on_devices(backward ? "l1_loss_backward" : "l1_loss_forward", cpu, executor, patches,
               [=](benchmark::State& s, Device d) { run_loss(s, d, Loss::l1, backward); });
  }
  // The MSE loss at the activation size too (GPU only).
  register_case("mse_loss_forward_large_cuda", Device::cuda(0), {{32, 25, 16, 16, 128}},
                [](benchmark::State& s, Device d) { run_loss(s, d, Loss::mse, false); }, benchmark::kMicrosecond);
}

}  // namespace
