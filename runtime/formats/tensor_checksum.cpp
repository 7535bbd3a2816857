#include "runtime/formats/tensor_checksum.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>

#include "runtime/error.h"

namespace ctsr::io {

uint32_t crc32_of(const void* bytes, size_t n) {
  const auto* p = static_cast<const Bytef*>(bytes);
  uLong crc = ::crc32(0L, Z_NULL, 0);
  while (n > 0) {  // zlib takes an unsigned int count
    const uInt chunk = static_cast<uInt>(std::min<size_t>(n, size_t(1) << 30));
    crc = ::crc32(crc, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

uint32_t tensor_crc32(const Tensor& t) {
  if (t.nbytes() == 0) return crc32_of(nullptr, 0);
  const Tensor host = t.device().is_host_memory() ? t : t.to(Device::cpu());
  return crc32_of(host.raw_data(), host.nbytes());
}

std::string format_crc32(uint32_t crc) {
  char text[9];
  std::snprintf(text, sizeof text, "%08x", crc);
  return text;
}

std::optional<uint32_t> parse_crc32(const std::string& text) {
  if (text.size() != 8) return std::nullopt;
  uint32_t v = 0;
  for (char c : text) {
    int digit;
    if (c >= '0' && c <= '9') digit = c - '0';
    else if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    else return std::nullopt;
    v = (v << 4) | uint32_t(digit);
  }
  return v;
}

void add_checksums(const std::vector<std::pair<std::string, Tensor>>& tensors, std::map<std::string, std::string>& metadata) {
  for (const auto& [name, t] : tensors) metadata[kChecksumPrefix + name] = format_crc32(tensor_crc32(t));
}

bool has_checksums(const std::map<std::string, std::string>& metadata) {
  auto it = metadata.lower_bound(kChecksumPrefix);
  return it != metadata.end() && it->first.rfind(kChecksumPrefix, 0) == 0;
}

void verify_checksum(const std::string& file, const std::map<std::string, std::string>& metadata,
                     const std::string& name, const Tensor& loaded) {
  if (!has_checksums(metadata)) return;  // written before checksums were recorded: nothing to compare
  const std::string key = kChecksumPrefix + name;
  auto it = metadata.find(key);
  CTSR_CHECK(it != metadata.end(), file, ": tensor '", name, "' has no checksum (metadata '", key,
             "') although the file records them for other tensors: the file was altered");
  const std::optional<uint32_t> expected = parse_crc32(it->second);
  CTSR_CHECK(expected.has_value(), file, ": metadata '", key, "' is '", it->second,
             "', expected 8 lowercase hex digits (a CRC-32)");
  const uint32_t found = tensor_crc32(loaded);
  CTSR_CHECK(found == *expected, file, ": tensor '", name, "' is damaged: its CRC-32 is ", format_crc32(found),
             " but the file records ", it->second, " (the bytes changed after it was written: a bad disk, a partial "
             "overwrite or an edit; restore or rebuild the file)");
}

Tensor load_verified(const SafetensorsReader& reader, const std::string& name) {
  Tensor t = reader.load(name);
  verify_checksum(reader.path().string(), reader.metadata(), name, t);
  return t;
}

}  // namespace ctsr::io
