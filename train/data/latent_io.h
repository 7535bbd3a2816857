// Latents on disk: [C, d, h, w] float32 (channels first, like the volumes' [D, H, W] and like
// PyTorch's latents) in a .npy or a .safetensors file (tensor "latent" by default; a latent cache
// file holds "ld_latent" and "hd_latent"). In memory they are ours: [1, d, h, w, C].
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace ctsr::train {

struct LatentFile {
  Tensor latent;  // [1, d, h, w, C], float32, cpu
  std::map<std::string, std::string> metadata;  // empty for .npy
};

// Errors name the file: an extension other than .npy/.safetensors, a missing tensor `key`, a
// tensor that is not 4-D float32.
LatentFile read_latent(const std::filesystem::path& path, const std::string& key = "latent");
// z: [1, d, h, w, C] on any device. Atomic.
void write_latent(const std::filesystem::path& path, const Tensor& z,
                  const std::map<std::string, std::string>& metadata = {});

// "1,2.5,3" -> {1, 2.5, 3}: the number lists of latent metadata (spacing_xyz, affine, hu_window).
// Throws naming `what` when a cell is not a number.
std::vector<double> parse_number_list(const std::string& text, const std::string& what = "number list");

// [1, d, h, w, C] <-> [C, d, h, w] on the host.
Tensor latent_to_file_layout(const Tensor& z);
Tensor latent_from_file_layout(const Tensor& chw, const std::string& file);

}  // namespace ctsr::train
