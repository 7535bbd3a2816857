// A read-only file read by (offset, length), for lazy readers that fetch one tensor's bytes out
// of a multi-GB file without streaming the rest. Reads use pread, so const readers may be used
// from several threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace ctsr::io {

class RandomAccessFile {
 public:
  // Throws ctsr::Error "cannot open '<path>': <reason>".
  explicit RandomAccessFile(std::filesystem::path path);
  ~RandomAccessFile();
  RandomAccessFile(RandomAccessFile&& other) noexcept;
  RandomAccessFile& operator=(RandomAccessFile&& other) noexcept;
  RandomAccessFile(const RandomAccessFile&) = delete;
  RandomAccessFile& operator=(const RandomAccessFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  uint64_t size() const { return size_; }

  // Reads exactly `bytes` bytes at `offset`. A range past the end of the file throws
  // "<path>: truncated: <what> (offset O, N bytes) extends beyond the end of the file (S bytes)".
  void read(uint64_t offset, void* dst, uint64_t bytes, const std::string& what) const;

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

}  // namespace ctsr::io
