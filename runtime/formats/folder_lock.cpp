#include "runtime/formats/folder_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

#include "runtime/error.h"

namespace ctsr::io {

namespace {

std::string read_small_file(int fd) {
  char buffer[64];
  const ssize_t n = ::pread(fd, buffer, sizeof buffer - 1, 0);
  return n > 0 ? std::string(buffer, size_t(n)) : std::string();
}

long parse_pid(const std::string& text) {
  try {
    size_t used = 0;
    const long pid = std::stol(text, &used);
    if (pid > 0 && (used == text.size() || text[used] == '\n')) return pid;
  } catch (const std::exception&) {
  }
  return 0;
}

}  // namespace

FolderLock::FolderLock(const std::filesystem::path& dir, const std::string& what) : dir_(dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  CTSR_CHECK(!ec, what, " ", dir_.string(), ": cannot create the folder: ", ec.message());
  const std::filesystem::path path = file();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  CTSR_CHECK(fd_ >= 0, what, " ", dir_.string(), ": cannot open the lock file ", path.string(), ": ",
             std::strerror(errno));
  int result;
  do result = ::flock(fd_, LOCK_EX | LOCK_NB);
  while (result != 0 && errno == EINTR);
  if (result != 0) {
    const int error = errno;
    long holder = 0;
    if (error == EWOULDBLOCK) {
      // The holder writes its PID just after it takes the lock: give it a moment.
      for (int tries = 0; tries < 20 && holder == 0; ++tries) {
        holder = parse_pid(read_small_file(fd_));
        if (holder == 0) ::usleep(10 * 1000);
      }
    }
    ::close(fd_);
    fd_ = -1;
    if (error == EWOULDBLOCK)
      CTSR_FAIL(what, " ", dir_.string(), " is in use by ",
                holder > 0 ? "process " + std::to_string(holder) : std::string("another process (PID not yet written)"),
                " (it holds the lock ", path.string(),
                "); one process writes a folder at a time: wait for that one to end, or choose another folder");
    CTSR_FAIL(what, " ", dir_.string(), ": cannot lock ", path.string(), ": ", std::strerror(error));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != ssize_t(pid.size())) {
    const int error = errno;
    ::close(fd_);
    fd_ = -1;
    CTSR_FAIL(what, " ", dir_.string(), ": cannot write the lock file ", path.string(), ": ", std::strerror(error));
  }
}

FolderLock::~FolderLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the lock
}

long lock_holder_pid(const std::filesystem::path& dir) {
  const int fd = ::open((dir / FolderLock::kFileName).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  const long pid = parse_pid(read_small_file(fd));
  ::close(fd);
  return pid;
}

}  // namespace ctsr::io
