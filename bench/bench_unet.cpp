// One optimiser step of the diffusion UNet (model/unet.h), as training takes it:
//   zero the gradients; for each micro-batch: forward (dropout on, masks from Philox), MSE loss
//   to a target, its backward (dloss = 1 / micro-batches, so the gradients are the whole batch's
//   mean), the UNet's backward (no input gradient); the global gradient norm and clipping at 1.0
//   (clip_grad_norm computes the norm); adamw_step (lr 2e-4, betas 0.9 / 0.999, wd 0.01).
// Inputs and targets stay on the device; float32.
//
// Cases:
//   UNetTrainStep/cpu, UNetTrainStep/cuda_on_cpu   a tiny network (model_channels 16, channel_mult
//       [1, 2], 1 block, attention on level 1 with one head of 32, time_embed_dim 32, norm_groups
//       4), batch 2 as two micro-batches of 1 on an 8 x 5 x 4 x 4 latent: quick enough for the
//       test suite's smoke run (--benchmark_min_time=0.001)
//   UNetTrainStep/cuda_custom, UNetTrainStep/cuda_cudnn   registered only when a GPU is present:
//       the production network (the spec's defaults: 869.6 M parameters) at batch 32 as two
//       micro-batches of 16 on an 8 x 25 x 16 x 16 latent (16 input channels: the noisy latent and
//       the condition), TF32 allowed (as the PyTorch baseline's default), with each conv engine
//   UNetTrainStep/{cpu,cuda_on_cpu}_bf16, UNetTrainStep/cuda_custom_bf16   the same in mixed
//       precision (training.precision bf16: LayerOptions::compute bfloat16, tensor cores for the
//       convolutions, linears and attention; float32 weights, gradients and AdamW); counter bf16 1
// The PyTorch eager baseline of the same step: tools/pytorch/bench_unet_step.py (same
// configurations, one JSON line; --tiny for the cpu case; --dtype bf16 for autocast).
//
// Counters:
//   samples_per_s         batch / step time
//   peak_alloc_MiB        the device allocator's high-water mark over the timed steps
//                         (parameters, gradients and AdamW moments included)
//   model_TFLOP_per_step  bench/unet_cost.h: convolutions, linears and attention products,
//                         2 FLOPs per multiply-add, x3 for forward and backward (checked against
//                         a hand count and PyTorch's forward hooks in tests/test_unet_golden.cpp)
//   TFLOP/s, MFU          that count per second, and its fraction of the device's peak: the value
//                         of the environment variable CTSR_PEAK_TFLOPS when set (Google
//                         Benchmark's main takes no flags of ours), otherwise measured here as the
//                         best of 3 dense float32 GEMMs (8192^3 on a GPU, 512^3 on the host paths;
//                         bench_gemm.cpp's largest case, with the step's TF32 setting), shown as
//                         peak_TFLOP/s
//   parameters, param_MiB, grad_MiB, adam_MiB   the model's size and its float32 training state
//
// Not an op family (kernels/*.cu): a whole model's training step. See bench/README.md.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "bench/unet_cost.h"
#include "kernels/conv3d.h"
#include "kernels/loss.h"
#include "kernels/optimizer.h"
#include "model/unet.h"
#include "runtime/allocator.h"
#include "runtime/gemm.h"
#include "runtime/stream.h"

