// ctsr_evaluate: how much a trained model improves held-out CT, against the input and against
// the VQ-AE alone.
//
//   ctsr_evaluate --model CKPT [--vqae W] [--cache DIR] [--split val] [--limit N] [--steps N] [--seed S]
//                 [--json FILE] [--device ...]
//
// For every pair of the cache's held-out split (default: the cache and VQ-AE the checkpoint
// trained with), reads the LD and HD volumes named in the cache's metadata (HU windowed as the
// cache was made), and scores against HD, with SSIM and PSNR at data range 2.0:
//   ld  the degraded input itself
//   rt  its VQ-AE round trip, decode(quantise(encode(LD))): what the first stage alone gives
//   sr  the super-resolved volume (ctsr_infer's pipeline, sampler noise keyed per pair)
// The last lines are the means: ssim_ld, ssim_rt, ssim_sr, psnr_ld, psnr_rt, psnr_sr.
#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "kernels/metrics.h"
#include "runtime/error.h"
#include "runtime/formats/atomic_file.h"
#include "runtime/formats/safetensors.h"
#include "runtime/formats/volume.h"
#include "tools/lib/cli.h"
#include "tools/lib/latent_io.h"
#include "train/inference.h"
#include "train/latent_data.h"

int main(int argc, char** argv) {
  CLI::App app{"Score a trained model on held-out pairs: the input, the VQ-AE round trip and the super-resolved volume",
               "ctsr_evaluate"};
  std::string model_path, vqae_path, cache_dir, split = "val", json_path, device_text = "auto";
  std::optional<int64_t> steps, limit, num_groups;
  uint64_t seed = 0;
  app.add_option("--model", model_path, "ctsr_train checkpoint")->required();
  app.add_option("--vqae", vqae_path, "VQ-AE weights (default: the checkpoint's data.vqae_weights)");
  app.add_option("--cache", cache_dir, "latent cache whose split to score (default: the checkpoint's data.cache_dir)");
  app.add_option("--split", split, "train or val")->capture_default_str();
  app.add_option("--limit", limit, "score at most N pairs");
  app.add_option("--steps", steps, "sampling steps (default: the checkpoint's)");
  app.add_option("--seed", seed, "sampler noise seed")->capture_default_str();
  app.add_option("--num-groups", num_groups, "VQ-AE GroupNorm groups (default: the checkpoint's, else the file's record)");
  app.add_option("--json", json_path, "also write the scores (per pair and means) to this JSON file");
  app.add_option("--device", device_text, "auto, cpu, cuda, cuda:N or cuda_on_cpu")->capture_default_str();

  return ctsr::tools::run_program(app, argc, argv, [&] {
    using namespace ctsr;
    const auto start = std::chrono::steady_clock::now();
    CTSR_CHECK(split == "train" || split == "val", "--split ", split, ": expected train or val");
    const train::CheckpointInfo info = train::read_checkpoint_info(model_path);
    const train::TrainConfig config = train::train_config_from_yaml(info.config_yaml, model_path);
    if (vqae_path.empty()) vqae_path = config.data.vqae_weights;
    if (cache_dir.empty()) cache_dir = config.data.cache_dir;
    const train::LatentDataset pairs(cache_dir, split);
    train::InferenceOptions options;
    options.steps = steps;
    options.seed = seed;
    options.vqae_num_groups = num_groups;
    options.device = tools::device_from_flag(device_text);
    train::SuperResolver resolver(model_path, vqae_path, options);

    const int64_t count = limit ? std::min(*limit, pairs.size()) : pairs.size();
    CTSR_CHECK(count > 0, "--limit ", count, ": expected at least one pair");
    const char* names[] = {"ld", "rt", "sr"};
    double ssim_sum[3] = {0, 0, 0}, psnr_sum[3] = {0, 0, 0};
    nlohmann::json per_pair = nlohmann::json::array();
    for (int64_t i = 0; i < count; ++i) {
      const auto meta = pairs.metadata(i);
      for (const char* key : {"ld_path", "hd_path", "hu_window"})
        CTSR_CHECK(meta.count(key), pairs.path(i).string(), ": no '", key, "' in its metadata (made by ctsr_vqae cache?)");
      const auto w = tools::parse_number_list(meta.at("hu_window"), pairs.path(i).string() + " hu_window");
      CTSR_CHECK(w.size() == 2, pairs.path(i).string(), ": hu_window '", meta.at("hu_window"), "' is not lo,hi");
      const io::HuWindow window{float(w[0]), float(w[1])};
      const io::Volume ld = io::read_volume_unit(meta.at("ld_path"), window);
      const io::Volume hd = io::read_volume_unit(meta.at("hd_path"), window);
      CTSR_CHECK(ld.data.shape() == hd.data.shape(), meta.at("ld_path"), " is ", ld.data.shape().str(), " but ",
                 meta.at("hd_path"), " is ", hd.data.shape().str());
      const Tensor volumes[3] = {ld.data, resolver.round_trip(ld.data, meta.at("ld_path")),
                                 resolver.super_resolve(ld.data, meta.at("ld_path"), uint64_t(i))};
      const Shape batch{1, hd.data.dim(0), hd.data.dim(1), hd.data.dim(2)};
      nlohmann::json line{{"id", pairs.id(i)}};
      std::cerr << "[" << i + 1 << "/" << count << "] " << pairs.id(i) << ":";
      for (int k = 0; k < 3; ++k) {
        const double s = ssim(volumes[k].reshape(batch), hd.data.reshape(batch), 2.0).per_sample.to_vector<float>()[0];
        const double p = psnr(volumes[k].reshape(batch), hd.data.reshape(batch), 2.0).psnr.to_vector<float>()[0];
        ssim_sum[k] += s;
        psnr_sum[k] += p;
        line[std::string("ssim_") + names[k]] = s;
        line[std::string("psnr_") + names[k]] = p;
        char text[64];
        std::snprintf(text, sizeof text, "  %s ssim %.4f psnr %.2f", names[k], s, p);
        std::cerr << text;
      }
      std::cerr << std::endl;
      per_pair.push_back(line);
    }
    nlohmann::json means{{"pairs", count}, {"split", (std::filesystem::path(cache_dir) / split).string()}};
    for (int k = 0; k < 3; ++k) {
      means[std::string("ssim_") + names[k]] = ssim_sum[k] / double(count);
      means[std::string("psnr_") + names[k]] = psnr_sum[k] / double(count);
    }
    if (!json_path.empty()) {
      const nlohmann::json all{{"mean", means}, {"pairs", per_pair}, {"model", model_path}, {"vqae", vqae_path}};
      io::write_file_atomically(json_path, [&](std::ostream& o) { o << all.dump(2) << "\n"; });
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << "ctsr_evaluate: " << count << " held-out pairs of " << means["split"].get<std::string>() << ", "
              << resolver.diffusion().sampling_steps << " " << sampler_kind_name(resolver.diffusion().sampler)
              << " steps, " << tools::format_seconds(seconds) << "\n";
    for (const char* metric : {"ssim", "psnr"})
      for (int k = 0; k < 3; ++k) {
        char text[64];
        const std::string key = std::string(metric) + "_" + names[k];
        std::snprintf(text, sizeof text, metric[0] == 's' ? "%s %.4f\n" : "%s %.2f\n", key.c_str(),
                      means[key].get<double>());
        std::cout << text;
      }
  });
}
