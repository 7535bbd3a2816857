// Validation metrics and the optimiser's kernels on every device this build has.
//   ssim_psnr         SSIM + PSNR of a batch of volumes [B, D, H, W] float32, in volumes/s (and
//                     GB/s of the two inputs, each read by both metrics). The GPU shape is a
//                     validation batch: 32 volumes of 200 x 128 x 128.
//   adamw_step        one AdamW step over a model's worth of float32 parameters, in GB/s: p, g,
//                     m, v read and p, m, v written, 28 bytes per parameter. The GPU case is
//                     ~100M parameters in 200 tensors of mixed sizes (a UNet has a few hundred:
//                     large conv weights and many small norms and biases), so it exercises the
//                     multi-tensor launches, not one big array.
//   global_grad_norm  the sum of squares over the same gradients, 4 bytes per parameter.
// The cpu and cuda_on_cpu cases run tiny shapes so that `--benchmark_filter=cpu` stays quick.
// GPU cases enqueue bench::kGpuRepeats calls per iteration and synchronise once (throughput, not launch
// latency); without a GPU they report "no GPU".
#include <benchmark/benchmark.h>

#include <algorithm>
#include <vector>

#include "kernels/metrics.h"
#include "kernels/optimizer.h"
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

// Args: B, D, H, W.
void run_ssim_psnr(benchmark::State& state, Device device) {
  if (skip_without_gpu(state, device)) return;
  const ctsr::Shape shape{state.range(0), state.range(1), state.range(2), state.range(3)};
  Tensor target = filled(shape, -1.0f, 1.0f, 1, device);
  // pred = target + noise, so the scores are those of a plausible reconstruction.
  Tensor noise = filled(shape, -0.05f, 0.05f, 2, Device::cpu());
  std::vector<float> p = target.to_vector<float>(), n = noise.to_vector<float>();
  for (size_t i = 0; i < p.size(); ++i) p[i] += n[i];
  Tensor pred = Tensor::from_vector(p, shape, device);
  const int repeats = repeats_for(device);
  ctsr::Stream stream = ctsr::Stream::current(device);
  stream.synchronize();
  for (auto _ : state) {
    for (int r = 0; r < repeats; ++r) {
      ctsr::SsimResult s = ctsr::ssim(pred, target, 2.0);
      ctsr::PsnrResult q = ctsr::psnr(pred, target, 2.0);
      benchmark::DoNotOptimize(s.per_sample.raw_data());
      benchmark::DoNotOptimize(q.psnr.raw_data());
    }
    stream.synchronize();
  }
  const double calls = double(repeats) * double(state.iterations());
  state.counters["volumes/s"] = benchmark::Counter(double(shape[0]) * calls, benchmark::Counter::kIsRate);
  state.counters["GB/s"] =
      benchmark::Counter(2.0 * 2.0 * double(pred.nbytes()) * calls / 1e9, benchmark::Counter::kIsRate);
}

// A model's parameter list: `tensors` tensors, sizes cycling through a mix whose total is about
// `total` elements.
std::vector<int64_t> parameter_sizes(int64_t total, int tensors) {
  const double mix[] = {1.0, 0.002, 0.25, 0.002, 2.0, 0.5, 0.001, 0.75};  // relative sizes
  double sum = 0;
  for (int i = 0; i < tensors; ++i) sum += mix[i % 8];
  std::vector<int64_t> sizes;
  for (int i = 0; i < tensors; ++i) sizes.push_back(std::max<int64_t>(1, int64_t(double(total) * mix[i % 8] / sum)));
  return sizes;
}

struct Parameters {
  std::vector<Tensor> p, g, m, v;
  int64_t count = 0;
};