namespace {

using ctsr::Device;
using ctsr::DeviceKind;
using ctsr::Tensor;

struct StepShape {
  ctsr::UNetConfig config;
  int64_t batch = 0, micro_batches = 0, depth = 0, height = 0, width = 0;
  ctsr::DType compute = ctsr::DType::float32;  // training.precision: float32, or bfloat16 (mixed)
};

StepShape in_bf16(StepShape s) {
  s.compute = ctsr::DType::bfloat16;
  return s;
}

// bench_unet_step.py --tiny.
StepShape tiny_step() {
  StepShape s;
  s.config.model_channels = 16;
  s.config.channel_mult = {1, 2};
  s.config.num_blocks = 1;
  s.config.attention_levels = {false, true};
  s.config.head_channels = 32;
  s.config.time_embed_dim = 32;
  s.config.norm_groups = 4;
  s.batch = 2, s.micro_batches = 2, s.depth = 5, s.height = 4, s.width = 4;
  return s;
}

StepShape production_step() {
  StepShape s;  // the spec's defaults
  s.batch = 32, s.micro_batches = 2, s.depth = 25, s.height = 16, s.width = 16;
  return s;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// See the file comment: CTSR_PEAK_TFLOPS, or the best of 3 dense float32 GEMMs, per device and
// TF32 setting, measured once per process.
double peak_tflops(Device device) {
  if (const char* text = std::getenv("CTSR_PEAK_TFLOPS")) {
    char* end = nullptr;
    const double value = std::strtod(text, &end);
    CTSR_CHECK(end != text && *end == '\0' && value > 0, "CTSR_PEAK_TFLOPS is '", text,
               "'; expected the device's peak in TFLOP/s, a positive number");
    return value;
  }
  static std::map<std::pair<std::string, bool>, double> measured;
  const auto key = std::make_pair(device.str(), ctsr::allow_tf32());
  if (auto it = measured.find(key); it != measured.end()) return it->second;
  const int64_t n = device.kind == DeviceKind::cuda ? 8192 : 512;
  Tensor a = ctsr::bench::filled({n, n}, -1.0f, 1.0f, 1, device);
  Tensor b = ctsr::bench::filled({n, n}, -1.0f, 1.0f, 2, device);
  Tensor c = Tensor::zeros({n, n}, ctsr::DType::float32, device);
  ctsr::GemmArgs g;
  g.m = g.n = g.k = n;
  g.a = a.raw_data(), g.lda = n;
  g.b = b.raw_data(), g.ldb = n;
  g.c = c.raw_data(), g.ldc = n;
  ctsr::Stream stream = ctsr::Stream::current(device);
  ctsr::gemm(device, g);  // handles, workspaces, clocks
  stream.synchronize();
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    const auto start = std::chrono::steady_clock::now();
    ctsr::gemm(device, g);
    stream.synchronize();
    best = std::max(best, 2.0 * double(n) * double(n) * double(n) / seconds_since(start) / 1e12);
  }
  return measured[key] = best;
}

// The model, its optimiser state and the step's inputs, on one device.
class TrainStep {
 public:
  TrainStep(const StepShape& shape, Device device) : shape_(shape), net_(shape.config, options(device, shape)) {
    for (ctsr::Parameter* p : net_.parameters()) {
      values_.push_back(&p->value);
      grads_.push_back(&p->grad);
      exp_avg_.push_back(Tensor::zeros(p->value.shape(), p->value.dtype(), device));
      exp_avg_sq_.push_back(Tensor::zeros(p->value.shape(), p->value.dtype(), device));
    }
    const int64_t micro = shape.batch / shape.micro_batches;
    const ctsr::UNetConfig& c = shape.config;
    for (int64_t m = 0; m < shape.micro_batches; ++m) {
      x_.push_back(ctsr::bench::filled({micro, shape.depth, shape.height, shape.width, c.in_channels}, -1.0f, 1.0f,
                                       uint32_t(10 + m), device));
      target_.push_back(ctsr::bench::filled({micro, shape.depth, shape.height, shape.width, c.out_channels}, -1.5f,
                                            1.5f, uint32_t(20 + m), device));
      std::vector<int64_t> t(static_cast<size_t>(micro));
      for (int64_t i = 0; i < micro; ++i) t[size_t(i)] = (m * micro + i) * 617 % 1000;
      timesteps_.push_back(Tensor::from_vector(t, {micro}, device));
    }
    dloss_ = Tensor::from_vector(std::vector<float>{1.0f / float(shape.micro_batches)}, {1}, device);
  }

  void run() {
    ++step_;
    net_.zero_grad();
    const int64_t micro = shape_.batch / shape_.micro_batches;
    for (int64_t m = 0; m < shape_.micro_batches; ++m) {
      net_.set_dropout_rng(/*seed=*/1, uint64_t(step_), m * micro);
      Tensor y = net_.forward(x_[size_t(m)], timesteps_[size_t(m)]);
      loss_ = ctsr::mse_loss(y, target_[size_t(m)]);
      net_.backward(ctsr::mse_loss_backward(y, target_[size_t(m)], dloss_).dpred, /*input_grad=*/false);
    }
    ctsr::clip_grad_norm(grads_, 1.0);
    ctsr::adamw_step(values_, {grads_.begin(), grads_.end()}, pointers(exp_avg_), pointers(exp_avg_sq_),
                     ctsr::AdamWConfig{}, step_);
  }

  ctsr::UNet3D& net() { return net_; }
  const Tensor& loss() const { return loss_; }

