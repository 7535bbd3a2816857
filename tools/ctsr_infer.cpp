// ctsr_infer: super-resolve one degraded CT volume with a trained ctsr_train checkpoint.
//
//   ctsr_infer --model CKPT --vqae W --input LD.nii.gz --output SR.nii.gz
//              [--series-uid UID] [--steps 50] [--sampler ddim|ddpm] [--eta 0] [--seed S] [--weights ema|model]
//              [--window -200,200] [--patch-size N] [--num-groups N] [--refiner W] [--device ...]
//              [--tile N] [--overlap N] [--decode-tile N] [--decode-overlap N] [--encode-overlap N]
//              [--max-memory GiB] [--max-batch N] [--quiet]
//
// window (HU -> [-1, 1]), encode with the VQ-AE (in patches, as the cache was made), normalise,
// sample the HD latent conditioned on the LD latent, denormalise, decode, back to HU, and write
// with the input's geometry. The defaults of the window, the patch size and the sampler come from
// the checkpoint (what the run trained on and its configuration). Volumes of any size and shape
// run in overlapping tiles blended smoothly (train/inference.h): encode, the UNet at every sampler
// step and decode, so memory beyond the volumes stays flat; --max-memory bounds it (the tile
// batches are chosen from it, and a budget too small for one tile is an error before any work).
// A progress bar with the ETA of each stage goes to stderr on a terminal (--quiet: none); Ctrl-C
// stops between tiles and writes nothing; the output appears whole or not at all. With --refiner (a two-input RED-CNN, ctsr_train_redcnn with model.in_channels
// 2), the decoded volume and the input go through it, slice by slice, and that is the result.
// NIfTI outputs hold HU; a .npy output keeps the [-1, 1] scale. DICOM in and out: the input may be
// a series folder (--series-uid picks one from a folder holding several) or a .dcm file, and an
// output without an extension or ending in a separator (SR/) is written as a new series in that
// folder (HU, the input's geometry; the patient and study of a DICOM input are copied).
#include <CLI/CLI.hpp>
#include <array>
#include <chrono>
#include <cmath>
#include <memory>
#include <iostream>
#include <optional>
#include <string>

#include "runtime/allocator.h"
#include "runtime/error.h"
#include "runtime/formats/volume.h"
#include "tools/common/cli.h"
#include "tools/common/progress.h"
#include "train/run_support.h"
#include "train/inference.h"

