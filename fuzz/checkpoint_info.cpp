// Fuzz harness: the metadata of a training checkpoint (read_checkpoint_info in train/checkpoint.h),
// the first thing ctsr_train --resume, ctsr_train_vqae --resume, ctsr_infer and ctsr_evaluate read
// of a checkpoint: format, kind, the training state, the seed, the configuration and the extras.
// The input is the metadata, one "key=value" per line (fuzz::metadata_of); the harness writes it
// as the "__metadata__" of a safetensors file without tensors and reads it back as a checkpoint of
// the kind it names. A diffusion checkpoint's stored configuration is then read as ctsr_infer
// reads it.
#include <map>
#include <string>

#include "fuzz/fuzz_support.h"
#include "runtime/formats/safetensors.h"
#include "train/checkpoint.h"
#include "train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ctsr;
  static const char* const kName = "checkpoint_info";
  const std::map<std::string, std::string> metadata = fuzz::metadata_of(data, size);
  const std::filesystem::path path = fuzz::Scratch::get().dir() / "step_00000001.safetensors";
  try {
    io::write_safetensors(path, {}, metadata);
  } catch (...) {
    return 0;  // a map no JSON header can hold (text that is not UTF-8): no file to read
  }
  return fuzz::run(kName, [&] {
    const auto kind = metadata.find("kind");
    const train::CheckpointInfo info =
        train::read_checkpoint_info(path, kind == metadata.end() ? train::kDiffusionCheckpoint : kind->second);
    fuzz::expect(metadata.count("config") && info.config_yaml == metadata.at("config"), kName,
                 "the configuration read is not the metadata's 'config'");
    if (info.kind == train::kDiffusionCheckpoint) (void)train::train_config_from_yaml(info.config_yaml, path.string());
  });
}
