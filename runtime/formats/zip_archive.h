// A read-only zip reader for torch.save checkpoints (which are zip archives of stored entries, up
// to many GB, hence ZIP64). Opening reads only the end-of-central-directory records and the
// central directory; an entry's bytes are read when asked for, straight from its byte range in
// the file. Stored (method 0) entries can also be read in part; deflated (method 8) entries are
// inflated with zlib. Reading a whole entry checks its CRC-32.
//
// Errors name the file and what was expected, e.g.
//   "model.ckpt: truncated or not a zip archive: no end-of-central-directory record in the last 65 KiB"
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/formats/random_access_file.h"

namespace ctsr::io {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflate
  uint16_t flags = 0;   // general purpose bit flags (bit 0: encrypted)
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t local_header_offset = 0;
};

class ZipArchive {
 public:
  // Reads the end-of-central-directory record (and its ZIP64 form) and the central directory.
  explicit ZipArchive(std::filesystem::path path);

  const std::filesystem::path& path() const { return file_.path(); }
  uint64_t file_size() const { return file_.size(); }
  // Entries in central-directory order.
  const std::vector<ZipEntry>& entries() const { return entries_; }
  // nullptr when there is no entry of that name.
  const ZipEntry* find(const std::string& name) const;
  // Throws naming the file and the entry when it is absent.
  const ZipEntry& entry(const std::string& name) const;

  // Offset in the file of the entry's first data byte (reads and checks its local header).
  uint64_t data_offset(const ZipEntry& entry) const;
  // The whole entry, inflated if need be; its CRC-32 is checked.
  // Refused before anything is allocated when the entry declares more than max_bytes.
  std::vector<uint8_t> read(const ZipEntry& entry, uint64_t max_bytes = UINT64_MAX) const;
  // Same, into dst, which holds exactly entry.uncompressed_size bytes (`bytes` must equal it).
  void read_into(const ZipEntry& entry, void* dst, uint64_t bytes) const;
  // Bytes [offset, offset + bytes) of a stored entry, without reading the rest of it; no CRC check
  // is possible on a part. Throws for deflated entries and ranges beyond the entry.
  void read_range(const ZipEntry& entry, uint64_t offset, uint64_t bytes, void* dst) const;

  // True when the file starts with a zip local-header or empty-archive signature.
  static bool has_zip_signature(const void* first_bytes, size_t size);

 private:
  void read_central_directory();
  std::string where(const ZipEntry& entry) const;  // "<file>: entry '<name>'"
  // Encryption, method and (for stored entries) equal sizes: what read() checks before allocating.
  void check_readable(const ZipEntry& entry) const;

  RandomAccessFile file_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
  // Entry data must lie before the central directory; this bounds every entry's byte range.
  uint64_t central_directory_offset_ = 0;
};

}  // namespace ctsr::io