int main(int argc, char** argv) {
  CLI::App app{"Super-resolve a low-dose / low-resolution CT volume with a trained ctsr_train checkpoint",
               "ctsr_infer"};
  std::string model_path, vqae_path, input, output, sampler_text, weights = "ema", window_text, refiner, device_text = "auto";
  std::string series_uid;
  std::optional<int64_t> steps, patch, num_groups, tile, overlap, decode_tile, decode_overlap, encode_overlap;
  std::optional<double> eta, max_memory_gib;
  int64_t max_batch = 0;
  bool quiet = false;
  uint64_t seed = 0;
  app.add_option("--model", model_path, "ctsr_train checkpoint (OUTPUT/checkpoints/step_*.safetensors)")->required();
  app.add_option("--vqae", vqae_path, "the VQ-AE the training cache was made with (.ckpt or .safetensors)")->required();
  app.add_option("--input", input, "degraded volume: .nii, .nii.gz (HU), .npy ([D, H, W] on [-1, 1]), or a DICOM "
                                  "series folder or .dcm file (HU)")->required();
  app.add_option("--output", output, "result: .nii, .nii.gz (HU, the input's geometry), .npy, or a DICOM series folder "
                                    "(a name without an extension or ending in /: HU, the input's geometry, patient "
                                    "and study)")->required();
  app.add_option("--series-uid", series_uid, "DICOM: the SeriesInstanceUID to read from a folder holding several series");
  app.add_option("--steps", steps, "sampling steps (default: the checkpoint's diffusion.sampling_steps)");
  app.add_option("--sampler", sampler_text, "ddim or ddpm (default: the checkpoint's diffusion.sampler)");
  app.add_option("--eta", eta, "DDIM eta (default: the checkpoint's diffusion.ddim_eta)");
  app.add_option("--seed", seed, "noise seed")->capture_default_str();
  app.add_option("--weights", weights, "ema (the averaged weights validation used) or model")->capture_default_str();
  app.add_option("--window", window_text, "HU window lo,hi (default: the one the cache was made with)");
  app.add_option("--patch-size", patch, "VQ-AE encoding patch (default: the cache's; 0: the whole volume)");
  app.add_option("--tile", tile, "latent voxels per side of the UNet's tiles (default: the training latent's)");
  app.add_option("--overlap", overlap, "latent voxels shared by neighbouring UNet tiles (default: a quarter of the tile)");
  app.add_option("--decode-tile", decode_tile, "latent voxels per side of the decoder's tiles (default: the training latent's)");
  app.add_option("--decode-overlap", decode_overlap, "latent voxels shared by decode tiles (default: a quarter of the tile, at least 1)");
  app.add_option("--encode-overlap", encode_overlap, "latent voxels shared by encode tiles (default: 0, the cache's patch grid)");
  app.add_option("--max-memory", max_memory_gib, "memory budget in GiB: device memory on a GPU, RAM (volumes included) on "
                                                 "the CPU; the tile batches are chosen from it");
  app.add_option("--max-batch", max_batch, "tiles per batch at most (default: 1 on the CPU, 8 on a GPU)");
  app.add_flag("--quiet", quiet, "no progress bar (there is none when stderr is not a terminal)");
  app.add_option("--num-groups", num_groups, "VQ-AE GroupNorm groups (default: the weights file's record)");
  app.add_option("--refiner", refiner, "refiner weights (a two-input RED-CNN): the decoded result and the input "
                                      "through it (default: none, the latent path's result)");
  app.add_option("--device", device_text, "auto, cpu, cuda, cuda:N or cuda_on_cpu")->capture_default_str();

  return ctsr::tools::run_program(app, argc, argv, [&] {
    using namespace ctsr;
    const auto start = std::chrono::steady_clock::now();
    // Everything checkable is checked before the volume is read.
    tools::check_volume_output(output, "--output");
    train::InferenceOptions options;
    options.weights = weights;
    options.steps = steps;
    if (!sampler_text.empty()) options.sampler = parse_sampler_kind(sampler_text);
    options.eta = eta;
    options.patch_size = patch;
    options.tile = tile;
    options.overlap = overlap;
    options.decode_tile = decode_tile;
    options.decode_overlap = decode_overlap;
    options.encode_overlap = encode_overlap;
    if (max_memory_gib) {
      CTSR_CHECK(std::isfinite(*max_memory_gib) && *max_memory_gib > 0, "--max-memory ", *max_memory_gib,
                 ": expected a positive number of GiB");
      options.max_memory = *max_memory_gib * double(1 << 30);
    }
    options.max_batch = max_batch;
    options.vqae_num_groups = num_groups;
    if (!window_text.empty()) options.window = io::parse_hu_window(window_text);
    options.seed = seed;
    options.device = tools::device_from_flag(device_text);
    options.refiner = refiner;
    // Ctrl-C / SIGTERM: the work stops at the next tile and nothing is written.
    train::StopSignals stop;
    std::unique_ptr<tools::ProgressBar> bar;
    std::string stage;
    const bool show = !quiet && tools::stderr_is_terminal();
    options.progress = [&](const std::string& name, double fraction) {
      if (stop.received())
        CTSR_FAIL("stopped by ", train::StopSignals::name(stop.received()), " during ", name, "; ", output,
                  " was not written");
      if (name != stage) {
        if (bar) bar->finish();
        bar = std::make_unique<tools::ProgressBar>(std::cerr, show);
        stage = name;
      }
      bar->update(name, fraction);
    };
    train::SuperResolver resolver(model_path, vqae_path, options);
    if (!resolver.warning().empty()) std::cerr << "ctsr_infer: warning: " << resolver.warning() << "\n";

    io::Volume volume = io::read_volume_unit(input, resolver.window(), io::VolumeReadOptions{series_uid});
    const std::array<int64_t, 3> shape{volume.data.dim(0), volume.data.dim(1), volume.data.dim(2)};
    // The plan first: with --max-memory a budget too small for one tile stops here.
    const train::InferencePlan plan = resolver.plan(shape);
    if (!quiet) std::cerr << "ctsr_infer: " << input << " " << volume.data.shape().str() << "\n" << plan.str() << "\n";
    const std::array<double, 3> spacing = volume.geometry.spacing_xyz;
    if (std::abs(spacing[0] - spacing[1]) > 1e-3 * spacing[0] || std::abs(spacing[0] - spacing[2]) > 1e-3 * spacing[0])
      std::cerr << "ctsr_infer: note: " << input << " has anisotropic voxels of " << spacing[0] << " x " << spacing[1]
                << " x " << spacing[2] << " mm (x, y, z); the models run on the voxels as they are, and the "
                << "result keeps this geometry\n";
    ctsr::reset_peak_memory(options.device);
    io::Volume result;
    result.geometry = volume.geometry;  // with a DICOM input's source: the series copies its patient and study
    result.data = resolver.super_resolve(volume.data, input);
    if (resolver.has_refiner()) result.data = resolver.refine(volume.data, result.data);
    if (bar) bar->finish();
    volume.data = Tensor();  // the input is no longer needed: its memory goes before the output's copy
    if (io::volume_format(output) != io::VolumeFormat::npy) io::unit_to_hu_inplace(result.data, resolver.window());
    if (stop.received())
      CTSR_FAIL("stopped by ", train::StopSignals::name(stop.received()), "; ", output, " was not written");
    io::write_volume(output, result);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cerr << "ctsr_infer: " << input << " " << result.data.shape().str() << ", "
              << resolver.diffusion().sampling_steps << " " << sampler_kind_name(resolver.diffusion().sampler)
              << " steps" << (resolver.has_refiner() ? ", refined" : "") << " -> " << output << " in "
              << train::format_seconds(seconds) << "; peak memory " << format_bytes(allocator_stats(options.device).peak_allocated)
              << " in tensors on " << options.device.str() << ", " << format_bytes(tools::peak_rss_bytes()) << " resident\n";
  });
}
