#include "runtime/formats/atomic_file.h"

#include <unistd.h>

#include <atomic>
#include <fstream>
#include <string>
#include <system_error>

#include "runtime/error.h"

namespace ctsr::io {

namespace {
std::atomic<unsigned long> temp_counter{0};
const std::string temp_prefix = ".tmp-";
}  // namespace

AtomicFile::AtomicFile(std::filesystem::path target) : target_(std::move(target)) {
  CTSR_CHECK(!target_.filename().empty(), "cannot write '", target_.string(), "': the path names no file");
  std::filesystem::path dir = target_.parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  CTSR_CHECK(std::filesystem::is_directory(dir, ec), "cannot write '", target_.string(), "': directory '",
             dir.string(), "' does not exist");
  temp_ = dir / (temp_prefix + std::to_string(::getpid()) + "-" + std::to_string(temp_counter++) + "-" +
                 target_.filename().string());
}

AtomicFile::~AtomicFile() {
  if (!committed_) {
    std::error_code ec;
    std::filesystem::remove(temp_, ec);  // may not exist if the writer failed before creating it
  }
}

void AtomicFile::commit() {
  CTSR_CHECK(!committed_, "'", target_.string(), "' was already committed");
  std::error_code ec;
  CTSR_CHECK(std::filesystem::exists(temp_, ec), "cannot write '", target_.string(), "': the writer produced no file");
  std::filesystem::rename(temp_, target_, ec);
  CTSR_CHECK(!ec, "cannot move '", temp_.string(), "' to '", target_.string(), "': ", ec.message());
  committed_ = true;
}

void write_file_atomically(const std::filesystem::path& target, const std::function<void(std::ostream&)>& write) {
  AtomicFile file(target);
  {
    std::ofstream out(file.temp_path(), std::ios::binary | std::ios::trunc);
    CTSR_CHECK(out.good(), "cannot open '", file.temp_path().string(), "' for writing (for '", target.string(), "')");
    write(out);
    out.flush();
    CTSR_CHECK(out.good(), "writing '", target.string(), "' failed (disk full or I/O error)");
  }
  file.commit();
}

bool is_atomic_temp_name(const std::filesystem::path& path) {
  return path.filename().string().rfind(temp_prefix, 0) == 0;
}

}  // namespace ctsr::io
