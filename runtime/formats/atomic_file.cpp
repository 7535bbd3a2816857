#include "runtime/formats/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <streambuf>
#include <string>
#include <system_error>
#include <vector>

#include "runtime/error.h"

namespace ctsr::io {

namespace {

std::atomic<unsigned long> temp_counter{0};
const std::string temp_prefix = ".tmp-";
constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();

// The test hooks of the header, read from the environment once.
struct FaultHooks {
  std::atomic<int64_t> writes{0};     // AtomicFiles created so far
  std::atomic<int64_t> fail_at{0};    // CTSR_FAIL_WRITE_AT (0: none)
  int64_t kill_at = 0;                // CTSR_KILL_AT_WRITE's n (0: none)
  uint64_t kill_bytes = kNever;       // ... and b
};

int64_t parse_count(const char* variable, const std::string& text) {
  try {
    size_t used = 0;
    const long long v = std::stoll(text, &used);
    if (used == text.size() && v >= 0) return v;
  } catch (const std::exception&) {
  }
  CTSR_FAIL(variable, "='", text, "': expected a count >= 0");
}

FaultHooks& hooks() {
  static FaultHooks h;
  static std::once_flag read;
  std::call_once(read, [] {
    if (const char* fail = std::getenv("CTSR_FAIL_WRITE_AT"); fail && *fail)
      h.fail_at = parse_count("CTSR_FAIL_WRITE_AT", fail);
    if (const char* kill = std::getenv("CTSR_KILL_AT_WRITE"); kill && *kill) {
      const std::string text = kill;
      const size_t comma = text.find(',');
      CTSR_CHECK(comma != std::string::npos, "CTSR_KILL_AT_WRITE='", text, "': expected n,bytes");
      h.kill_at = parse_count("CTSR_KILL_AT_WRITE", text.substr(0, comma));
      h.kill_bytes = uint64_t(parse_count("CTSR_KILL_AT_WRITE", text.substr(comma + 1)));
    }
  });
  return h;
}

[[noreturn]] void die_now() {
  ::kill(::getpid(), SIGKILL);
  std::abort();  // not reached
}

[[noreturn]] void write_failed(const std::filesystem::path& target, int error) {
  CTSR_FAIL("cannot write '", target.string(), "': ", std::strerror(error),
            " (nothing was replaced: the previous file, if any, is as it was)");
}

// Writes everything, retrying short writes and EINTR; returns 0 or the errno. Stops the process
// with SIGKILL once `kill_after` bytes of the file have been written (the test hook).
int write_all(int fd, const char* p, size_t n, uint64_t& written, uint64_t kill_after) {
  while (n > 0) {
    size_t chunk = n;
    if (kill_after != kNever) {
      if (written >= kill_after) die_now();
      chunk = size_t(std::min<uint64_t>(chunk, kill_after - written));
    }
    const ssize_t w = ::write(fd, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += w;
    n -= size_t(w);
    written += uint64_t(w);
  }
  return 0;
}

// An output buffer over a file descriptor that keeps the first error's errno (a std::ofstream
// only says that something failed).
class FdStreambuf : public std::streambuf {
 public:
  FdStreambuf(int fd, uint64_t kill_after) : fd_(fd), kill_after_(kill_after), buffer_(size_t(1) << 16) {
    setp(buffer_.data(), buffer_.data() + buffer_.size());
  }
  int error() const { return error_; }

 protected:
  int_type overflow(int_type c) override {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (n < std::streamsize(buffer_.size())) return std::streambuf::xsputn(s, n);
    if (!drain()) return 0;
    return put(s, size_t(n)) ? n : 0;  // large blocks (tensors) go straight to the file
  }
  int sync() override { return drain() ? 0 : -1; }

 private:
  bool put(const char* p, size_t n) {
    if (error_ == 0) error_ = write_all(fd_, p, n, written_, kill_after_);
    return error_ == 0;
  }
  bool drain() {
    const bool ok = put(pbase(), size_t(pptr() - pbase()));
    setp(buffer_.data(), buffer_.data() + buffer_.size());
    return ok;
  }

  int fd_;
  uint64_t kill_after_;
  uint64_t written_ = 0;
  int error_ = 0;
  std::vector<char> buffer_;
};

bool is_kill_target(int64_t index) { return hooks().kill_at > 0 && index == hooks().kill_at; }

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path target) : target_(std::move(target)) {
  CTSR_CHECK(!target_.filename().empty(), "cannot write '", target_.string(), "': the path names no file");
  std::filesystem::path dir = target_.parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  CTSR_CHECK(std::filesystem::is_directory(dir, ec), "cannot write '", target_.string(), "': directory '",
             dir.string(), "' does not exist");
  write_index_ = ++hooks().writes;
  // Exclusive: a name another writer (or a stale file) holds is never reused.
  for (int attempt = 0;; ++attempt) {
    temp_ = dir / (temp_prefix + std::to_string(::getpid()) + "-" + std::to_string(temp_counter++) + "-" +
                   target_.filename().string());
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ >= 0) break;
    const int error = errno;
    if ((error == EEXIST || error == EINTR) && attempt < 100) continue;
    CTSR_FAIL("cannot write '", target_.string(), "': cannot create a temporary file in '", dir.string(), "': ",
              std::strerror(error));
  }
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_.c_str());  // the writer may have failed at any point
}

