// ctsr_evaluate: how much a trained model improves held-out CT, against the input, the classical
// baselines and the VQ-AE alone (specs/evaluation.md).
//
//   ctsr_evaluate --model CKPT [--vqae W] [--cache DIR] [--split val] [--limit N] [--select-limit N] [--redcnn W]
//                 [--refiner W] [--reencode] [--steps N] [--seed S] [--json FILE] [--panels DIR] [--panels-limit N]
//                 [--device ...]
//
// For every pair of the cache's held-out split (default: the cache and VQ-AE the checkpoint
// trained with), reads the LD and HD volumes named in the cache's metadata (HU windowed as the
// cache was made), and scores these rows against HD, with SSIM and PSNR at data range 2.0:
//   input            the degraded input itself
//   gaussian         scipy.ndimage.gaussian_filter of the input (train/baselines.h)
//   tv               skimage.restoration.denoise_tv_chambolle of the input
//   median           scipy.ndimage.median_filter(x, 3) of the input
//   redcnn           with --redcnn W: the learned baseline RED-CNN (ctsr_train_redcnn's weights,
//                    trained in the cache's window) applied to the input, slice by slice
//   roundtrip        HD's VQ-AE round trip decode(quantise(encode(HD))): the ceiling of anything
//                    decoded through the first stage
//   input_roundtrip  the input's round trip: what the first stage alone makes of LD
//   sr_latent        with --refiner W: the latent path alone (decoded, before the refiner)
//   sr               the super-resolved volume (ctsr_infer's pipeline, sampler noise keyed per pair;
//                    with --refiner, the refiner applied to the input and sr_latent, as ctsr_infer
//                    --refiner does)
// The VQ-AE rows and SR start from the cache's latents when the cache was made with the same
// VQ-AE file and encoding patch (what ctsr_vqae cache computed is what encoding again would give),
// else from the volumes encoded again (--reencode: always).
// The Gaussian's sigma and the TV weight are chosen by mean PSNR on (at most --select-limit pairs
// of) the train split of the cache (or of --select-cache), then applied unchanged. The best baseline of a metric is the
// classical row (gaussian, tv, median) with the highest mean; SR wins a pair when its PSNR is above
// the best-PSNR baseline's on that pair; with --redcnn, SR's mean gap to RED-CNN and its wins over
// it are reported too. The output ends with a table of the means and SR's wins.
#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "kernels/activation.h"
#include "kernels/metrics.h"
#include "model/redcnn.h"
#include "runtime/error.h"
#include "runtime/formats/atomic_file.h"
#include "runtime/formats/safetensors.h"
#include "runtime/formats/volume.h"
#include "tools/common/cli.h"
#include "train/run_support.h"
#include "train/data/latent_cache.h"
#include "train/data/latent_io.h"
#include "train/baselines.h"
#include "train/inference.h"
#include "train/data/latent_data.h"
#include "train/panels.h"
#include "train/png.h"

