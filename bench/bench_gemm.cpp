// GEMM throughput on every device this build has: OpenBLAS on cpu (and on cuda_on_cpu, which
// takes the column-major route cuBLAS gets), cuBLAS on a GPU.
//
// Not an op family (kernels/*.cu): the runtime's GEMM (runtime/gemm.h), which kernels such as
// linear call. See bench/README.md.
#include <benchmark/benchmark.h>

#include "runtime/gemm.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"

namespace {

void run_gemm(benchmark::State& state, ctsr::Device device) {
  if (device.kind == ctsr::DeviceKind::cuda && !ctsr::cuda_available()) {
    state.SkipWithError("no GPU");
    return;
  }
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  ctsr::Tensor a = ctsr::Tensor::zeros({m, k}, ctsr::DType::float32, device);
  ctsr::Tensor b = ctsr::Tensor::zeros({k, n}, ctsr::DType::float32, device);
  ctsr::Tensor c = ctsr::Tensor::zeros({m, n}, ctsr::DType::float32, device);
  ctsr::GemmArgs g;
  g.m = m, g.n = n, g.k = k;
  g.a = a.raw_data(), g.lda = k;
  g.b = b.raw_data(), g.ldb = n;
  g.c = c.raw_data(), g.ldc = n;
  ctsr::Stream stream = ctsr::Stream::current(device);
  for (auto _ : state) {
    ctsr::gemm(device, g);
    stream.synchronize();
  }
  state.counters["TFLOP/s"] = benchmark::Counter(2.0 * m * n * k * state.iterations() / 1e12, benchmark::Counter::kIsRate);
}

void gemm_cpu(benchmark::State& s) { run_gemm(s, ctsr::Device::cpu()); }
void gemm_cuda(benchmark::State& s) { run_gemm(s, ctsr::Device::cuda(0)); }

// The UNet's 1x1 projections: tokens x channels; 6400 tokens at 512 channels is attention's QKV.
BENCHMARK(gemm_cpu)->Args({256, 256, 256})->Args({6400, 1536, 512})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(gemm_cuda)->Args({256, 256, 256})->Args({6400, 1536, 512})->Args({8192, 8192, 8192})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
