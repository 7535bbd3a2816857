// Fuzz harness: torch.save checkpoints as whole files (runtime/formats/torch_checkpoint.h over
// zip_archive.h and pickle.h): the legacy-format check, the zip's end records (ZIP64 included),
// central directory and local headers, stored and deflated entries with their CRC-32, then the
// pickle and every tensor. A mutated data.pkl rarely keeps its CRC-32 here; fuzz/torch_pickle.cpp
// fuzzes the pickle itself.
#include "fuzz/torch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const char* const kName = "torch_checkpoint";
  const std::filesystem::path path = ctsr::fuzz::Scratch::get().write("input.ckpt", data, size);
  return ctsr::fuzz::run(kName, [&] { ctsr::fuzz::read_torch_checkpoint(path, kName); });
}
