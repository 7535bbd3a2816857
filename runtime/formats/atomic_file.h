// Writing a file so that readers never see half of it, and so that a save survives a crash or a
// power loss once it has returned:
//   1. a temporary ".tmp-<pid>-<n>-<name>" is created exclusively (O_CREAT | O_EXCL) in the
//      target's folder (same file system, so the final rename is atomic);
//   2. the writer fills it;
//   3. commit(): fsync of the file, a checked close, rename over the target, fsync of the folder.
// A writer that throws (or a failed commit) leaves the old file, if any, untouched and removes its
// temporary on the way out. A process killed in between leaves a temporary, which no reader takes
// for a finished file (is_atomic_temp_name) and which the program owning the folder removes at its
// next start, under its folder lock (remove_atomic_temporaries, runtime/formats/folder_lock.h).
//
// Test hooks (deterministic faults, RELIABILITY.md), counted over the writes of one process
// (the AtomicFiles it has made, from 1):
//   CTSR_FAIL_WRITE_AT=n      the n-th write fails as on a full disk (ENOSPC): the same error, the
//                             temporary removed, the previous file untouched. set_fail_write_at
//                             does the same from inside a process.
//   CTSR_KILL_AT_WRITE=n,b    the process kills itself (SIGKILL) during the n-th write once b bytes
//                             of it have reached the file; a b at or past the file's size kills it
//                             after the rename, before the folder's fsync.
// Both are read from the environment once, at the first write.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <ostream>

namespace ctsr::io {

class AtomicFile {
 public:
  // Creates the temporary (exclusively; its name keeps the target's file name as its suffix,
  // ".tmp-<pid>-<n>-scan.nii.gz", so libraries that choose a format by extension, NIfTI's .gz,
  // treat it as the target). A writer may write it through fd() or reopen temp_path() by name.
  explicit AtomicFile(std::filesystem::path target);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::filesystem::path& target() const { return target_; }
  const std::filesystem::path& temp_path() const { return temp_; }
  int fd() const { return fd_; }  // the temporary, open for writing
  int64_t write_index() const { return write_index_; }  // this file's number among the process's writes (from 1)
  // Makes the temporary durable and renames it over the target (steps 3 above); throws
  // ctsr::Error naming the target and the system's reason on failure (the temporary is then removed).
  void commit();

 private:
  std::filesystem::path target_;
  std::filesystem::path temp_;
  int fd_ = -1;
  int64_t write_index_ = 0;
  bool committed_ = false;
};

// Creates the temporary, calls write(stream) on a stream over it, checks every write and commits.
// A failed write (a full disk) is one error naming the target and the reason.
void write_file_atomically(const std::filesystem::path& target, const std::function<void(std::ostream&)>& write);

// True for names that AtomicFile uses for temporaries (".tmp-..."): resumable jobs skip them.
bool is_atomic_temp_name(const std::filesystem::path& path);

// Removes the temporaries (is_atomic_temp_name, files and the folders of DICOM series being
// written, runtime/formats/dicom.h) directly in `dir` (not below it), left by a
// process that was killed while writing; returns how many. Only for a folder whose owner holds its
// lock: another process's temporaries would be in use. A missing folder has none.
int64_t remove_atomic_temporaries(const std::filesystem::path& dir);

// fsync of a folder, so that the names created, renamed or removed in it survive a power loss.
// Throws naming the folder; file systems that cannot sync a folder (EINVAL) are let be.
void sync_directory(const std::filesystem::path& dir);

// The fault hook of the tests (CTSR_FAIL_WRITE_AT) from inside a process: the n-th write from
// now on fails as on a full disk (n >= 1), or none (0).
void set_fail_write_at(int64_t n);

}  // namespace ctsr::io
