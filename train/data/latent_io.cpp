#include "train/data/latent_io.h"

#include <sstream>
#include <stdexcept>

#include "model/pytorch_import.h"
#include "runtime/error.h"
#include "runtime/formats/npy.h"
#include "runtime/formats/safetensors.h"
#include "runtime/formats/tensor_checksum.h"

namespace ctsr::train {

namespace {
bool has_extension(const std::filesystem::path& p, const char* ext) { return p.extension() == ext; }
}  // namespace

std::vector<double> parse_number_list(const std::string& text, const std::string& what) {
  std::vector<double> v;
  std::istringstream s(text);
  std::string cell;
  while (std::getline(s, cell, ',')) {
    try {
      size_t used = 0;
      v.push_back(std::stod(cell, &used));
      if (used != cell.size()) throw std::invalid_argument(cell);
    } catch (const std::exception&) {
      CTSR_FAIL(what, ": '", text, "' is not a comma-separated list of numbers");
    }
  }
  return v;
}

Tensor latent_to_file_layout(const Tensor& z) {
  CTSR_CHECK(z.ndim() == 5 && z.dim(0) == 1, "latent ", z.shape().str(), " is not [1, d, h, w, C]");
  Tensor host = z.to(Device::cpu());
  return move_last_axis_to(host.reshape({z.dim(1), z.dim(2), z.dim(3), z.dim(4)}), 0);
}

Tensor latent_from_file_layout(const Tensor& chw, const std::string& file) {
  CTSR_CHECK(chw.ndim() == 4, file, ": latent ", chw.shape().str(), " is not 4-D [channels, d, h, w]");
  CTSR_CHECK(chw.dtype() == DType::float32, file, ": latent is ", dtype_name(chw.dtype()), ", expected float32");
  Tensor dhwc = move_axis_last(chw.to(Device::cpu()), 0);
  return dhwc.reshape({1, chw.dim(1), chw.dim(2), chw.dim(3), chw.dim(0)});
}

LatentFile read_latent(const std::filesystem::path& path, const std::string& key) {
  const std::string file = path.string();
  LatentFile out;
  if (has_extension(path, ".npy")) {
    out.latent = latent_from_file_layout(io::read_npy(path), file);
  } else if (has_extension(path, ".safetensors")) {
    io::SafetensorsReader reader(path);
    CTSR_CHECK(reader.contains(key), file, ": no tensor '", key, "' (", reader.names().size(), " tensors in the file)");
    out.latent = latent_from_file_layout(io::load_verified(reader, key), file);  // a cache entry's checksum
    out.metadata = reader.metadata();
  } else {
    CTSR_FAIL(file, ": a latent is a .npy or .safetensors file");
  }
  return out;
}

void write_latent(const std::filesystem::path& path, const Tensor& z, const std::map<std::string, std::string>& metadata) {
  Tensor chw = latent_to_file_layout(z);
  if (has_extension(path, ".npy")) {
    io::write_npy(path, chw);
  } else if (has_extension(path, ".safetensors")) {
    io::write_safetensors(path, {{"latent", chw}}, metadata);
  } else {
    CTSR_FAIL(path.string(), ": a latent is written as .npy or .safetensors");
  }
}

}  // namespace ctsr::train
