#include "train/metrics_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runtime/error.h"

namespace ctsr::train {

namespace {

// Cuts the file, in place, at the start of its first line that is past keep_up_to_step or torn
// (no newline: the process was killed while writing it). In place, not rewritten and renamed: the
// file keeps its inode, so nothing ever appends to an unlinked copy.
void truncate_after(const std::filesystem::path& path, int64_t keep_up_to_step) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  CTSR_CHECK(fd >= 0, path.string(), ": cannot open the metrics log to drop the lines after step ", keep_up_to_step,
             ": ", std::strerror(errno));
  std::string text;
  char buffer[1 << 16];
  for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      CTSR_FAIL(path.string(), ": cannot read the metrics log: ", std::strerror(error));
    }
    text.append(buffer, size_t(n));
  }
  size_t cut = text.size();
  for (size_t begin = 0; begin < text.size();) {
    const size_t end = text.find('\n', begin);
    if (end == std::string::npos) {  // torn
      cut = begin;
      break;
    }
    const nlohmann::json j = nlohmann::json::parse(text.substr(begin, end - begin), nullptr, /*allow_exceptions=*/false);
    if (!j.is_discarded() && j.contains("step") && j["step"].is_number_integer() &&
        j["step"].get<int64_t>() > keep_up_to_step) {
      cut = begin;  // the steps only grow: every later line is past it too
      break;
    }
    begin = end + 1;
  }
  int error = 0;
  if (cut < text.size() && (::ftruncate(fd, off_t(cut)) != 0 || ::fsync(fd) != 0)) error = errno;
  ::close(fd);
  CTSR_CHECK(error == 0, path.string(), ": cannot drop the metrics lines after step ", keep_up_to_step, ": ",
             std::strerror(error));
}

}  // namespace

MetricsLog::MetricsLog(const std::filesystem::path& path, int64_t keep_up_to_step) : path_(path) {
  std::filesystem::create_directories(path.parent_path().empty() ? "." : path.parent_path());
  if (keep_up_to_step >= 0 && std::filesystem::exists(path)) truncate_after(path, keep_up_to_step);
  out_.open(path, std::ios::app);
  CTSR_CHECK(out_.good(), path.string(), ": cannot open the metrics log for appending");
}

void MetricsLog::write(const nlohmann::json& line) {
  out_ << line.dump() << '\n';
  out_.flush();
  CTSR_CHECK(out_.good(), path_.string(), ": writing the metrics log failed (disk full?)");
}

std::vector<nlohmann::json> read_metrics(const std::filesystem::path& path) {
  std::ifstream in(path);
  CTSR_CHECK(in.good(), path.string(), ": cannot read the metrics log");
  std::vector<nlohmann::json> out;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    CTSR_CHECK(!j.is_discarded(), path.string(), ": line ", number, " is not JSON");
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace ctsr::train
