#include "train/run.h"

#include <chrono>
#include <cmath>
#include <iostream>
#include <limits>

#include "runtime/error.h"
#include "runtime/formats/atomic_file.h"
#include "runtime/formats/folder_lock.h"
#include "train/metrics_log.h"
#include "train/run_support.h"
#include "train/tensorboard.h"

namespace ctsr::train {

using Clock = std::chrono::steady_clock;

Run::Run(Task& task, const std::filesystem::path& out_dir, const RunSchedule& schedule, const RunOptions& options)
    : task_(task), out_dir_(out_dir), schedule_(schedule), options_(options) {
  if (options_.comm) {
    comm_ = options_.comm;
  } else {
    own_comm_ = make_single_process_communicator();
    comm_ = own_comm_.get();
  }
}

Run::~Run() = default;

void Run::lock_folder() {
  if (!is_root() || lock_) return;
  lock_ = std::make_unique<io::FolderLock>(out_dir_, "output.dir");
}

std::optional<std::filesystem::path> Run::resume_point(const std::string& resume) {
  // "" and "auto" look into the folder: not while another process writes there. (A folder that
  // does not exist yet is locked, and made, by start().)
  if ((resume.empty() || resume == "auto") && std::filesystem::is_directory(out_dir_)) lock_folder();
  // Only "auto" looks at files another rank might not see the same way; the other answers are
  // the same on every rank (or the same error).
  if (resume != "auto") return checkpoint_to_resume(resume, out_dir_);
  std::string latest;
  if (is_root()) latest = checkpoint_to_resume(resume, out_dir_).value_or("").string();
  comm_->broadcast_string(latest, 0);
  if (latest.empty()) return std::nullopt;
  return std::filesystem::path(latest);
}

std::optional<std::filesystem::path> Run::resume_point(const std::string& resume, const std::string& kind) {
  const std::optional<std::filesystem::path> from = resume_point(resume);
  if (from) check_seed(read_checkpoint_info(*from, kind).seed, *from);
  return from;
}

void Run::check_seed(uint64_t seed, const std::filesystem::path& checkpoint) const {
  CTSR_CHECK(seed == task_.seed(), checkpoint.string(), ": the checkpoint's run used seed ", seed,
             " but the configuration says seed ", task_.seed(), "; a resumed run must keep its seed");
}

void Run::start(const std::optional<std::filesystem::path>& from) {
  if (is_root()) {
    lock_folder();
    // What a killed run was writing when it died; nothing else writes here while we hold the lock.
    int64_t removed = 0;
    for (const char* sub : {"", "checkpoints", "images"}) removed += io::remove_atomic_temporaries(out_dir_ / sub);
    if (removed > 0)
      log("removed " + std::to_string(removed) + " unfinished file(s) (.tmp-*) of an interrupted run from " +
          out_dir_.string());
  }
  if (from) {
    const CheckpointInfo info = task_.read_checkpoint(*from);
    check_seed(info.seed, *from);
    task_.training_state() = info.state;
    last_saved_ = info.state.step;  // that checkpoint is this step's
    log("resuming from " + from->string() + " at step " + std::to_string(info.state.step));
    if (!info.checksummed)
      log("note: " + from->string() + " records no checksums (written by an older ctsr): its tensors were not verified");
  }
  // metrics.jsonl loses the lines of steps after the checkpoint (they will be redone).
  if (!is_root()) return;
  io::write_file_atomically(out_dir_ / "config.yaml", [&](std::ostream& o) { o << task_.config_yaml(); });
  metrics_ = std::make_unique<MetricsLog>(out_dir_ / "metrics.jsonl", from ? task_.training_state().step : 0);
  tensorboard_ = std::make_unique<TensorBoardWriter>(out_dir_ / "tensorboard");
}

double Run::skip_step(double loss, double grad_norm, int64_t max_consecutive) {
  const SkippedStep skipped = record_skipped_step(task_.training_state(), loss, grad_norm, max_consecutive);
  log(skipped.message);
  write_metrics(skipped.metrics);
  skipped.throw_if_too_many();
  return std::numeric_limits<double>::quiet_NaN();
}

void Run::log(const std::string& text) {
  if (!is_root()) return;
  std::ostream& out = options_.log ? *options_.log : std::cerr;
  out << text << std::endl;
}

void Run::write_metrics(const nlohmann::json& line) {
  if (metrics_) metrics_->write(line);
}

void Run::add_scalar(const std::string& tag, double value, int64_t step) {
  if (tensorboard_) tensorboard_->add_scalar(tag, value, step);
}

std::filesystem::path Run::save_checkpoint() {
  const TrainingState& state = task_.training_state();
  const std::filesystem::path dir = out_dir_ / "checkpoints";
  const std::filesystem::path path = checkpoint_path(dir, state.step);
  task_.write_checkpoint(path, state);  // durable when it returns (io::AtomicFile)
  // Only now may older checkpoints go: a crash before this line leaves them all.
  if (is_root()) prune_checkpoints(dir, schedule_.keep_checkpoints, state.best_step);
  last_saved_ = state.step;
  return path;
}

void Run::validate(int64_t done) {
  auto report = [&](const char* tier, const TierScores& scores) {
    nlohmann::json line = scores.fields;
    line["step"] = done;
    line["tier"] = tier;
    write_metrics(line);
    for (const auto& [tag, value] : scores.scalars) add_scalar(tag, value, done);
    if (!scores.message.empty()) log(scores.message);
  };
  if (schedule_.light_every > 0 && done % schedule_.light_every == 0) report("light", task_.light_validation());
  if (schedule_.full_every > 0 && done % schedule_.full_every == 0) {
    const TierScores scores = task_.full_validation();
    report("full", scores);
    TrainingState& state = task_.training_state();
    if (scores.ssim > state.best_ssim) {
      state.best_ssim = scores.ssim;
      state.best_step = done;
      save_checkpoint();  // the best is kept by the pruning
    }
  }
  if (tensorboard_) tensorboard_->flush();
}

RunSummary Run::run() {
  const RunSchedule& s = schedule_;
  StopSignals signals;
  RunSummary summary;
  summary.first_step = task_.training_state().step;
  std::ostream& out = options_.log ? *options_.log : std::cerr;
  ProgressLine progress(out, options_.progress && is_root());
  log(task_.describe());
  const std::vector<std::string> names = task_.metric_names();
  const auto run_start = Clock::now();
  auto interval_start = run_start;
  std::vector<double> interval(names.size(), 0.0);
  int64_t interval_steps = 0;
  auto finish = [&](bool interrupted) {
    progress.end();
    if (last_saved_ != task_.training_state().step) save_checkpoint();
    if (tensorboard_) tensorboard_->flush();
    summary.interrupted = interrupted;
    summary.last_step = task_.training_state().step;
    return summary;
  };
  while (task_.training_state().step < s.max_steps) {
    const double loss = task_.step();
    summary.losses.push_back(loss);
    const int64_t done = task_.training_state().step;
    if (std::isfinite(loss)) {
      const std::vector<double> values = task_.metric_values();
      for (size_t k = 0; k < interval.size(); ++k) interval[k] += values[k];
      ++interval_steps;
    }
    const double elapsed = std::chrono::duration<double>(Clock::now() - run_start).count();
    const double per_step = elapsed / double(done - summary.first_step);
    if (done % s.log_every == 0 && interval_steps > 0) {
      const double seconds = std::chrono::duration<double>(Clock::now() - interval_start).count();
      const double rate = double(s.batch_size) * double(s.log_every) / seconds;
      std::vector<std::pair<std::string, double>> values;
      for (size_t k = 0; k < names.size(); ++k) values.emplace_back(names[k], interval[k] / double(interval_steps));
      values.emplace_back("lr", task_.learning_rate(done - 1));
      values.emplace_back("grad_norm", task_.grad_norm());
      values.emplace_back("samples_per_s", rate);
      nlohmann::json line{{"step", done}};
      for (const auto& [name, value] : values) {
        line[name] = value;
        add_scalar("train/" + name, value, done);
      }
      write_metrics(line);
      std::fill(interval.begin(), interval.end(), 0.0);
      interval_steps = 0, interval_start = Clock::now();
    }
    progress.update(done, s.max_steps, task_.progress_text(loss), double(s.batch_size) / per_step, per_step,
                    done % s.log_every == 0 || done == s.max_steps);
    validate(done);
    if (s.checkpoint_every > 0 && done % s.checkpoint_every == 0 && last_saved_ != done) save_checkpoint();
    if (options_.after_step) options_.after_step(done);
    // Ranks may receive a signal at different steps: they agree, and stop together.
    std::vector<double> stop{double(signals.received())};
    comm_->all_reduce_max(stop);
    if (stop[0] != 0.0) {
      finish(true);
      log(std::string("stopped by ") + StopSignals::name(int(stop[0])) + " at step " + std::to_string(done) +
          "; checkpoint saved; continue with --resume auto");
      return summary;
    }
  }
  return finish(false);
}

}  // namespace ctsr::train
