// Training checkpoints: one safetensors file per saved step, OUTPUT/checkpoints/step_<8 digits>.safetensors,
// written to a temporary name and renamed, holding
//   model/<name>      the trained weights            ema/<name>       their exponential moving average
//   adam_m/<name>     AdamW's first moments          adam_v/<name>    its second moments
//   <extra name>      further state under its own name (the VQ-AE's codebook buffers: codebook/...)
// (names as in the model's parameter list) and metadata: which program's run it is ("kind":
// "diffusion" for ctsr_train, the default of files without the entry; "vqae" for
// ctsr_train_vqae; "redcnn" for ctsr_train_redcnn), the training state (step, optimiser updates, EMA updates, skip counters,
// best validation SSIM and its step), the random-number scheme and seed (every draw is Philox
// keyed by seed and step, so these are the whole RNG state), the resolved configuration (YAML)
// and what the run trained on (the cache's latent shape, window and patch size, read by ctsr_infer).
//
// Readers name the kind they expect: a checkpoint of the other program is refused with a message
// that says what it is and what to pass instead (ctsr_infer given a VQ-AE checkpoint).
//
// Every tensor's CRC-32 is recorded in the metadata ("crc32.<name>", runtime/formats/tensor_checksum.h)
// and verified when it is loaded: a damaged checkpoint is an error naming the file, the tensor and
// both checksums. Checkpoints written before checksums were recorded load unverified.
// A checkpoint is durable when save_checkpoint returns (io::AtomicFile: fsync, rename, fsync of
// the folder), so the run loop prunes older ones only after that.
//
// Retention: the last `keep` checkpoints are kept, plus the best by validation SSIM.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "model/module.h"

namespace ctsr::train {

struct TrainingState {
  int64_t step = 0;                 // optimiser steps done (skipped ones included)
  int64_t optimizer_updates = 0;    // AdamW's t: steps whose update was applied
  int64_t ema_updates = 0;
  int64_t skipped_steps = 0;        // NaN/Inf steps in the whole run
  int64_t consecutive_skips = 0;
  double best_ssim = -std::numeric_limits<double>::infinity();
  int64_t best_step = -1;           // -1: no full validation yet
};

// What a checkpoint holds besides the tensors.
inline constexpr const char* kDiffusionCheckpoint = "diffusion";  // ctsr_train
inline constexpr const char* kVqaeCheckpoint = "vqae";            // ctsr_train_vqae
inline constexpr const char* kRedCnnCheckpoint = "redcnn";        // ctsr_train_redcnn

struct CheckpointInfo {
  std::string kind = kDiffusionCheckpoint;
  TrainingState state;
  uint64_t seed = 0;
  std::string config_yaml;
  std::map<std::string, std::string> extra;  // e.g. "cache.hu_window", "cache.latent_shape"
  bool checksummed = false;  // read: the file records its tensors' checksums (false: an older file, unverified)
};

// The tensors of one checkpoint, aligned with the model's parameter list.
struct CheckpointTensors {
  std::vector<Parameter*> model;   // value is saved
  std::vector<Parameter*> ema;     // value is saved (an identical module holding the average)
  std::vector<Tensor*> adam_m, adam_v;
};
// Further tensors of a checkpoint, each saved and loaded under its own name.
using NamedTensors = std::vector<std::pair<std::string, Tensor*>>;

std::filesystem::path checkpoint_path(const std::filesystem::path& dir, int64_t step);
// Checkpoints in dir, by step, ascending (temporaries and other files ignored).
std::vector<std::pair<int64_t, std::filesystem::path>> list_checkpoints(const std::filesystem::path& dir);
std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& dir);

// Which checkpoint a run of a single process starts from, for a --resume value: "" (a new run:
// none, and an output folder that already holds checkpoints is refused so that nothing is
// overwritten by mistake), "auto" (the latest of out_dir/checkpoints, or none) or a path (which
// must exist). Errors name the flag and the folder.
std::optional<std::filesystem::path> checkpoint_to_resume(const std::string& resume, const std::filesystem::path& out_dir);

void save_checkpoint(const std::filesystem::path& path, const CheckpointTensors& tensors, const CheckpointInfo& info,
                     const NamedTensors& extra = {});
// Called with each checkpoint's path once save_checkpoint has written it, so tests can count the
// writes of a step (a second write of the same step was a run-loop bug that files cannot show:
// the bytes are the same). Returns the hook it replaces; an empty one: none.
using CheckpointWritten = std::function<void(const std::filesystem::path&)>;
CheckpointWritten set_checkpoint_written_hook(CheckpointWritten hook);
// Reads the metadata only; a checkpoint of another kind than `kind` is an error naming both.
CheckpointInfo read_checkpoint_info(const std::filesystem::path& path, const std::string& kind = kDiffusionCheckpoint);
// Loads into the given tensors (any device); every name must be present with the same shape,
// else an error naming the file and the tensor (a checkpoint of another architecture).
CheckpointInfo load_checkpoint(const std::filesystem::path& path, const CheckpointTensors& tensors,
                               const std::string& kind = kDiffusionCheckpoint, const NamedTensors& extra = {});
// Loads one group ("model" or "ema") into a module's parameters, for inference.
void load_weights(const std::filesystem::path& path, const std::string& group, const std::vector<Parameter*>& params,
                  const std::string& kind = kDiffusionCheckpoint);

// Removes all but the `keep` newest checkpoints and the one of `best_step` (when >= 0).
void prune_checkpoints(const std::filesystem::path& dir, int64_t keep, int64_t best_step);

}  // namespace ctsr::train