namespace {

using namespace ctsr;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// One pair of a cache split: its LD and HD volumes on [-1, 1], in the window the cache was made with.
struct PairVolumes {
  std::string id, ld_path;
  io::Volume ld, hd;
  io::HuWindow window;
};

// Pair i of a cache split, which must name its source volumes.
train::CacheEntryInfo pair_entry(const train::LatentDataset& pairs, int64_t i) {
  train::CacheEntryInfo entry = pairs.info(i);
  for (const std::string* path : {&entry.ld_path, &entry.hd_path})
    CTSR_CHECK(!path->empty(), pairs.path(i).string(), ": no '", path == &entry.ld_path ? "ld_path" : "hd_path",
               "' in its metadata (made by ctsr_vqae cache?)");
  return entry;
}

// The HU window pair i of a cache split was made with.
io::HuWindow pair_window(const train::LatentDataset& pairs, int64_t i) { return pair_entry(pairs, i).window; }

// RED-CNN's input and output are the [-1, 1] scale of the window it was trained in.
void check_redcnn_window(const LoadedRedCnn& redcnn, const std::string& weights, const io::HuWindow& cache_window,
                         const std::string& cache_dir) {
  CTSR_CHECK(redcnn.window.lo == cache_window.lo && redcnn.window.hi == cache_window.hi, "--redcnn ", weights,
             ": trained in the HU window ", redcnn.window.lo, ",", redcnn.window.hi, " but the cache ", cache_dir,
             " is in ", cache_window.lo, ",", cache_window.hi,
             "; expected the same window (train it with data.hu_window set to the cache's)");
}

// True when pair i's latents are what encoding its volumes again would give: made from a file of
// the VQ-AE's digest (train::file_digest, recorded by ctsr_vqae cache) with the patch size `patch`.
bool encoded_alike(const train::LatentDataset& pairs, int64_t i, const std::string& vqae_digest, int64_t patch) {
  const train::CacheEntryInfo entry = pairs.info(i);
  return entry.weights_digest == vqae_digest && entry.patch_size == patch;
}

PairVolumes read_pair(const train::LatentDataset& pairs, int64_t i) {
  const train::CacheEntryInfo entry = pair_entry(pairs, i);
  const std::string file = pairs.path(i).string();
  PairVolumes p;
  p.window = entry.window;
  p.id = pairs.id(i);
  p.ld_path = entry.ld_path;
  p.ld = io::read_volume_unit(p.ld_path, p.window);
  p.hd = io::read_volume_unit(entry.hd_path, p.window);
  CTSR_CHECK(p.ld.data.shape() == p.hd.data.shape(), file, ": its LD ", p.ld_path, " is ", p.ld.data.shape().str(),
             " but its HD ", entry.hd_path, " is ", p.hd.data.shape().str());
  return p;
}

// The rows, in the order of the table; the classical baselines are rows kGaussian ... kMedian.
enum Row { kInput, kGaussian, kTv, kMedian, kRedCnn, kRoundtrip, kInputRoundtrip, kSrLatent, kSr, kRows };
constexpr const char* kRowNames[kRows] = {"input",     "gaussian",        "tv",        "median", "redcnn",
                                          "roundtrip", "input_roundtrip", "sr_latent", "sr"};
constexpr Row kBaselines[] = {kGaussian, kTv, kMedian};

struct Score {
  double ssim = 0, psnr = 0;
};

Score score(const Tensor& volume, const Tensor& hd) {
  const Shape batch{1, hd.dim(0), hd.dim(1), hd.dim(2)};
  return {ssim(volume.reshape(batch), hd.reshape(batch), 2.0).per_sample.to_vector<float>()[0],
          psnr(volume.reshape(batch), hd.reshape(batch), 2.0).psnr.to_vector<float>()[0]};
}

Tensor baseline(Row row, const Tensor& ld, const train::BaselineParameters& parameters) {
  switch (row) {
    case kGaussian: return train::gaussian_filter(ld, parameters.sigma.chosen);
    case kTv: return train::denoise_tv_chambolle(ld, parameters.tv_weight.chosen).volume;
    case kMedian: return train::median_filter3(ld);
    default: CTSR_FAIL("baseline: row ", kRowNames[row], " is not a classical baseline");
  }
}

std::string format(const char* pattern, double value) {
  char text[64];
  std::snprintf(text, sizeof text, pattern, value);
  return text;
}

// The volumes a panel needs, kept for the first --panels-limit pairs (the baseline is filtered
// again once the best one is known, after every pair is scored).
struct PanelPair {
  PairVolumes pair;
  Tensor roundtrip, sr, redcnn;  // redcnn: undefined without --redcnn
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Score a trained model on held-out pairs: the input, classical baselines, the VQ-AE round trips and the "
               "super-resolved volume",
               "ctsr_evaluate"};
  std::string model_path, vqae_path, cache_dir, select_cache, split = "val", json_path, panels_dir, redcnn_path,
      refiner_path, device_text = "auto";
  std::optional<int64_t> steps, limit, num_groups;
  int64_t select_limit = 16, panels_limit = 2;
  uint64_t seed = 0;
  app.add_option("--model", model_path, "ctsr_train checkpoint")->required();
  app.add_option("--vqae", vqae_path, "VQ-AE weights (default: the checkpoint's data.vqae_weights)");
  app.add_option("--cache", cache_dir, "latent cache whose split to score (default: the checkpoint's data.cache_dir)");
  app.add_option("--split", split, "train or val")->capture_default_str();
  app.add_option("--limit", limit, "score at most N pairs");
  app.add_option("--select-cache", select_cache,
                 "choose the baselines' parameters on this cache's train split (default: --cache's); e.g. the "
                 "training cache when --cache holds phantoms of an unseen seed");
  app.add_option("--select-limit", select_limit,
                 "choose the Gaussian's sigma and the TV weight on at most N pairs of the train split")
      ->capture_default_str();
  app.add_option("--steps", steps, "sampling steps (default: the checkpoint's)");
  app.add_option("--seed", seed, "sampler noise seed")->capture_default_str();
  app.add_option("--num-groups", num_groups, "VQ-AE GroupNorm groups (default: the checkpoint's, else the file's record)");
  app.add_option("--redcnn", redcnn_path, "RED-CNN weights (ctsr_train_redcnn's OUTPUT/redcnn.safetensors): the "
                                         "learned baseline's row");
  app.add_option("--refiner", refiner_path, "refiner weights (ctsr_train_redcnn with model.in_channels 2): sr is the "
                                           "refined result, sr_latent the latent path alone");
  app.add_option("--json", json_path, "also write the scores (per pair and means) to this JSON file");
  app.add_option("--panels", panels_dir, "write a PNG per scored pair to this folder (LD, best baseline, round trip, SR, "
                                         "HD and the errors)");
  app.add_option("--panels-limit", panels_limit, "panels for at most the first N pairs")->capture_default_str();
  app.add_option("--device", device_text, "auto, cpu, cuda, cuda:N or cuda_on_cpu")->capture_default_str();
  bool reencode = false;
  app.add_flag("--reencode", reencode, "encode the volumes again rather than use the cache's latents");

