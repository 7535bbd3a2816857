// The inference pipeline of a trained ctsr_train checkpoint, shared by ctsr_infer and
// ctsr_evaluate: a degraded volume on the [-1, 1] scale -> encode (patches, as the cache was
// made) -> normalise -> sample the HD latent conditioned on it -> denormalise -> decode -> clip to
// [-1, 1]; with a refiner (options.refiner, model/redcnn.h with two inputs), then the refiner
// applied to the degraded volume and that decoded result, clipped: the output keeps the input's
// detail the VQ-AE's codes cannot hold.
//
// Volumes of any size (DESIGN.md, "Large volumes"): each of the three networks runs on
// overlapping tiles blended with a smooth window (model/tiling.h), so memory beyond the volumes
// and latents does not grow with the volume:
//   encode   tiles of the cache's patch (the grid the cache was made with: no overlap unless
//            encode_overlap asks; a whole-volume cache: the training volume, overlap a quarter);
//   sample   the UNet on tiles of the training latent (tile, overlap), blended at every sampler
//            step, so each step updates one consistent latent; the sampler's noise is drawn for
//            the whole latent, so it depends on the position and the seed, not on the tiling;
//   decode   the VQ-AE decoder on latent tiles of the training latent (decode_tile,
//            decode_overlap), blended at voxel resolution.
// A volume whose sides are not multiples of the compression is reflected past its end and the
// result cropped back. The volumes and latents stay in host memory; tiles go to the device.
// One tile (a volume of the training size) gives what the whole-volume path gave, bit for bit.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "model/diffusion.h"
#include "model/redcnn.h"
#include "model/tiling.h"
#include "model/unet.h"
#include "model/vqae.h"
#include "runtime/formats/volume.h"
#include "train/checkpoint.h"
#include "train/config.h"

namespace ctsr::train {

struct InferenceOptions {
  std::string weights = "ema";              // ema | model
  std::optional<int64_t> steps;             // default: the checkpoint's diffusion.sampling_steps
  std::optional<SamplerKind> sampler;       // default: the checkpoint's
  std::optional<double> eta;                // default: the checkpoint's ddim_eta
  std::optional<int64_t> patch_size;        // default: the cache's (0: whole volume)
  // Tiles, in latent voxels per side (model/tiling.h). Defaults: the training latent's shape for
  // sample and decode; overlaps a quarter of the tile (at least 1); encode overlap 0 with a patch
  // cache (the cache's grid).
  std::optional<int64_t> tile, overlap, decode_tile, decode_overlap, encode_overlap;
  // The memory budget in bytes (device memory on a GPU; host memory, volumes included, on the
  // cpu); 0: none (the GPU's memory on a GPU; one tile per batch on the cpu). From it the tile
  // batches are chosen after measuring one tile of each network (a probe on zeros); a budget that
  // cannot hold one tile is an error before any of the volume's work.
  double max_memory = 0;
  int64_t max_batch = 0;  // tiles per batch at most (0: 1 on the cpu, 8 on a GPU)
  // Called as the work goes: the stage ("encode", "sample", "decode") and its fraction done.
  std::function<void(const std::string& stage, double fraction)> progress;
  std::optional<int64_t> vqae_num_groups;   // default: the checkpoint's data.vqae_num_groups, else the file's record
  std::optional<io::HuWindow> window;       // default: the cache's
  uint64_t seed = 0;
  Device device = Device::cpu();
  std::string refiner;                      // two-input RED-CNN weights ("": the latent path alone)
};

// How one volume is run: the grids, the batches and the memory they were chosen from.
struct InferencePlan {
  std::array<int64_t, 3> volume{}, latent{};  // the input's shape; the latent grid's (>= volume / f)
  int64_t downsample = 8;
  TileGrid encode, sample, decode;
  int64_t encode_batch = 1, sample_batch = 1, decode_batch = 1;
  // One tile's peak memory, measured (0: not measured, no budget); what is held throughout
  // (weights, and on the cpu the volumes and latents); the budget (0: none).
  size_t encode_tile_bytes = 0, sample_tile_bytes = 0, decode_tile_bytes = 0, fixed_bytes = 0, budget = 0;
  size_t estimated_peak() const;
  std::string str() const;  // several lines: grids, batches, memory
};

class SuperResolver {
 public:
  // Checks the checkpoint, the VQ-AE and their agreement (latent channels, the cache's
  // normalisation bounds) before anything runs; errors name the file.
  SuperResolver(const std::filesystem::path& checkpoint, const std::string& vqae_weights,
                const InferenceOptions& options);
  ~SuperResolver();