void AtomicFile::commit() {
  CTSR_CHECK(!committed_, "'", target_.string(), "' was already committed");
  CTSR_CHECK(fd_ >= 0, "'", target_.string(), "': commit after a failed commit");
  FaultHooks& h = hooks();
  int fd = fd_;
  fd_ = -1;
  const bool fail = h.fail_at > 0 && write_index_ == h.fail_at.load();
  // fsync, then a checked close: the data is on the disk before the name points to it.
  int error = fail ? ENOSPC : 0;
  if (error == 0 && ::fsync(fd) != 0) error = errno;
  if (::close(fd) != 0 && error == 0 && errno != EINTR) error = errno;
  if (error != 0) write_failed(target_, error);  // the destructor removes the temporary
  if (::rename(temp_.c_str(), target_.c_str()) != 0) {
    error = errno;
    CTSR_FAIL("cannot move '", temp_.string(), "' to '", target_.string(), "': ", std::strerror(error));
  }
  committed_ = true;
  if (is_kill_target(write_index_)) die_now();  // the test hook: after the rename, before the folder's fsync
  std::filesystem::path dir = target_.parent_path();
  sync_directory(dir.empty() ? "." : dir);
}

void write_file_atomically(const std::filesystem::path& target, const std::function<void(std::ostream&)>& write) {
  AtomicFile file(target);
  const uint64_t kill_after = is_kill_target(file.write_index()) ? hooks().kill_bytes : kNever;
  FdStreambuf buffer(file.fd(), kill_after);
  std::ostream out(&buffer);
  write(out);
  out.flush();
  if (buffer.error() != 0) write_failed(target, buffer.error());
  CTSR_CHECK(out.good(), "cannot write '", target.string(), "': the stream failed");
  file.commit();
}

bool is_atomic_temp_name(const std::filesystem::path& path) {
  return path.filename().string().rfind(temp_prefix, 0) == 0;
}

int64_t remove_atomic_temporaries(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return 0;
  int64_t removed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (!is_atomic_temp_name(entry.path())) continue;
    std::filesystem::remove_all(entry.path(), ec);  // a folder: a DICOM series being written
    CTSR_CHECK(!ec, "cannot remove the stale temporary '", entry.path().string(), "': ", ec.message());
    ++removed;
  }
  if (removed > 0) sync_directory(dir);
  return removed;
}

void sync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  CTSR_CHECK(fd >= 0, "cannot open the folder '", dir.string(), "' to sync it: ", std::strerror(errno));
  int error = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  if (error == EINVAL || error == ENOTSUP) error = 0;  // a file system without folder syncs
  CTSR_CHECK(error == 0, "cannot sync the folder '", dir.string(), "': ", std::strerror(error));
}

void set_fail_write_at(int64_t n) {
  CTSR_CHECK(n >= 0, "set_fail_write_at(", n, "): expected a count >= 0");
  FaultHooks& h = hooks();
  h.fail_at = n == 0 ? 0 : h.writes.load() + n;
}

}  // namespace ctsr::io
