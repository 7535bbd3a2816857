// The metrics family (kernels/metrics.h) on every device this build has:
//   ssim_psnr         SSIM + PSNR of a batch of volumes [B, D, H, W] float32, in volumes/s (and
//                     GB/s of the two inputs, each read by both metrics). The GPU shape is a
//                     validation batch: 32 volumes of 200 x 128 x 128.
// The cpu and cuda_on_cpu cases run tiny shapes so that `--benchmark_filter=cpu` stays quick.
// GPU cases enqueue bench::kGpuRepeats calls per iteration and synchronise once (throughput, not launch
// latency); without a GPU they report "no GPU". (The optimiser's kernels, once here, are
// bench_optimizer.cpp.)
#include <benchmark/benchmark.h>

#include <vector>

#include "bench/bench_util.h"
#include "kernels/metrics.h"

namespace {

using namespace ctsr::bench;

// Args: B, D, H, W.
void run_ssim_psnr(benchmark::State& state, Device device) {
  const ctsr::Shape shape = shape_from_args(state, 0, 4);
  Tensor target = filled(shape, -1.0f, 1.0f, 1, device);
  // pred = target + noise, so the scores are those of a plausible reconstruction.
  Tensor noise = filled(shape, -0.05f, 0.05f, 2, Device::cpu());
  std::vector<float> p = target.to_vector<float>(), n = noise.to_vector<float>();
  for (size_t i = 0; i < p.size(); ++i) p[i] += n[i];
  Tensor pred = Tensor::from_vector(p, shape, device);
  const int repeats = time_calls(state, device, [&] {
    ctsr::SsimResult s = ctsr::ssim(pred, target, 2.0);
    ctsr::PsnrResult q = ctsr::psnr(pred, target, 2.0);
    benchmark::DoNotOptimize(s.per_sample.raw_data());
    benchmark::DoNotOptimize(q.psnr.raw_data());
  });
  const double calls = double(repeats) * double(state.iterations());
  state.counters["volumes/s"] = benchmark::Counter(double(shape[0]) * calls, benchmark::Counter::kIsRate);
  set_bandwidth(state, 2.0 * 2.0 * double(pred.nbytes()), repeats);
}

CTSR_BENCH_CASES {
  on_devices("ssim_psnr", {{2, 4, 24, 24}}, {{2, 4, 24, 24}}, {{32, 200, 128, 128}}, run_ssim_psnr,
             benchmark::kMillisecond);
}

}  // namespace
