#include "model/vqae_weights.h"

#include "model/pytorch_import.h"
#include "runtime/formats/safetensors.h"

namespace ctsr {

int vqae_pytorch_rank(const std::string& key, const Tensor& value) {
  const std::string to_out = ".to_out.weight";
  const bool is_to_out =
      key.size() >= to_out.size() && key.compare(key.size() - to_out.size(), to_out.size(), to_out) == 0;
  return is_to_out ? 5 : static_cast<int>(value.ndim());
}

size_t write_vqae_weights(const std::filesystem::path& path, Vqae& model, const VqaeWeightsOptions& options) {
  const auto rank = options.pytorch_rank ? options.pytorch_rank : vqae_pytorch_rank;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (Parameter* p : model.parameters()) {
    const std::string key = vqae_checkpoint_key(p->name);
    tensors.emplace_back(key, to_pytorch_layout(p->value, rank(key, p->value)));
  }
  tensors.emplace_back("codebook.embeddings", model.codebook().to(Device::cpu()));
  if (options.ema_buffers) {
    tensors.emplace_back("codebook.N", model.codebook_n().to(Device::cpu()));
    tensors.emplace_back("codebook.z_avg", model.codebook_z_avg().to(Device::cpu()));
  }
  std::map<std::string, std::string> metadata = options.metadata;
  const VqaeConfig& config = model.config();
  metadata["format"] = "ctsr-vqae/1";
  metadata["architecture"] = config.str();
  metadata["num_groups"] = std::to_string(config.num_groups);
  metadata["layout"] = "PyTorch (conv [out, in, k, k, k]; conv_trans [in, out, k, k, k])";
  io::write_safetensors(path, tensors, metadata);
  return tensors.size();
}

}  // namespace ctsr
