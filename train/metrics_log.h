// metrics.jsonl: one JSON object per line, appended as the run goes. Training lines carry step,
// loss, lr, grad_norm and samples_per_s; validation lines carry step, tier ("light" or "full")
// and the tier's scores. Each line is written whole and flushed, so a reader (or a crash) never
// sees half a line. A resumed run first drops the lines of steps after its checkpoint, which the
// interrupted run wrote but the resumed one will write again, by truncating the file in place
// (under the run folder's lock, train/run.h; never rewritten and renamed, so an appender can never
// be left writing to an unlinked file).
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace ctsr::train {

class MetricsLog {
 public:
  // Opens (creating) path for appending; with keep_up_to_step >= 0, first cuts the file at its
  // first line whose "step" exceeds it, or at a torn last line (truncated in place).
  MetricsLog(const std::filesystem::path& path, int64_t keep_up_to_step = -1);
  void write(const nlohmann::json& line);
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

// Reads every line back (tests, tools); errors name the file and the line number.
std::vector<nlohmann::json> read_metrics(const std::filesystem::path& path);

}  // namespace ctsr::train
