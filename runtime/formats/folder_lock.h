// One process per folder: a run's output folder (ctsr_train, ctsr_train_vqae, ctsr_train_redcnn)
// and a latent cache (ctsr_vqae cache) are written by one process at a time. The holder keeps an
// exclusive flock(2) on DIR/.ctsr.lock for as long as it writes there, and writes its PID into
// the file; a second process is refused at once (LOCK_NB) with one error naming the folder, the
// holder's PID and the lock file. The kernel drops the lock with the holder's last descriptor, so
// a process killed with SIGKILL never leaves a stale lock; the file itself stays (it is never
// removed, so two processes can never lock two different files of one name).
//
// Under data parallelism only rank 0 writes the output folder, and only rank 0 takes the lock.
// flock works across machines on NFS (Linux emulates it with POSIX locks there); other network
// file systems may not honour it.
#pragma once

#include <filesystem>
#include <string>

namespace ctsr::io {

class FolderLock {
 public:
  static constexpr const char* kFileName = ".ctsr.lock";

  // Creates `dir` (and its parents) when missing, then takes the lock. `what` names the folder in
  // the error ("output.dir", "--out"): "<what> <dir> is in use by process <pid> (it holds the lock
  // <dir>/.ctsr.lock); ...".
  FolderLock(const std::filesystem::path& dir, const std::string& what);
  ~FolderLock();  // releases the lock
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path file() const { return dir_ / kFileName; }

 private:
  std::filesystem::path dir_;
  int fd_ = -1;
};

// The PID written in a folder's lock file (0 when there is none, or it is not a number): the
// holder, while it holds the lock.
long lock_holder_pid(const std::filesystem::path& dir);

}  // namespace ctsr::io
