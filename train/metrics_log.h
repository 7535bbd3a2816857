// metrics.jsonl: one JSON object per line, appended as the run goes. Training lines carry step,
// loss, lr, grad_norm and samples_per_s; validation lines carry step, tier ("light" or "full")
// and the tier's scores. Each line is written whole and flushed, so a reader (or a crash) never
// sees half a line. A resumed run first drops the lines of steps after its checkpoint, which the
// interrupted run wrote but the resumed one will write again.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace ctsr::train {

class MetricsLog {
 public:
  // Opens (creating) path for appending; with keep_up_to_step >= 0, first rewrites the file
  // without lines whose "step" exceeds it (atomically) and without a torn last line.
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
