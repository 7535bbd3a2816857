// ctsr_infer: super-resolve one degraded CT volume with a trained ctsr_train checkpoint.
//
//   ctsr_infer --model CKPT --vqae W --input LD.nii.gz --output SR.nii.gz
//              [--steps 50] [--sampler ddim|ddpm] [--eta 0] [--seed S] [--weights ema|model]
//              [--window -200,200] [--patch-size N] [--slab N] [--num-groups N] [--device ...]
//
// window (HU -> [-1, 1]), encode with the VQ-AE (in patches, as the cache was made), normalise,
// sample the HD latent conditioned on the LD latent, denormalise, decode, back to HU, and write
// with the input's geometry. The defaults of the window, the patch size and the sampler come from
// the checkpoint (what the run trained on and its configuration). A volume larger than the
// training volumes along D is decoded in axial slabs of the training depth (the sliding decode),
// which bounds memory. NIfTI outputs hold HU; a .npy output keeps the [-1, 1] scale.
#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <optional>
#include <string>

#include "kernels/activation.h"
#include "kernels/resample.h"
#include "model/diffusion.h"
#include "model/unet.h"
#include "model/vqae.h"
#include "runtime/error.h"
#include "runtime/formats/volume.h"
#include "tools/lib/cli.h"
#include "tools/lib/latent_io.h"
#include "train/checkpoint.h"
#include "train/config.h"

