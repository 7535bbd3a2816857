// The VQ-AE from a checkpoint (model/vqae.h): its configuration read off the tensors' shapes, the
// GroupNorm groups, the PyTorch key names, and the weights.
#include "model/vqae.h"

#include <charconv>
#include <sstream>

#include "model/pytorch_import.h"
#include "kernels/copy.h"
#include "runtime/error.h"
#include "runtime/formats/safetensors.h"

namespace ctsr {

namespace {
std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}
}  // namespace

std::optional<int64_t> recorded_num_groups(const io::TensorSource& source) {
  const auto* file = dynamic_cast<const io::SafetensorsReader*>(&source);
  if (file == nullptr) return std::nullopt;
  const auto it = file->metadata().find("num_groups");
  if (it == file->metadata().end()) return std::nullopt;
  const std::string& text = it->second;
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  CTSR_CHECK(error == std::errc() && end == text.data() + text.size() && value > 0, source.path().filename().string(),
             ": metadata 'num_groups' is '", text, "', expected a positive integer");
  return value;
}

int64_t choose_num_groups(const io::TensorSource& source, std::optional<int64_t> requested, int64_t fallback,
                          std::string* warning) {
  const std::optional<int64_t> recorded = recorded_num_groups(source);
  if (!requested) return recorded ? *recorded : fallback;
  if (recorded && *recorded != *requested && warning != nullptr) {
    std::ostringstream s;
    s << source.path().filename().string() << " records num_groups " << *recorded << "; using the requested "
      << *requested;
    *warning = s.str();
  }
  return *requested;
}

VqaeConfig vqae_config_from(const io::TensorSource& source, int64_t num_groups) {
  const std::string file = source.path().filename().string();
  auto need = [&](const std::string& key, int ndim) -> const io::TensorRecord& {
    CTSR_CHECK(source.contains(key), file, ": no tensor '", key,
               "': not a PatchVolume VQ-AE checkpoint (or not its state_dict)");
    const io::TensorRecord& r = source.record(key);
    CTSR_CHECK(static_cast<int>(r.shape.size()) == ndim, file, ": tensor '", key, "' has ", r.shape.size(),
               " dimensions, expected ", ndim);
    return r;
  };
  VqaeConfig c;
  const auto& first = need("encoder.conv_first.weight", 5);
  c.n_hiddens = first.shape[0];
  c.image_channels = first.shape[1];
  c.levels = 0;
  while (source.contains("encoder.conv_blocks." + std::to_string(c.levels) + ".down.weight")) ++c.levels;
  CTSR_CHECK(c.levels >= 1, file, ": no 'encoder.conv_blocks.0.down.weight': the encoder does not downsample");
  const auto& codes = need("codebook.embeddings", 2);
  c.n_codes = codes.shape[0];
  c.embedding_dim = codes.shape[1];
  const auto& qkv = need("encoder.mid_block.attn.to_qkv.weight", 2);
  CTSR_CHECK(qkv.shape[0] % (3 * c.attention_head_dim) == 0, file,
             ": 'encoder.mid_block.attn.to_qkv.weight' has ", qkv.shape[0], " rows, expected 3 x heads x ",
             c.attention_head_dim);
  c.attention_heads = qkv.shape[0] / (3 * c.attention_head_dim);
  c.num_groups = num_groups;
  const std::string problem = c.num_groups_problem();
  CTSR_CHECK(problem.empty(), file, ": ", problem, "; set num_groups (--num-groups) to the value it was trained with");
  return c;
}

std::string vqae_checkpoint_key(const std::string& name) {
  return replace_all(replace_all(name, ".qkv.", ".to_qkv."), ".proj_out.", ".to_out.");
}

std::unique_ptr<Vqae> Vqae::load(const std::string& path, std::optional<int64_t> num_groups, Device device,
                                 std::string* warning) {
  auto source = io::open_tensor_source(path);
  return load(*source, choose_num_groups(*source, num_groups, VqaeConfig{}.num_groups, warning), device);
}

std::unique_ptr<Vqae> Vqae::load(const io::TensorSource& source, int64_t num_groups, Device device) {
  const VqaeConfig config = vqae_config_from(source, num_groups);
  LayerOptions o;
  o.device = device;
  auto model = std::make_unique<Vqae>(config, o);
  model->load_from(source);
  return model;
}

void Vqae::load_from(const io::TensorSource& source) {
  load_parameters(source, parameters(), vqae_checkpoint_key);
  const std::string file = source.path().filename().string();
  Tensor codes = from_pytorch_layout(source.load("codebook.embeddings"), codebook_.shape(), codebook_.dtype(), file,
                                     "codebook.embeddings");
  codebook_.copy_from(codes);
  set_code_range(file.c_str());
  if (source.contains("codebook.N") && source.contains("codebook.z_avg")) {
    codebook_n_.copy_from(from_pytorch_layout(source.load("codebook.N"), codebook_n_.shape(), codebook_n_.dtype(), file,
                                              "codebook.N"));
    codebook_z_avg_.copy_from(from_pytorch_layout(source.load("codebook.z_avg"), codebook_z_avg_.shape(),
                                                  codebook_z_avg_.dtype(), file, "codebook.z_avg"));
  } else {
    // No EMA history (an inference-only file): the state in which z_avg / N is the codebook.
    fill(codebook_n_, 1.0);
    codebook_z_avg_.copy_from(codes);
  }
}

}  // namespace ctsr
