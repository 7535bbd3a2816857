#include "model/vqae_codec_config.h"

#include <yaml-cpp/yaml.h>

#include <set>

#include "model/yaml_load.h"
#include "runtime/error.h"

namespace ctsr {

namespace {
template <class T>
T scalar(const YAML::Node& node, const std::string& file, const std::string& key, const char* expected) {
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    CTSR_FAIL(file, ": '", key, "' is '", YAML::Dump(node), "', expected ", expected);
  }
}

void only_keys(const YAML::Node& map, const std::set<std::string>& allowed, const std::string& file,
               const std::string& where) {
  CTSR_CHECK(map.IsMap(), file, ": '", where, "' is not a mapping");
  for (const auto& kv : map) {
    const std::string key = kv.first.as<std::string>();
    if (!allowed.count(key)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      CTSR_FAIL(file, ": unknown key '", where.empty() ? key : where + "." + key, "' (known here: ", list, ")");
    }
  }
}
}  // namespace

VqaeCodecConfig read_vqae_codec_config(const std::filesystem::path& path) {
  const std::string file = path.string();
  CTSR_CHECK(std::filesystem::exists(path), file, ": no such settings file");
  const YAML::Node root = load_yaml_file_strict(path);
  VqaeCodecConfig s;
  if (root.IsNull()) return s;
  std::set<std::string> sections{"model", "encode", "decode"};
  sections.insert(kVqaeTrainingSections.begin(), kVqaeTrainingSections.end());
  only_keys(root, sections, file, "");
  if (auto m = root["model"]) {
    std::set<std::string> model_keys{"num_groups"};
    model_keys.insert(kVqaeTrainingModelKeys.begin(), kVqaeTrainingModelKeys.end());
    only_keys(m, model_keys, file, "model");
    if (m["num_groups"]) {
      s.num_groups = scalar<int64_t>(m["num_groups"], file, "model.num_groups", "an integer");
      s.num_groups_set = true;
    }
    CTSR_CHECK(s.num_groups > 0, file, ": 'model.num_groups' is ", s.num_groups, ", expected a positive integer");
  }
  if (auto e = root["encode"]) {
    only_keys(e, {"patch_size", "hu_window"}, file, "encode");
    if (e["patch_size"]) s.patch_size = scalar<int64_t>(e["patch_size"], file, "encode.patch_size", "an integer");
    CTSR_CHECK(s.patch_size >= 0, file, ": 'encode.patch_size' is ", s.patch_size, ", expected 0 or a positive size");
    if (auto w = e["hu_window"]) {
      CTSR_CHECK(w.IsSequence() && w.size() == 2, file, ": 'encode.hu_window' is '", YAML::Dump(w),
                 "', expected [low, high]");
      s.window.lo = scalar<float>(w[0], file, "encode.hu_window[0]", "a number");
      s.window.hi = scalar<float>(w[1], file, "encode.hu_window[1]", "a number");
      CTSR_CHECK(s.window.lo < s.window.hi, file, ": 'encode.hu_window' is [", s.window.lo, ", ", s.window.hi,
                 "], expected low < high");
    }
  }
  if (auto d = root["decode"]) {
    only_keys(d, {"slab"}, file, "decode");
    if (d["slab"]) s.decode_slab = scalar<int64_t>(d["slab"], file, "decode.slab", "an integer");
    CTSR_CHECK(s.decode_slab >= 0, file, ": 'decode.slab' is ", s.decode_slab, ", expected 0 or more");
  }
  return s;
}

std::filesystem::path default_vqae_codec_config_path() {
  const std::filesystem::path p = "configs/vqae_8x.yaml";
  return std::filesystem::exists(p) ? p : std::filesystem::path();
}

}  // namespace ctsr