  return ctsr::tools::run_program(app, argc, argv, [&] {
    const auto start = Clock::now();
    CTSR_CHECK(split == "train" || split == "val", "--split ", split, ": expected train or val");
    CTSR_CHECK(select_limit >= 1, "--select-limit ", select_limit, ": expected at least one pair");
    CTSR_CHECK(panels_limit >= 0, "--panels-limit ", panels_limit, ": expected 0 or more pairs");
    const train::CheckpointInfo info = train::read_checkpoint_info(model_path);
    const train::DiffusionTrainConfig config = train::train_config_from_yaml(info.config_yaml, model_path);
    if (vqae_path.empty()) vqae_path = config.data.vqae_weights;
    if (cache_dir.empty()) cache_dir = config.data.cache_dir;
    const train::LatentDataset pairs(cache_dir, split);
    const int64_t count = limit ? std::min(*limit, pairs.size()) : pairs.size();
    CTSR_CHECK(count > 0, "--limit ", count, ": expected at least one pair");
    train::InferenceOptions options;
    options.steps = steps;
    options.seed = seed;
    options.vqae_num_groups = num_groups;
    options.device = tools::device_from_flag(device_text);
    options.refiner = refiner_path;
    train::SuperResolver resolver(model_path, vqae_path, options);
    // The learned baseline, when given: its window must be the cache's (checked on every pair).
    std::optional<LoadedRedCnn> redcnn;
    if (!redcnn_path.empty()) {
      LayerOptions layer;
      layer.device = options.device;
      redcnn = load_redcnn_weights(redcnn_path, layer);
      CTSR_CHECK(redcnn->net->config().in_channels == 1, "--redcnn ", redcnn_path, ": ", redcnn->net->config().str(),
                 " is a refiner; expected RED-CNN of one input (pass a refiner with --refiner)");
      check_redcnn_window(*redcnn, redcnn_path, pair_window(pairs, 0), cache_dir);
    }
    auto present = [&](int r) {
      return (r != kRedCnn || redcnn.has_value()) && (r != kSrLatent || resolver.has_refiner());
    };

    // The baselines' parameters, on the training split (never on the pairs scored, unless those
    // are the training split: --split train).
    auto baseline_start = Clock::now();
    const train::LatentDataset training(select_cache.empty() ? cache_dir : select_cache, "train");
    const int64_t select_count = std::min(select_limit, training.size());
    const std::string training_split = training.folder().string();
    const train::BaselineParameters parameters = train::select_baseline_parameters(select_count, [&](int64_t i) {
      PairVolumes p = read_pair(training, i);
      return train::VolumePair{p.ld.data, p.hd.data};
    });
    double baseline_seconds = seconds_since(baseline_start);
    std::cerr << "baselines: chose gaussian sigma " << parameters.sigma.chosen << " and tv weight "
              << parameters.tv_weight.chosen << " on " << select_count << " training pairs in "
              << train::format_seconds(baseline_seconds) << std::endl;

    const std::string vqae_digest = train::file_digest(vqae_path);
    std::vector<std::array<Score, kRows>> scores;
    std::vector<PanelPair> panel_pairs;
    int64_t from_cache = 0;
    nlohmann::json per_pair = nlohmann::json::array();
    for (int64_t i = 0; i < count; ++i) {
      PairVolumes p = read_pair(pairs, i);
      const Tensor& ld = p.ld.data;
      const Tensor& hd = p.hd.data;
      std::array<Tensor, kRows> volumes;
      volumes[kInput] = ld;
      baseline_start = Clock::now();
      for (Row row : kBaselines) volumes[row] = baseline(row, ld, parameters);
      baseline_seconds += seconds_since(baseline_start);
      if (redcnn) {
        check_redcnn_window(*redcnn, redcnn_path, p.window, cache_dir);
        const Tensor restored = restore_volume(*redcnn->net, ld.to(options.device));
        volumes[kRedCnn] = clamp(restored, -1.0, 1.0).to(Device::cpu());
      }
      if (!reencode && encoded_alike(pairs, i, vqae_digest, resolver.patch_size())) {
        ++from_cache;
        const train::LatentBatch latents = pairs.load({i});
        volumes[kRoundtrip] = resolver.decode_normalized(latents.hd);
        volumes[kInputRoundtrip] = resolver.decode_normalized(latents.ld);
        volumes[kSr] = resolver.super_resolve_latent(latents.ld, uint64_t(i));
      } else {
        volumes[kRoundtrip] = resolver.round_trip(hd, p.ld_path + " (its full-dose pair)");
        volumes[kInputRoundtrip] = resolver.round_trip(ld, p.ld_path);
        volumes[kSr] = resolver.super_resolve(ld, p.ld_path, uint64_t(i));
      }
      if (resolver.has_refiner()) {
        volumes[kSrLatent] = volumes[kSr];
        volumes[kSr] = resolver.refine(ld, volumes[kSrLatent]);
      }
      std::array<Score, kRows>& s = scores.emplace_back();
      nlohmann::json line{{"id", p.id}};
      std::cerr << "[" << i + 1 << "/" << count << "] " << p.id << " (ssim/psnr):";
      for (int r = 0; r < kRows; ++r) {
        if (!present(r)) continue;
        s[size_t(r)] = score(volumes[size_t(r)], hd);
        line[kRowNames[r]] = {{"ssim", s[size_t(r)].ssim}, {"psnr", s[size_t(r)].psnr}};
        std::cerr << " " << kRowNames[r] << " " << format("%.4f", s[size_t(r)].ssim) << "/"
                  << format("%.2f", s[size_t(r)].psnr);
      }
      std::cerr << std::endl;
      per_pair.push_back(line);
      if (!panels_dir.empty() && i < panels_limit)
        panel_pairs.push_back({std::move(p), volumes[kRoundtrip], volumes[kSr], volumes[kRedCnn]});
    }

    // Means, the best baseline of each metric, and SR's wins against the best-PSNR baseline.
    std::array<Score, kRows> mean{};
    for (const auto& s : scores)
      for (int r = 0; r < kRows; ++r) {
        mean[size_t(r)].ssim += s[size_t(r)].ssim / double(count);
        mean[size_t(r)].psnr += s[size_t(r)].psnr / double(count);
      }
    Row best_ssim = kBaselines[0], best_psnr = kBaselines[0];
    for (Row row : kBaselines) {
      if (mean[row].ssim > mean[best_ssim].ssim) best_ssim = row;
      if (mean[row].psnr > mean[best_psnr].psnr) best_psnr = row;
    }
    int64_t wins = 0, wins_redcnn = 0;
    for (const auto& s : scores) {
      wins += s[kSr].psnr > s[best_psnr].psnr ? 1 : 0;
      wins_redcnn += s[kSr].psnr > s[kRedCnn].psnr ? 1 : 0;
    }

    if (!panels_dir.empty()) {
      std::filesystem::create_directories(panels_dir);
      for (const PanelPair& p : panel_pairs) {
        baseline_start = Clock::now();
        const Tensor best_volume = baseline(best_psnr, p.pair.ld.data, parameters);
        baseline_seconds += seconds_since(baseline_start);
        train::ComparisonVolumes v;
        v.id = p.pair.id;
        v.window = p.pair.window;
        const auto& xyz = p.pair.ld.geometry.spacing_xyz;
        v.spacing = {xyz[2], xyz[1], xyz[0]};
        v.ld = p.pair.ld.data;
        v.hd = p.pair.hd.data;
        v.sr = p.sr;
        v.baseline_name = kRowNames[best_psnr];
        v.baseline = best_volume;
        v.redcnn = p.redcnn;
        v.roundtrip = p.roundtrip;
        train::write_png(std::filesystem::path(panels_dir) / (p.pair.id + ".png"), train::render_comparison_panel(v));
      }
    }

    const std::string scored_split = pairs.folder().string();
    if (!json_path.empty()) {
      nlohmann::json means = nlohmann::json::object(), rows = nlohmann::json::array();
      for (int r = 0; r < kRows; ++r) {
        if (!present(r)) continue;
        rows.push_back(kRowNames[r]);
        means[kRowNames[r]] = {{"ssim", mean[size_t(r)].ssim}, {"psnr", mean[size_t(r)].psnr}};
      }
      nlohmann::json all{
          {"model", model_path},
          {"vqae", vqae_path},
          {"latents_from_cache", from_cache},
          {"split", scored_split},
          {"count", count},
          {"rows", rows},
          {"mean", means},
          {"pairs", per_pair},
          {"baselines",
           {{"chosen_on", training_split},
            {"chosen_on_pairs", select_count},
            {"gaussian_sigma", parameters.sigma.chosen},
            {"tv_weight", parameters.tv_weight.chosen},
            {"sigma_grid", parameters.sigma.grid},
            {"sigma_mean_psnr", parameters.sigma.mean_psnr},
            {"tv_weight_grid", parameters.tv_weight.grid},
            {"tv_weight_mean_psnr", parameters.tv_weight.mean_psnr},
            {"seconds", baseline_seconds}}},
          {"best_baseline", {{"ssim", kRowNames[best_ssim]}, {"psnr", kRowNames[best_psnr]}}},
          {"sr_wins",
           {{"against", kRowNames[best_psnr]}, {"pairs", wins}, {"of", count}, {"fraction", double(wins) / double(count)}}}};
      if (resolver.has_refiner()) all["refiner"] = refiner_path;
      if (redcnn)
        all["redcnn"] = {{"weights", redcnn_path},
                         {"sr_minus_redcnn", {{"ssim", mean[kSr].ssim - mean[kRedCnn].ssim},
                                              {"psnr", mean[kSr].psnr - mean[kRedCnn].psnr}}},
                         {"sr_wins", {{"pairs", wins_redcnn}, {"of", count}}}};
      io::write_file_atomically(json_path, [&](std::ostream& o) { o << all.dump(2) << "\n"; });
    }

    std::cout << "ctsr_evaluate: " << count << " pairs of " << scored_split << ", "
              << resolver.diffusion().sampling_steps << " " << sampler_kind_name(resolver.diffusion().sampler)
              << " steps, latents of " << from_cache << " from the cache, "
              << train::format_seconds(seconds_since(start)) << " (baselines "
              << train::format_seconds(baseline_seconds) << ")\n"
              << "baselines: gaussian sigma " << parameters.sigma.chosen << " and tv weight "
              << parameters.tv_weight.chosen << ", chosen by mean PSNR on " << select_count << " pairs of "
              << training_split << "\n";
    char header[64];
    std::snprintf(header, sizeof header, "%-16s %7s %8s", "row", "SSIM", "PSNR dB");
    std::cout << header << "\n";
    for (int r = 0; r < kRows; ++r) {
      if (!present(r)) continue;
      std::string mark;
      if (r == best_ssim && r == best_psnr) mark = "  <- best baseline";
      else if (r == best_ssim) mark = "  <- best baseline (SSIM)";
      else if (r == best_psnr) mark = "  <- best baseline (PSNR)";
      char text[128];
      std::snprintf(text, sizeof text, "%-16s %7.4f %8.2f", kRowNames[r], mean[size_t(r)].ssim, mean[size_t(r)].psnr);
      std::cout << text << mark << "\n";
    }
    std::cout << "sr beats the best baseline (" << kRowNames[best_psnr] << ") on " << wins << " of " << count
              << " pairs (PSNR)" << std::endl;
    if (redcnn)
      std::cout << "sr against redcnn: " << format("%+.2f", mean[kSr].psnr - mean[kRedCnn].psnr) << " dB, "
                << format("%+.4f", mean[kSr].ssim - mean[kRedCnn].ssim) << " SSIM; sr above it on " << wins_redcnn
                << " of " << count << " pairs (PSNR)" << std::endl;
  });
}
