// Writing a file so that readers never see half of it: everything goes to a temporary file in the
// target's directory (same file system, so the final rename is atomic), which is renamed over the
// target only on commit(). A writer that throws leaves the old file, if any, untouched and removes
// its temporary on the way out.
#pragma once

#include <filesystem>
#include <functional>
#include <ostream>

namespace ctsr::io {

class AtomicFile {
 public:
  // The temporary keeps the target's file name as its suffix (".tmp-<pid>-<n>-scan.nii.gz"), so
  // libraries that choose a format by extension (NIfTI's .gz) treat it as the target.
  explicit AtomicFile(std::filesystem::path target);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::filesystem::path& target() const { return target_; }
  const std::filesystem::path& temp_path() const { return temp_; }
  // Renames the temporary over the target; throws ctsr::Error naming both paths on failure.
  void commit();

 private:
  std::filesystem::path target_;
  std::filesystem::path temp_;
  bool committed_ = false;
};

// Opens the temporary as a binary stream, calls write(stream), checks the stream and commits.
void write_file_atomically(const std::filesystem::path& target, const std::function<void(std::ostream&)>& write);

// True for names that AtomicFile uses for temporaries (".tmp-..."): resumable jobs skip them.
bool is_atomic_temp_name(const std::filesystem::path& path);

}  // namespace ctsr::io
