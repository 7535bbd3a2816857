// A checksum per tensor in a safetensors file's metadata, so that damaged bytes (a bad disk, a
// partial overwrite, a file edited by hand) are found on load instead of being trained on:
//   "crc32.<tensor name>": 8 lowercase hex digits, the CRC-32 (zlib's: the polynomial of gzip,
//   zip and PNG) of the tensor's bytes as stored in the file.
// Training checkpoints (train/checkpoint.h) and latent cache entries (train/data/cache_entry.h)
// record them. Files written before checksums were recorded have none, and load as before,
// unverified; a file that records any checksum must record one for every tensor that is loaded
// through load_verified.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/formats/safetensors.h"
#include "runtime/tensor.h"

namespace ctsr::io {

inline constexpr const char* kChecksumPrefix = "crc32.";

uint32_t crc32_of(const void* bytes, size_t n);
// Of a tensor's bytes (copied to the host first when it is on a GPU).
uint32_t tensor_crc32(const Tensor& t);
std::string format_crc32(uint32_t crc);                      // "0a1b2c3d"
std::optional<uint32_t> parse_crc32(const std::string& text);  // nullopt unless 8 hex digits

// metadata["crc32.<name>"] for each tensor.
void add_checksums(const std::vector<std::pair<std::string, Tensor>>& tensors, std::map<std::string, std::string>& metadata);
// True when the metadata records any checksum.
bool has_checksums(const std::map<std::string, std::string>& metadata);

// Throws unless `loaded` (the bytes of tensor `name` of `file`) has the checksum the metadata
// records: "<file>: tensor '<name>' is damaged: its CRC-32 is <found>, the file records <expected>
// ...". Without any checksum in the metadata (an older file): nothing to check.
void verify_checksum(const std::string& file, const std::map<std::string, std::string>& metadata,
                     const std::string& name, const Tensor& loaded);
// reader.load(name), verified.
Tensor load_verified(const SafetensorsReader& reader, const std::string& name);

}  // namespace ctsr::io
