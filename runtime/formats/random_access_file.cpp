#include "runtime/formats/random_access_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <utility>

#include "runtime/error.h"

namespace ctsr::io {

RandomAccessFile::RandomAccessFile(std::filesystem::path path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  CTSR_CHECK(fd_ >= 0, "cannot open '", path_.string(), "': ", std::strerror(errno));
  struct stat st {};
  int rc = ::fstat(fd_, &st);
  int err = errno;
  if (rc != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    CTSR_FAIL("cannot read '", path_.string(), "': ", rc != 0 ? std::strerror(err) : "not a regular file");
  }
  size_ = static_cast<uint64_t>(st.st_size);
}

RandomAccessFile::~RandomAccessFile() {
  if (fd_ >= 0) ::close(fd_);
}

RandomAccessFile::RandomAccessFile(RandomAccessFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)), size_(other.size_) {}

RandomAccessFile& RandomAccessFile::operator=(RandomAccessFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    size_ = other.size_;
  }
  return *this;
}

void RandomAccessFile::read(uint64_t offset, void* dst, uint64_t bytes, const std::string& what) const {
  CTSR_CHECK(offset <= size_ && bytes <= size_ - offset, path_.string(), ": truncated: ", what, " (offset ", offset,
             ", ", bytes, " bytes) extends beyond the end of the file (", size_, " bytes)");
  auto* out = static_cast<unsigned char*>(dst);
  while (bytes > 0) {
    // pread may return fewer bytes than asked (signals, > 2 GiB requests): loop until done.
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(bytes, uint64_t{1} << 30));
    ssize_t n = ::pread(fd_, out, chunk, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    CTSR_CHECK(n >= 0, path_.string(), ": reading ", what, " at offset ", offset, " failed: ", std::strerror(errno));
    // The file shrank since it was opened (another process truncated it).
    CTSR_CHECK(n > 0, path_.string(), ": truncated while reading ", what, ": no data at offset ", offset);
    out += n;
    offset += static_cast<uint64_t>(n);
    bytes -= static_cast<uint64_t>(n);
  }
}

}  // namespace ctsr::io