Parameters make_parameters(Device device, int64_t total, int tensors) {
  Parameters s;
  uint32_t salt = 10;
  for (int64_t n : parameter_sizes(total, tensors)) {
    s.p.push_back(filled({n}, -0.1f, 0.1f, salt++, device));
    s.g.push_back(filled({n}, -1e-3f, 1e-3f, salt++, device));
    s.m.push_back(Tensor::zeros({n}, ctsr::DType::float32, device));
    s.v.push_back(Tensor::zeros({n}, ctsr::DType::float32, device));
    s.count += n;
  }
  return s;
}

// Args: total parameters, tensors.
void run_adamw(benchmark::State& state, Device device) {
  if (skip_without_gpu(state, device)) return;
  Parameters s = make_parameters(device, state.range(0), int(state.range(1)));
  std::vector<Tensor*> p, m, v;
  std::vector<const Tensor*> g;
  for (size_t i = 0; i < s.p.size(); ++i) {
    p.push_back(&s.p[i]);
    g.push_back(&s.g[i]);
    m.push_back(&s.m[i]);
    v.push_back(&s.v[i]);
  }
  const ctsr::AdamWConfig config{};
  const int repeats = repeats_for(device);
  ctsr::Stream stream = ctsr::Stream::current(device);
  stream.synchronize();
  int64_t step = 0;
  for (auto _ : state) {
    for (int r = 0; r < repeats; ++r) ctsr::adamw_step(p, g, m, v, config, ++step);
    stream.synchronize();
  }
  state.counters["GB/s"] = benchmark::Counter(28.0 * double(s.count) * repeats * double(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
  state.counters["params"] = double(s.count);
}

void run_grad_norm(benchmark::State& state, Device device) {
  if (skip_without_gpu(state, device)) return;
  Parameters s = make_parameters(device, state.range(0), int(state.range(1)));
  std::vector<const Tensor*> g;
  for (const Tensor& t : s.g) g.push_back(&t);
  const int repeats = repeats_for(device);
  for (auto _ : state) {
    // Each call returns the norm to the host, so it synchronises by itself.
    for (int r = 0; r < repeats; ++r) benchmark::DoNotOptimize(ctsr::global_grad_norm(g));
  }
  state.counters["GB/s"] = benchmark::Counter(4.0 * double(s.count) * repeats * double(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}

void ssim_psnr_cpu(benchmark::State& s) { run_ssim_psnr(s, Device::cpu()); }
void ssim_psnr_cuda_on_cpu(benchmark::State& s) { run_ssim_psnr(s, Device::cuda_on_cpu()); }
void ssim_psnr_cuda(benchmark::State& s) { run_ssim_psnr(s, Device::cuda(0)); }
BENCHMARK(ssim_psnr_cpu)->Args({2, 4, 24, 24})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(ssim_psnr_cuda_on_cpu)->Args({2, 4, 24, 24})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(ssim_psnr_cuda)->Args({32, 200, 128, 128})->Unit(benchmark::kMillisecond)->UseRealTime();

void adamw_step_cpu(benchmark::State& s) { run_adamw(s, Device::cpu()); }
void adamw_step_cuda_on_cpu(benchmark::State& s) { run_adamw(s, Device::cuda_on_cpu()); }
void adamw_step_cuda(benchmark::State& s) { run_adamw(s, Device::cuda(0)); }
BENCHMARK(adamw_step_cpu)->Args({20000, 10})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(adamw_step_cuda_on_cpu)->Args({20000, 10})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(adamw_step_cuda)->Args({100000000, 200})->Unit(benchmark::kMillisecond)->UseRealTime();

void global_grad_norm_cpu(benchmark::State& s) { run_grad_norm(s, Device::cpu()); }
void global_grad_norm_cuda_on_cpu(benchmark::State& s) { run_grad_norm(s, Device::cuda_on_cpu()); }
void global_grad_norm_cuda(benchmark::State& s) { run_grad_norm(s, Device::cuda(0)); }
BENCHMARK(global_grad_norm_cpu)->Args({20000, 10})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(global_grad_norm_cuda_on_cpu)->Args({20000, 10})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(global_grad_norm_cuda)->Args({100000000, 200})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
