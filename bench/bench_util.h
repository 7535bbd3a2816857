// Helpers shared by the ctsr_bench programs.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "runtime/device.h"
#include "runtime/tensor.h"

namespace ctsr::bench {

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

// Marks a GPU case skipped ("no GPU") when none is present; returns whether it did.
inline bool skip_without_gpu(benchmark::State& state, Device device) {
  if (device.kind == DeviceKind::cuda && !cuda_available()) {
    state.SkipWithError("no GPU");
    return true;
  }
  return false;
}

}  // namespace ctsr::bench
