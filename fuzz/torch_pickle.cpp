// Fuzz harness: the pickle of a torch.save checkpoint (runtime/formats/pickle.h and how
// torch_checkpoint.h reads tensors out of it). The input is data.pkl; the harness wraps it in the
// archive torch.save would write (stored entries with their CRC-32: archive/data.pkl,
// archive/byteorder "little", and storages archive/data/0 ... archive/data/7 of 64 bytes each, so
// that a FloatStorage of 16 elements or a LongStorage of 8 fits), then reads it like
// fuzz/torch_checkpoint.cpp.
#include <array>
#include <string>
#include <utility>
#include <vector>

#include "fuzz/torch_checkpoint.h"

namespace {

uint32_t crc32(const uint8_t* p, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

void put16(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 2; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// A zip archive of stored entries (no ZIP64: the inputs are small).
std::vector<uint8_t> stored_zip(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& entries) {
  std::vector<uint8_t> out, directory;
  for (const auto& [name, bytes] : entries) {
    const uint32_t crc = crc32(bytes.data(), bytes.size()), offset = static_cast<uint32_t>(out.size());
    const uint32_t length = static_cast<uint32_t>(bytes.size()), name_length = static_cast<uint32_t>(name.size());
    put32(out, 0x04034b50);  // local file header
    put16(out, 20);          // version needed
    put16(out, 0);           // flags
    put16(out, 0);           // method: stored
    put32(out, 0);           // time, date
    put32(out, crc);
    put32(out, length);
    put32(out, length);
    put16(out, name_length);
    put16(out, 0);  // extra field length
    out.insert(out.end(), name.begin(), name.end());
    out.insert(out.end(), bytes.begin(), bytes.end());

    put32(directory, 0x02014b50);  // central directory header
    put16(directory, 20);          // version made by
    put16(directory, 20);          // version needed
    put16(directory, 0);
    put16(directory, 0);
    put32(directory, 0);
    put32(directory, crc);
    put32(directory, length);
    put32(directory, length);
    put16(directory, name_length);
    put16(directory, 0);  // extra
    put16(directory, 0);  // comment
    put16(directory, 0);  // disk
    put16(directory, 0);  // internal attributes
    put32(directory, 0);  // external attributes
    put32(directory, offset);
    directory.insert(directory.end(), name.begin(), name.end());
  }
  const uint32_t directory_offset = static_cast<uint32_t>(out.size());
  out.insert(out.end(), directory.begin(), directory.end());
  put32(out, 0x06054b50);  // end of central directory
  put16(out, 0);
  put16(out, 0);
  put16(out, static_cast<uint32_t>(entries.size()));
  put16(out, static_cast<uint32_t>(entries.size()));
  put32(out, static_cast<uint32_t>(directory.size()));
  put32(out, directory_offset);
  put16(out, 0);  // comment length
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const char* const kName = "torch_pickle";
  std::vector<std::pair<std::string, std::vector<uint8_t>>> entries;
  entries.emplace_back("archive/data.pkl", std::vector<uint8_t>(data, data + size));
  entries.emplace_back("archive/byteorder", std::vector<uint8_t>{'l', 'i', 't', 't', 'l', 'e'});
  for (int key = 0; key < 8; ++key) {
    std::vector<uint8_t> storage(64);
    for (size_t i = 0; i < storage.size(); ++i) storage[i] = static_cast<uint8_t>(key * 64 + i);
    entries.emplace_back("archive/data/" + std::to_string(key), std::move(storage));
  }
  const std::vector<uint8_t> archive = stored_zip(entries);
  const std::filesystem::path path = ctsr::fuzz::Scratch::get().write("pickle.ckpt", archive.data(), archive.size());
  return ctsr::fuzz::run(kName, [&] { ctsr::fuzz::read_torch_checkpoint(path, kName); });
}
