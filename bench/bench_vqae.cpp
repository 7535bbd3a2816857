// Decoding with the frozen VQ-AE: the case is a production latent [1, 25, 16, 16, 8]
// (a 200 x 128 x 128 volume) through the released model's architecture (n_hiddens 48, 8192 codes,
// num_groups 24; weights are the layers' default random init, which costs the same as trained
// ones). Reported: time per decode, the device's peak allocated memory during it
// (peak_alloc_MiB, from the caching allocator) and output voxels per second. The PyTorch eager
// figure on the same GPU comes from tools/pytorch/bench_vqae_decode.py.
// The cpu case decodes a [1, 2, 2, 2, 8] latent (16^3 output) so the CPU smoke run stays quick.
//
// Not an op family (kernels/*.cu): a whole model's decode. See bench/README.md.
#include <benchmark/benchmark.h>

#include "bench/bench_util.h"
#include "model/vqae.h"
#include "runtime/allocator.h"
#include "runtime/stream.h"

namespace {

using ctsr::Device;

void vqae_decode(benchmark::State& state, Device device) {
  if (ctsr::bench::skip_without_gpu(state, device)) return;
  const ctsr::Shape latent{1, state.range(0), state.range(1), state.range(2), 8};
  ctsr::LayerOptions o;
  o.device = device;
  ctsr::Vqae model(ctsr::VqaeConfig{}, o);
  ctsr::Tensor z = ctsr::bench::filled(latent, -1.0f, 1.0f, 7, device);
  ctsr::Stream stream = ctsr::Stream::current(device);
  model.decode(z);  // warm the allocator's cache and cuDNN/cuBLAS handles
  stream.synchronize();
  ctsr::reset_peak_memory(device);
  for (auto _ : state) {
    ctsr::Tensor y = model.decode(z);
    stream.synchronize();
    benchmark::DoNotOptimize(y);
  }
  const double voxels = double(latent.numel() / 8) * 512.0;
  state.counters["peak_alloc_MiB"] = double(ctsr::allocator_stats(device).peak_allocated) / (1 << 20);
  state.counters["voxels_per_s"] = benchmark::Counter(voxels, benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK_CAPTURE(vqae_decode, cuda, Device::cuda(0))->Args({25, 16, 16})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(vqae_decode, cpu, Device::cpu())->Args({2, 2, 2})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
