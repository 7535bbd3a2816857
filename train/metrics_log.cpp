#include "train/metrics_log.h"

#include <sstream>

#include "runtime/error.h"
#include "runtime/formats/atomic_file.h"

namespace ctsr::train {

MetricsLog::MetricsLog(const std::filesystem::path& path, int64_t keep_up_to_step) : path_(path) {
  if (keep_up_to_step >= 0 && std::filesystem::exists(path)) {
    std::ifstream in(path);
    std::ostringstream kept;
    std::string line;
    while (std::getline(in, line)) {
      if (in.eof()) break;  // a last line without its newline was torn by a crash
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) continue;
      if (j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() > keep_up_to_step) continue;
      kept << line << '\n';
    }
    io::write_file_atomically(path, [&](std::ostream& o) { o << kept.str(); });
  }
  std::filesystem::create_directories(path.parent_path().empty() ? "." : path.parent_path());
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
