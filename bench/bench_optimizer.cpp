// The optimizer family (kernels/optimizer.h) on every device this build has, in GB/s:
//   adamw_step        one AdamW step over a model's worth of float32 parameters: p, g, m, v read
//                     and p, m, v written, 28 bytes per parameter
//   global_grad_norm  the sum of squares over the same gradients, 4 bytes per parameter
//   clip_grad_norm    the norm, then every gradient scaled (max_norm just under the current
//                     norm, so every call scales): 4 + 8 = 12 bytes per parameter
//   ema_update        the weights' EMA (ema = decay ema + (1 - decay) p): ema and p read, ema
//                     written, 12 bytes per parameter
// The GPU cases are ~100M parameters in 200 tensors of mixed sizes (a UNet has a few hundred:
// large conv weights and many small norms and biases), so they exercise the multi-tensor
// launches, not one big array. The cpu and cuda_on_cpu cases run 20K parameters in 10 tensors
// so that `--benchmark_filter=cpu` stays quick. Args: total parameters, tensors.
// GPU cases enqueue bench::kGpuRepeats calls per iteration and synchronise once (throughput, not launch
// latency); without a GPU they report "no GPU". global_grad_norm and clip_grad_norm return the
// norm to the host, so each of their calls synchronises by itself.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <vector>

#include "bench/bench_util.h"
#include "kernels/optimizer.h"

namespace {

using namespace ctsr::bench;

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

// Parameters, gradients and the two AdamW moments, as lists of tensors and of pointers to them.
struct Parameters {
  std::vector<Tensor> p, g, m, v;
  std::vector<Tensor*> p_ptr, m_ptr, v_ptr, g_mutable;
  std::vector<const Tensor*> g_ptr, p_const;
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
  for (size_t i = 0; i < s.p.size(); ++i) {
    s.p_ptr.push_back(&s.p[i]);
    s.p_const.push_back(&s.p[i]);
    s.g_ptr.push_back(&s.g[i]);
    s.g_mutable.push_back(&s.g[i]);
    s.m_ptr.push_back(&s.m[i]);
    s.v_ptr.push_back(&s.v[i]);
  }
  return s;
}

// clip_grad_norm's max_norm is this fraction of the norm it meets, so every call scales, and the
// gradients shrink slowly enough never to reach denormals however many calls run.
constexpr double kClipShrink = 0.9999;

enum class Op { adamw_step, global_grad_norm, clip_grad_norm, ema_update };

void run_optimizer(benchmark::State& state, Device device, Op op) {
  Parameters s = make_parameters(device, state.range(0), int(state.range(1)));
  const ctsr::AdamWConfig config{};
  int64_t step = 0;
  double bytes_per_parameter = 0;
  int repeats = 0;
  switch (op) {
    case Op::adamw_step:
      bytes_per_parameter = 28;
      repeats = time_calls(state, device, [&] { ctsr::adamw_step(s.p_ptr, s.g_ptr, s.m_ptr, s.v_ptr, config, ++step); });
      break;
    case Op::global_grad_norm:
      bytes_per_parameter = 4;
      repeats = time_calls(state, device, [&] { benchmark::DoNotOptimize(ctsr::global_grad_norm(s.g_ptr)); });
      break;
    case Op::clip_grad_norm: {
      bytes_per_parameter = 12;
      double max_norm = kClipShrink * ctsr::global_grad_norm(s.g_ptr);
      repeats = time_calls(state, device, [&] { max_norm = kClipShrink * ctsr::clip_grad_norm(s.g_mutable, max_norm); });
      break;
    }
    case Op::ema_update:
      bytes_per_parameter = 12;
      // The moment m serves as the EMA copy of the weights.
      repeats = time_calls(state, device, [&] { ctsr::ema_update(s.m_ptr, s.p_const, 0.999); });
      break;
  }
  set_bandwidth(state, bytes_per_parameter * double(s.count), repeats);
  if (op == Op::adamw_step) state.counters["params"] = double(s.count);
}

CTSR_BENCH_CASES {
  const std::pair<Op, const char*> ops[] = {{Op::adamw_step, "adamw_step"},
                                           {Op::global_grad_norm, "global_grad_norm"},
                                           {Op::clip_grad_norm, "clip_grad_norm"},
                                           {Op::ema_update, "ema_update"}};
  for (const auto& [op, name] : ops) {
    on_devices(name, {{20000, 10}}, {{20000, 10}}, {{100000000, 200}},
               [op = op](benchmark::State& s, Device d) { run_optimizer(s, d, op); }, benchmark::kMillisecond);
  }
}

}  // namespace