  // [D, H, W] on [-1, 1] (cpu) -> the super-resolved volume, same shape, on [-1, 1] (cpu).
  // `sample_key` keys the sampler's noise (one per volume for reproducible batches of files).
  Tensor super_resolve(const Tensor& volume, const std::string& source, uint64_t sample_key = 0);
  // The same two from latents already encoded and normalised as a latent cache holds them
  // (ctsr_vqae cache; LatentDataset::load's [1, d, h, w, C]), made with this VQ-AE and patch size:
  // super_resolve_latent(normalize(encode(v))) is super_resolve(v), and decode_normalized of it
  // round_trip(v), without encoding again.
  Tensor super_resolve_latent(const Tensor& ld_latent, uint64_t sample_key = 0);
  Tensor decode_normalized(const Tensor& latent);
  // With a refiner: refine(volume, super_resolve(volume, ...)) is the result. Both [D, H, W] on
  // [-1, 1] cpu; the result too.
  bool has_refiner() const { return refiner_ != nullptr; }
  Tensor refine(const Tensor& volume, const Tensor& decoded);
  // The VQ-AE alone: decode(quantise(encode(volume))), clipped; what the first stage keeps.
  Tensor round_trip(const Tensor& volume, const std::string& source);

  const io::HuWindow& window() const { return window_; }
  int64_t patch_size() const { return patch_size_; }  // the encoding patch (0: whole volumes)
  const DiffusionConfig& diffusion() const { return diffusion_; }
  const DiffusionTrainConfig& config() const { return config_; }
  std::string warning() const { return warning_; }
  // The plan for a [D, H, W] volume: grids and batches; with a budget, probes one tile of each
  // network and throws before any work when one tile does not fit (the message names the sizes).
  // `latent` fixes the latent grid (an encoded latent given as it is); by default it is the volume
  // over the compression, rounded up, and at least one encode tile.
  InferencePlan plan(const std::array<int64_t, 3>& volume, const std::array<int64_t, 3>* latent = nullptr);
  const InferencePlan& last_plan() const { return last_plan_; }

 private:
  Tensor encode(const Tensor& volume, const std::string& source, const InferencePlan& p);
  Tensor decode(const Tensor& latent, const InferencePlan& p);
  Tensor sample_latent(const Tensor& ld, const InferencePlan& p, uint64_t sample_key);
  InferencePlan plan_for_latent(const Tensor& latent);
  void report(const std::string& stage, double fraction) const;
  DiffusionTrainConfig config_;
  DiffusionConfig diffusion_;
  InferenceOptions options_;
  io::HuWindow window_;
  int64_t patch_size_ = 64;
  std::array<int64_t, 3> trained_latent_{0, 0, 0};  // the training latent's d, h, w (0: unknown)
  InferencePlan last_plan_;
  std::map<std::string, size_t> probed_;  // measured tile bytes by stage and tile shape
  std::string warning_;
  std::unique_ptr<Vqae> vqae_;
  std::unique_ptr<UNet3D> net_;
  std::unique_ptr<NoiseSchedule> schedule_;
  std::unique_ptr<RedCnn> refiner_;
};

}  // namespace ctsr::train
