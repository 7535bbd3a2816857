// Our VQ-AE weight file, the format every --weights (ctsr_vqae), data.vqae_weights (ctsr_train)
// and --vqae (ctsr_infer) reads: a safetensors file with each parameter under its checkpoint key
// (model/vqae.h vqae_checkpoint_key) in PyTorch's layout, float32, then codebook.embeddings and,
// for a trained model, the EMA buffers codebook.N and codebook.z_avg; metadata "format"
// (ctsr-vqae/1), "architecture", "num_groups" (which PyTorch's checkpoints lack) and "layout",
// plus what the caller adds ("source", ...). Written atomically (a failed write leaves no file).
// Written by ctsr_vqae convert and init, and by ctsr_train_vqae (OUTPUT/vqae.safetensors).
#pragma once

#include <functional>
#include <map>
#include <string>

#include "model/vqae.h"

namespace ctsr {

// The rank PyTorch gives a parameter: ours, except the attention's to_out, a 1x1x1 conv there
// (rank 5) and a Linear here (the ranks convert otherwise keeps from the checkpoint it reads).
int vqae_pytorch_rank(const std::string& key, const Tensor& value);

struct VqaeWeightsOptions {
  // The PyTorch rank of each tensor (by checkpoint key); vqae_pytorch_rank by default.
  std::function<int(const std::string& key, const Tensor& value)> pytorch_rank;
  bool ema_buffers = false;  // also write codebook.N and codebook.z_avg (the model's EMA state)
  std::map<std::string, std::string> metadata;
};

// Writes `model` (its parameters and codebook) to `path`; returns the number of tensors written.
size_t write_vqae_weights(const std::filesystem::path& path, Vqae& model, const VqaeWeightsOptions& options);

}  // namespace ctsr
