// Fuzz harness: ctsr_train's configuration (train/config.h over train/config_schema.h and
// yaml-cpp): the YAML file, then `--set key=value` overrides, then the checks, as ctsr_train runs
// them. The input is the YAML text, optionally followed by a line "#--set" and one override per
// line. A configuration that passes must write out (to_yaml, as config.yaml and every checkpoint
// store it) to a text that reads back to the same configuration.
#include <string>
#include <vector>

#include "fuzz/fuzz_support.h"
#include "train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ctsr;
  static const char* const kName = "train_config";
  const std::string_view text = fuzz::text_of(data, size);
  const std::string separator = "#--set\n";
  size_t split = text.substr(0, separator.size()) == separator ? 0 : text.find("\n" + separator);
  std::string_view yaml = text, overrides;
  if (split != std::string_view::npos) {
    if (split > 0) ++split;  // keep the YAML's last newline
    yaml = text.substr(0, split);
    overrides = text.substr(split + separator.size());
  }
  const std::filesystem::path path = fuzz::Scratch::get().write("config.yaml", yaml.data(), yaml.size());
  return fuzz::run(kName, [&] {
    train::DiffusionTrainConfig config = train::load_train_config(path);
    for (const std::string& assignment : fuzz::lines_of(overrides)) train::apply_override(config, assignment);
    train::validate(config);
    const std::string written = train::to_yaml(config);
    auto reread = [&] { return train::to_yaml(train::train_config_from_yaml(written, "written")); };
    const std::string again =
        fuzz::must_succeed(kName, "the resolved configuration does not read back:\n" + written, reread);
    fuzz::expect(again == written, kName, "the resolved configuration reads back to another:\n" + written);
  });
}