 private:
  static ctsr::LayerOptions options(Device device, const StepShape& shape) {
    ctsr::LayerOptions o;
    o.device = device;
    o.seed = 3;
    o.compute = shape.compute;
    return o;
  }
  static std::vector<Tensor*> pointers(std::vector<Tensor>& tensors) {
    std::vector<Tensor*> out;
    for (Tensor& t : tensors) out.push_back(&t);
    return out;
  }

  StepShape shape_;
  ctsr::UNet3D net_;
  std::vector<Tensor*> values_, grads_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
  std::vector<Tensor> x_, target_, timesteps_;
  Tensor dloss_, loss_;
  int64_t step_ = 0;
};

void unet_train_step(benchmark::State& state, Device device, const StepShape& shape, ctsr::ConvEngine engine) {
  if (ctsr::bench::skip_without_gpu(state, device)) return;
  ctsr::ScopedConvEngine conv_engine(engine);
  const bool tf32_before = ctsr::allow_tf32();
  ctsr::set_allow_tf32(device.kind == DeviceKind::cuda);  // as PyTorch's baseline; no effect off the GPU
  const ctsr::bench::UNetCost cost =
      ctsr::bench::unet_cost(shape.config, shape.batch, shape.depth, shape.height, shape.width);
  const double peak = peak_tflops(device);
  {
    TrainStep step(shape, device);
    const int64_t parameters = step.net().parameter_count();
    if (parameters != cost.parameters) {
      state.SkipWithError(("bench/unet_cost.h counts " + std::to_string(cost.parameters) + " parameters, the model has " +
                           std::to_string(parameters))
                              .c_str());
    } else {
      ctsr::Stream stream = ctsr::Stream::current(device);
      step.run();  // warm the allocator's cache, cuBLAS/cuDNN handles and algorithm choices
      stream.synchronize();
      ctsr::reset_peak_memory(device);
      const auto start = std::chrono::steady_clock::now();
      for (auto _ : state) {
        step.run();
        stream.synchronize();
      }
      const double seconds_per_step = seconds_since(start) / double(std::max<int64_t>(1, state.iterations()));
      benchmark::DoNotOptimize(step.loss().raw_data());
      const double param_mib = double(parameters) * 4.0 / (1 << 20);
      const double flops = cost.train_step_flops();
      state.counters["samples_per_s"] = double(shape.batch) / seconds_per_step;
      state.counters["peak_alloc_MiB"] = double(ctsr::allocator_stats(device).peak_allocated) / (1 << 20);
      state.counters["model_TFLOP_per_step"] = flops / 1e12;
      state.counters["TFLOP/s"] = flops / seconds_per_step / 1e12;
      state.counters["MFU"] = flops / seconds_per_step / (peak * 1e12);
      state.counters["peak_TFLOP/s"] = peak;
      state.counters["parameters"] = double(parameters);
      state.counters["param_MiB"] = param_mib;
      state.counters["grad_MiB"] = param_mib;
      state.counters["adam_MiB"] = 2 * param_mib;
      state.counters["bf16"] = shape.compute == ctsr::DType::bfloat16 ? 1 : 0;
    }
  }
  ctsr::set_allow_tf32(tf32_before);
}

const bool registered = [] {
  auto add = [](const char* name, Device device, const StepShape& shape, ctsr::ConvEngine engine) {
    benchmark::RegisterBenchmark(name, unet_train_step, device, shape, engine)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  };
  add("UNetTrainStep/cpu", Device::cpu(), tiny_step(), ctsr::ConvEngine::custom);
  add("UNetTrainStep/cuda_on_cpu", Device::cuda_on_cpu(), tiny_step(), ctsr::ConvEngine::custom);
  add("UNetTrainStep/cpu_bf16", Device::cpu(), in_bf16(tiny_step()), ctsr::ConvEngine::custom);
  add("UNetTrainStep/cuda_on_cpu_bf16", Device::cuda_on_cpu(), in_bf16(tiny_step()), ctsr::ConvEngine::custom);
  if (ctsr::cuda_available()) {
    add("UNetTrainStep/cuda_custom", Device::cuda(0), production_step(), ctsr::ConvEngine::custom);
    add("UNetTrainStep/cuda_cudnn", Device::cuda(0), production_step(), ctsr::ConvEngine::cudnn);
    add("UNetTrainStep/cuda_custom_bf16", Device::cuda(0), in_bf16(production_step()), ctsr::ConvEngine::custom);
  }
  return true;
}();

}  // namespace