int main(int argc, char** argv) {
  CLI::App app{"Super-resolve a low-dose / low-resolution CT volume with a trained ctsr_train checkpoint",
               "ctsr_infer"};
  std::string model_path, vqae_path, input, output, sampler_text, weights = "ema", window_text, device_text = "auto";
  std::optional<int64_t> steps, patch, slab, num_groups;
  std::optional<double> eta;
  uint64_t seed = 0;
  app.add_option("--model", model_path, "ctsr_train checkpoint (OUTPUT/checkpoints/step_*.safetensors)")->required();
  app.add_option("--vqae", vqae_path, "the VQ-AE the training cache was made with (.ckpt or .safetensors)")->required();
  app.add_option("--input", input, "degraded volume: .nii, .nii.gz (HU) or .npy ([D, H, W] on [-1, 1])")->required();
  app.add_option("--output", output, "result: .nii, .nii.gz (HU, the input's geometry) or .npy")->required();
  app.add_option("--steps", steps, "sampling steps (default: the checkpoint's diffusion.sampling_steps)");
  app.add_option("--sampler", sampler_text, "ddim or ddpm (default: the checkpoint's diffusion.sampler)");
  app.add_option("--eta", eta, "DDIM eta (default: the checkpoint's diffusion.ddim_eta)");
  app.add_option("--seed", seed, "noise seed")->capture_default_str();
  app.add_option("--weights", weights, "ema (the averaged weights validation used) or model")->capture_default_str();
  app.add_option("--window", window_text, "HU window lo,hi (default: the one the cache was made with)");
  app.add_option("--patch-size", patch, "VQ-AE encoding patch (default: the cache's; 0: the whole volume)");
  app.add_option("--slab", slab, "latent slices per decoding slab (default: the training depth when the input is deeper)");
  app.add_option("--num-groups", num_groups, "VQ-AE GroupNorm groups (default: the weights file's record)");
  app.add_option("--device", device_text, "auto, cpu, cuda, cuda:N or cuda_on_cpu")->capture_default_str();

  return ctsr::tools::run_program(app, argc, argv, [&] {
    using namespace ctsr;
    const auto start = std::chrono::steady_clock::now();
    // Everything checkable is checked before the volume is read or a model is built.
    io::volume_format(output);
    CTSR_CHECK(weights == "ema" || weights == "model", "--weights ", weights, ": expected ema or model");
    const Device device = tools::device_from_flag(device_text);
    const train::CheckpointInfo info = train::read_checkpoint_info(model_path);
    const train::TrainConfig config = train::train_config_from_yaml(info.config_yaml, model_path);
    DiffusionConfig diffusion = config.diffusion;
    if (steps) diffusion.sampling_steps = *steps;
    if (!sampler_text.empty()) diffusion.sampler = parse_sampler_kind(sampler_text);
    if (eta) diffusion.ddim_eta = *eta;
    validate_diffusion_config(diffusion);
    auto extra = [&](const char* key) {
      auto it = info.extra.find(key);
      return it == info.extra.end() ? std::string() : it->second;
    };
    io::HuWindow window;
    if (!window_text.empty()) window = io::parse_hu_window(window_text);
    else if (!extra("cache.hu_window").empty()) window = io::parse_hu_window(extra("cache.hu_window"));
    int64_t patch_size = 64;
    if (patch) patch_size = *patch;
    else if (!extra("cache.patch_size").empty()) patch_size = std::stoll(extra("cache.patch_size"));
    CTSR_CHECK(patch_size >= 0, "--patch-size ", patch_size, ": expected 0 (whole volume) or a positive size");

    std::string warning;
    auto vqae = Vqae::load(vqae_path, num_groups, device, &warning);
    if (!warning.empty()) std::cerr << "ctsr_infer: warning: " << warning << "\n";
    CTSR_CHECK(vqae->config().embedding_dim == config.model.out_channels, "--vqae ", vqae_path, " has ",
               vqae->config().embedding_dim, " latent channels but the model in ", model_path, " denoises ",
               config.model.out_channels);
    if (!extra("cache.latent_min").empty()) {
      const double lo = std::stod(extra("cache.latent_min")), hi = std::stod(extra("cache.latent_max"));
      CTSR_CHECK(std::abs(lo - vqae->code_min()) <= 1e-6 * (1 + std::abs(lo)) &&
                     std::abs(hi - vqae->code_max()) <= 1e-6 * (1 + std::abs(hi)),
                 "--vqae ", vqae_path, " has codebook bounds [", vqae->code_min(), ", ", vqae->code_max(), "] but ",
                 model_path, " was trained on latents normalised with [", lo, ", ", hi,
                 "]: use the VQ-AE its cache was made with (", extra("cache.weights"), ")");
    }
    LayerOptions layer;
    layer.device = device;
    UNet3D net(config.model, layer);
    net.train(false);
    train::load_weights(model_path, weights, net.parameters());

    const io::Volume volume = io::read_volume_unit(input, window);
    const Tensor x =
        volume.data.reshape({1, volume.data.dim(0), volume.data.dim(1), volume.data.dim(2), 1}).to(device);
    NoGradGuard no_grad;
    Tensor z;
    try {
      z = patch_size > 0 ? vqae->patch_encode(x, patch_size) : vqae->encode(x);
    } catch (const Error& e) {
      CTSR_FAIL(input, ": ", e.what());
    }
    const Tensor ld = vqae->normalize_latent(z);
    const int64_t n = ld.dim(0);
    Denoiser denoiser = [&](const Tensor& x_t, int64_t t) {
      return net.forward(concat_channels(x_t, ld), Tensor::from_vector(std::vector<int64_t>(size_t(n), t), {n}, device));
    };
    const NoiseSchedule schedule(diffusion);
    Tensor sr = sample(schedule, diffusion, ld.shape(), ld.dtype(), device, denoiser, seed, {0});

    // Deeper than what the model trained on: decode in slabs of the training depth.
    int64_t decode_slab = slab.value_or(0);
    if (!slab && !extra("cache.latent_shape").empty()) {
      const std::vector<double> trained =
          tools::parse_number_list(extra("cache.latent_shape").substr(1, extra("cache.latent_shape").size() - 2),
                                   "cache.latent_shape");
      if (trained.size() == 4 && sr.dim(1) > int64_t(trained[1])) decode_slab = int64_t(trained[1]);
    }
    const Tensor latent = vqae->denormalize_latent(sr);
    Tensor y = decode_slab > 0 ? vqae->decode_sliding(latent, decode_slab) : vqae->decode(latent);
    y = clamp(y, -1.0, 1.0);
    io::Volume result;
    result.geometry = volume.geometry;
    result.data = y.to(Device::cpu()).reshape({y.dim(1), y.dim(2), y.dim(3)});
    if (io::volume_format(output) != io::VolumeFormat::npy) result.data = io::unit_to_hu(result.data, window);
    io::write_volume(output, result);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cerr << "ctsr_infer: " << input << " " << volume.data.shape().str() << " -> latent " << ld.shape().str()
              << ", " << diffusion.sampling_steps << " " << sampler_kind_name(diffusion.sampler) << " steps"
              << (decode_slab > 0 ? ", sliding decode in slabs of " + std::to_string(decode_slab) : std::string())
              << " -> " << output << " in " << tools::format_seconds(seconds) << "\n";
  });
}
