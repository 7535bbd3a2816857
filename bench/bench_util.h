// The one harness of ctsr_bench, shared by every bench_*.cpp: deterministic inputs, the timing
// loop, the throughput counters, and the registration of a case on every device of the build.
//
// A case is registered by on_devices(name, cpu_args, cuda_on_cpu_args, cuda_args, body) as
// name_cpu, name_cuda_on_cpu and name_cuda (each a list of Args, run in that order), so that
// `--benchmark_filter='cpu|cuda_on_cpu'` selects the host paths and `--benchmark_filter=cuda`
// the GPU. The host paths run small sizes (a smoke pass with --benchmark_min_time=0.001 stays
// quick on 2 cores; cuda_on_cpu figures measure the executor, not a GPU), the GPU production
// sizes. Without a GPU the cuda cases report "no GPU"; on a GPU a ctsr::Error (e.g. cuDNN
// refusing a shape) skips that case with its message, while on the host paths it propagates,
// so the smoke pass fails loudly.
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "kernels/conv3d.h"
#include "kernels/copy.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"

namespace ctsr::bench {

// The names every bench file uses, brought in by its `using namespace ctsr::bench`.
using ::ctsr::ConvEngine;
using ::ctsr::Device;
using ::ctsr::DType;
using ::ctsr::Shape;
using ::ctsr::Tensor;

// GPU cases enqueue this many calls per benchmark iteration and synchronise once, so the figure
// is throughput rather than launch latency; host paths run one call per iteration.
constexpr int kGpuRepeats = 10;
inline int repeats_for(Device device, int gpu_repeats = kGpuRepeats) {
  return device.kind == DeviceKind::cuda ? gpu_repeats : 1;
}

// Deterministic, varied values in [lo, hi) from an integer generator (no RNG needed for timing).
inline Tensor filled(const Shape& shape, float lo, float hi, uint32_t salt, Device device) {
  std::vector<float> v(static_cast<size_t>(shape.numel()));
  uint32_t h = 2166136261u ^ salt;
  for (float& f : v) {
    h = h * 1664525u + 1013904223u;
    f = lo + (hi - lo) * float(h >> 8) * 5.9604645e-8f;
  }
  return Tensor::from_vector(v, shape, device);
}

// The same values in `dtype` (bfloat16: rounded to nearest, on the device).
inline Tensor filled_as(DType dtype, const Shape& shape, float lo, float hi, uint32_t salt, Device device) {
  Tensor t = filled(shape, lo, hi, salt, device);
  return dtype == DType::float32 ? t : ::ctsr::cast(t, dtype);
}

// Marks a GPU case skipped ("no GPU") when none is present; returns whether it did.
inline bool skip_without_gpu(benchmark::State& state, Device device) {
  if (device.kind == DeviceKind::cuda && !cuda_available()) {
    state.SkipWithError("no GPU");
    return true;
  }
  return false;
}

// The shape given by `dims` Args from state.range(first) on (most cases: [N, D, H, W, C]).
inline Shape shape_from_args(const benchmark::State& state, int first = 0, int dims = 5) {
  std::vector<int64_t> sizes;
  for (int i = 0; i < dims; ++i) sizes.push_back(state.range(first + i));
  return Shape(sizes);
}

// `op` and the first `count` Args, e.g. "forward,32,25,16,16": a key naming one op at one shape.
inline std::string args_key(const char* op, const benchmark::State& state, int count) {
  std::ostringstream key;
  key << op;
  for (int i = 0; i < count; ++i) key << ',' << state.range(i);
  return key.str();
}

// The timing loop: synchronise, then per iteration repeats_for(device, gpu_repeats) calls of
// `call` and one synchronise of the device's current stream. Returns the calls per iteration.
template <class Call>
int time_calls(benchmark::State& state, Device device, Call&& call, int gpu_repeats = kGpuRepeats) {
  const int repeats = repeats_for(device, gpu_repeats);
  Stream stream = Stream::current(device);
  stream.synchronize();
  for (auto _ : state) {
    for (int r = 0; r < repeats; ++r) call();
    stream.synchronize();
  }
  return repeats;
}

// Rates from a per-call figure, `repeats` calls per iteration: "GB/s" (1e9 bytes) and
// "TFLOP/s" (1e12 FLOPs).
inline void set_bandwidth(benchmark::State& state, double bytes_per_call, int repeats) {
  state.counters["GB/s"] =
      benchmark::Counter(bytes_per_call * repeats * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}
inline void set_flop_rate(benchmark::State& state, double flops_per_call, int repeats) {
  state.counters["TFLOP/s"] =
      benchmark::Counter(flops_per_call * repeats * double(state.iterations()) / 1e12, benchmark::Counter::kIsRate);
}

// One case timed against another of the same op and shape in this process (the conv engines:
// cuDNN the baseline, the custom engine compared with it). time_calls after one warm-up call
// (handles, algorithm choice, the allocator's first blocks), with TFLOP/s and GFLOP/call; on a
// GPU a baseline case records its rate under `key`, and a later case with that key reports its
// rate over the baseline's as `ratio_name` (only when the baseline ran, i.e. was neither
// filtered out nor skipped). The rates come from our own clock around the loop, the span that
// UseRealTime measures.
struct BaselineRates {
  std::map<std::string, double> rates;
  std::mutex mutex;
};
inline BaselineRates& baseline_rates() {  // one for the whole program, whatever the Call type
  static BaselineRates baselines;
  return baselines;
}

template <class Call>
void time_against_baseline(benchmark::State& state, Device device, double flops_per_call, int gpu_repeats,
                           const std::string& key, bool is_baseline, const char* ratio_name, Call&& call) {
  call();
  Stream::current(device).synchronize();  // the warm-up is not timed
  const auto start = std::chrono::steady_clock::now();
  const int repeats = time_calls(state, device, call, gpu_repeats);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  set_flop_rate(state, flops_per_call, repeats);
  state.counters["GFLOP/call"] = flops_per_call / 1e9;
  if (device.kind != DeviceKind::cuda || seconds <= 0) return;
  const double rate = flops_per_call * repeats * double(state.iterations()) / seconds;
  BaselineRates& baselines = baseline_rates();
  std::lock_guard<std::mutex> lock(baselines.mutex);
  if (is_baseline) {
    baselines.rates[key] = rate;
  } else if (auto it = baselines.rates.find(key); it != baselines.rates.end()) {
    state.counters[ratio_name] = rate / it->second;
  }
}

// The Args of one case's benchmarks: one vector per Args line.
using ArgsList = std::vector<std::vector<int64_t>>;

// Registers `name` on `device` for each Args of `args`, calling body(state, device): a GPU case
// skips without a GPU, and skips with the message of a ctsr::Error it throws.
template <class Body>
void register_case(const std::string& name, Device device, const ArgsList& args, Body body, benchmark::TimeUnit unit) {
  benchmark::internal::Benchmark* b =
      benchmark::RegisterBenchmark(name.c_str(), [body, device](benchmark::State& state) {
        if (skip_without_gpu(state, device)) return;
        if (device.kind != DeviceKind::cuda) return body(state, device);
        try {
          body(state, device);
        } catch (const Error& e) {  // reported; the other cases still run
          state.SkipWithError(e.what());
        }
      });
  for (const std::vector<int64_t>& a : args) b->Args(a);
  b->Unit(unit)->UseRealTime();
}

// Registers `name`_cpu, `name`_cuda_on_cpu and `name`_cuda (see the top of this file), each
// calling body(state, device) for its Args. Host cases report milliseconds, GPU cases gpu_unit.
// Call it during static initialisation (CTSR_BENCH_CASES below, as BENCHMARK does), so the
// cases are registered before main runs them.
template <class Body>
void on_devices(const std::string& name, const ArgsList& cpu_args, const ArgsList& cuda_on_cpu_args,
                const ArgsList& cuda_args, Body body, benchmark::TimeUnit gpu_unit = benchmark::kMicrosecond) {
  register_case(name + "_cpu", Device::cpu(), cpu_args, body, benchmark::kMillisecond);
  register_case(name + "_cuda_on_cpu", Device::cuda_on_cpu(), cuda_on_cpu_args, body, benchmark::kMillisecond);
  register_case(name + "_cuda", Device::cuda(0), cuda_args, body, gpu_unit);
}

// The convolution families' cases (bench_conv3d, bench_conv_transpose3d), once per engine:
// name_cpu and name_cuda_on_cpu (the custom engine, host_args), then name_cuda_cudnn and
// name_cuda_custom (gpu_args, in milliseconds), each calling body(state, device, engine) under
// that engine. The cuDNN case is registered (and so run) first, for the custom one's vs_cudnn
// (time_against_baseline).
template <class Body>
void on_conv_engines(const std::string& name, const ArgsList& host_args, const ArgsList& gpu_args, Body body) {
  auto under = [body](ConvEngine engine) {
    return [body, engine](benchmark::State& state, Device device) {
      const ScopedConvEngine scoped(engine);
      body(state, device, engine);
    };
  };
  const benchmark::TimeUnit ms = benchmark::kMillisecond;
  register_case(name + "_cpu", Device::cpu(), host_args, under(ConvEngine::custom), ms);
  register_case(name + "_cuda_on_cpu", Device::cuda_on_cpu(), host_args, under(ConvEngine::custom), ms);
  register_case(name + "_cuda_cudnn", Device::cuda(0), gpu_args, under(ConvEngine::cudnn), ms);
  register_case(name + "_cuda_custom", Device::cuda(0), gpu_args, under(ConvEngine::custom), ms);
}

}  // namespace ctsr::bench

// Registers cases at static initialisation, as BENCHMARK does:
//   CTSR_BENCH_CASES { ctsr::bench::on_devices(...); ... }
#define CTSR_BENCH_CASES CTSR_BENCH_CASES_AT(__LINE__)
#define CTSR_BENCH_CASES_AT(line) CTSR_BENCH_CASES_AT_LINE(line)
#define CTSR_BENCH_CASES_AT_LINE(line)                                                           \
  void ctsr_bench_cases_##line();                                                                \
  [[maybe_unused]] const bool ctsr_bench_cases_registered_##line = (ctsr_bench_cases_##line(), true); \
  void ctsr_bench_cases_##line()
