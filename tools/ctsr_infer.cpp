// ctsr_infer: super-resolve one degraded CT volume with a trained ctsr_train checkpoint.
//
//   ctsr_infer --model CKPT --vqae W --input LD.nii.gz --output SR.nii.gz
//              [--steps 50] [--sampler ddim|ddpm] [--eta 0] [--seed S] [--weights ema|model]
//              [--window -200,200] [--patch-size N] [--slab N] [--num-groups N] [--refiner W] [--device ...]
//
// window (HU -> [-1, 1]), encode with the VQ-AE (in patches, as the cache was made), normalise,
// sample the HD latent conditioned on the LD latent, denormalise, decode, back to HU, and write
// with the input's geometry. The defaults of the window, the patch size and the sampler come from
// the checkpoint (what the run trained on and its configuration). A volume larger than the
// training volumes along D is decoded in axial slabs of the training depth (the sliding decode),
// which bounds memory. With --refiner (a two-input RED-CNN, ctsr_train_redcnn with model.in_channels
// 2), the decoded volume and the input go through it, slice by slice, and that is the result.
// NIfTI outputs hold HU; a .npy output keeps the [-1, 1] scale.
#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <optional>
#include <string>

#include "runtime/error.h"
#include "runtime/formats/volume.h"
#include "tools/common/cli.h"
#include "train/run_support.h"
#include "train/inference.h"

int main(int argc, char** argv) {
  CLI::App app{"Super-resolve a low-dose / low-resolution CT volume with a trained ctsr_train checkpoint",
               "ctsr_infer"};
  std::string model_path, vqae_path, input, output, sampler_text, weights = "ema", window_text, refiner, device_text = "auto";
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
  app.add_option("--refiner", refiner, "refiner weights (a two-input RED-CNN): the decoded result and the input "
                                      "through it (default: none, the latent path's result)");
  app.add_option("--device", device_text, "auto, cpu, cuda, cuda:N or cuda_on_cpu")->capture_default_str();

  return ctsr::tools::run_program(app, argc, argv, [&] {
    using namespace ctsr;
    const auto start = std::chrono::steady_clock::now();
    // Everything checkable is checked before the volume is read.
    io::volume_format(output);
    train::InferenceOptions options;
    options.weights = weights;
    options.steps = steps;
    if (!sampler_text.empty()) options.sampler = parse_sampler_kind(sampler_text);
    options.eta = eta;
    options.patch_size = patch;
    options.slab = slab;
    options.vqae_num_groups = num_groups;
    if (!window_text.empty()) options.window = io::parse_hu_window(window_text);
    options.seed = seed;
    options.device = tools::device_from_flag(device_text);
    options.refiner = refiner;
    train::SuperResolver resolver(model_path, vqae_path, options);
    if (!resolver.warning().empty()) std::cerr << "ctsr_infer: warning: " << resolver.warning() << "\n";

    const io::Volume volume = io::read_volume_unit(input, resolver.window());
    io::Volume result;
    result.geometry = volume.geometry;
    result.data = resolver.super_resolve(volume.data, input);
    if (resolver.has_refiner()) result.data = resolver.refine(volume.data, result.data);
    if (io::volume_format(output) != io::VolumeFormat::npy) result.data = io::unit_to_hu(result.data, resolver.window());
    io::write_volume(output, result);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const int64_t slab_used = resolver.last_decode_slab();
    std::cerr << "ctsr_infer: " << input << " " << volume.data.shape().str() << ", "
              << resolver.diffusion().sampling_steps << " " << sampler_kind_name(resolver.diffusion().sampler)
              << " steps" << (resolver.has_refiner() ? ", refined" : "") << (slab_used > 0 ? ", sliding decode in slabs of " + std::to_string(slab_used) : std::string())
              << " -> " << output << " in " << train::format_seconds(seconds) << "\n";
  });
}
