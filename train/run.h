// The run loop of every training program, in the spirit of Caffe's Solver::Step: Run owns the step
// schedule, the two validation tiers' cadence, the checkpoints (the cadence, a new best of the full
// tier, a stop and the end, each step written once: one last_saved), SIGINT/SIGTERM, resuming, the
// progress line, metrics.jsonl and TensorBoard, and the ranks of a data-parallel job (who writes,
// and that they stop together). A Task only computes: the diffusion UNet (train/trainer.h), the
// VQ-AE (train/vqae_trainer.h) and RED-CNN (train/redcnn_trainer.h) supply a step, the two
// validation tiers, their checkpoint's contents and the names of what they report. The gradients'
// reduction over the ranks (train/data_parallel.h) happens inside a task's step, between its
// backward and its update, so the task owns its DataParallel on the run's communicator: the
// diffusion task and the VQ-AE task do (the VQ-AE's codebook EMA update sums its per-code counts
// and latent sums over the ranks and draws restarts from the gathered batch); RED-CNN, the learned
// baseline, runs in one process.
//
// The output folder belongs to one process at a time: rank 0 holds its lock (io::FolderLock on
// OUTPUT/.ctsr.lock) from resume_point (when the folder exists) or start() (creating it) until the
// Run ends, so a second run on the folder is refused before it reads or writes anything there. At
// start(), under the lock, the temporaries a killed run left (.tmp-*, io::AtomicFile) are removed
// from OUTPUT, OUTPUT/checkpoints and OUTPUT/images, and metrics.jsonl is truncated in place to
// the resumed step.
//
// One step of run(), after task.step():
//   every log_every steps, a training line: the mean of each of the task's metric_names() over the
//     interval's finite steps, lr, grad_norm and samples_per_s (metrics.jsonl and train/<name>);
//   the progress line;
//   light validation every light_every steps, full every full_every (a line with "tier" each); a
//     full tier whose ssim beats the best so far records it and saves the step's checkpoint;
//   a checkpoint every checkpoint_every steps, unless this step's is written already;
//   after_step (tests); then, when any rank received SIGINT or SIGTERM, the step's checkpoint (if
//     not written yet) and return. At max_steps, the last step's checkpoint (if not written yet).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/communicator.h"
#include "train/checkpoint.h"

namespace ctsr::train {

class MetricsLog;
class TensorBoardWriter;
}  // namespace ctsr::train
namespace ctsr::io {
class FolderLock;
}  // namespace ctsr::io
namespace ctsr::train {

// The cadence, from the task's configuration (0: never).
struct RunSchedule {
  int64_t max_steps = 0, batch_size = 0, log_every = 1;
  int64_t checkpoint_every = 0, keep_checkpoints = 0;
  int64_t light_every = 0, full_every = 0;
};
// The schedule of a configuration with the cadence keys both tasks' configurations share.
template <class Config>
RunSchedule schedule_of(const Config& c) {
  return {c.training.max_steps,        c.training.batch_size,       c.training.log_every,
          c.training.checkpoint_every, c.training.keep_checkpoints, c.validation.light_every,
          c.validation.full_every};
}

struct RunOptions {
  bool progress = true;                          // the terminal progress line
  std::ostream* log = nullptr;                   // messages (default std::cerr)
  std::function<void(int64_t step)> after_step;  // called after every step (tests)
  Communicator* comm = nullptr;                  // the ranks of a data-parallel job; nullptr: this process alone
};

struct RunSummary {
  int64_t first_step = 0, last_step = 0;  // steps done when the run started and when it stopped
  bool interrupted = false;               // by SIGINT/SIGTERM: a checkpoint was saved
  std::vector<double> losses;             // each step's loss (NaN for a skipped step)
};

// What a validation tier reports: its metrics.jsonl fields (besides step and tier), its
// TensorBoard scalars in order, a line for the log ("": none), and for the full tier the SSIM
// that picks the best checkpoint.
struct TierScores {
  nlohmann::json fields = nlohmann::json::object();
  std::vector<std::pair<std::string, double>> scalars;
  std::string message;
  double ssim = std::numeric_limits<double>::quiet_NaN();
};

class Task {
 public:
  virtual ~Task() = default;
  virtual TrainingState& training_state() = 0;
  // One optimiser step (state().step counts it); its loss, NaN when it was skipped.
  virtual double step() = 0;
  // What the training lines average over log_every, and the last finite step's values of them.
  virtual std::vector<std::string> metric_names() const = 0;
  virtual std::vector<double> metric_values() const = 0;
  virtual double learning_rate(int64_t step) const = 0;  // of 0-based step `step`
  virtual double grad_norm() const = 0;                  // of the last step
  virtual std::string progress_text(double loss) const = 0;  // "loss 0.01234  lr 2e-4"
  virtual std::string describe() const = 0;  // logged when run() starts (lines)
  // The tiers; collective over the ranks.
  virtual TierScores light_validation() = 0;
  virtual TierScores full_validation() = 0;
  // Writes the checkpoint at `path` with `state` (collective; rank 0 writes), or loads one into
  // the task, returning its metadata.
  virtual void write_checkpoint(const std::filesystem::path& path, const TrainingState& state) = 0;
  virtual CheckpointInfo read_checkpoint(const std::filesystem::path& path) = 0;
  virtual uint64_t seed() const = 0;
  virtual std::string config_yaml() const = 0;  // OUTPUT/config.yaml
};

class Run {
 public:
  Run(Task& task, const std::filesystem::path& out_dir, const RunSchedule& schedule, const RunOptions& options);
  ~Run();
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  // The checkpoint a --resume value names (checkpoint_to_resume: "", "auto" or a path); rank 0
  // looks and every rank takes its answer. For "" and "auto", rank 0 first takes the folder's
  // lock when the folder exists (a folder in use is an error naming the holder's PID).
  std::optional<std::filesystem::path> resume_point(const std::string& resume);
  // The same, and the checkpoint found must be of `kind` and the task's seed: checked from its
  // metadata alone, so that a task can refuse it before reading its data.
  std::optional<std::filesystem::path> resume_point(const std::string& resume, const std::string& kind);
  // Takes the folder's lock (rank 0; creating the folder), removes stale temporaries, loads `from`
  // into the task (its seed must be the task's), then opens the outputs: config.yaml,
  // metrics.jsonl without the lines of steps after the checkpoint, tensorboard/.
  void start(const std::optional<std::filesystem::path>& from);
  // Trains to max_steps, or until SIGINT/SIGTERM.
  RunSummary run();
  // The step's checkpoint, then the retention; every checkpoint is written here.
  std::filesystem::path save_checkpoint();
  // A step whose loss or gradient norm is not finite (the task counted it in state().step
  // already): records it (record_skipped_step), logs it, writes its metrics line, throws once
  // max_consecutive came in a row; returns NaN, the step's loss.
  double skip_step(double loss, double grad_norm, int64_t max_consecutive);

  Communicator& comm() { return *comm_; }
  bool is_root() const { return comm_->rank() == 0; }
  const std::filesystem::path& out_dir() const { return out_dir_; }
  void log(const std::string& text);  // rank 0
  void write_metrics(const nlohmann::json& line);  // rank 0, once started
  void add_scalar(const std::string& tag, double value, int64_t step);
  TensorBoardWriter* tensorboard() { return tensorboard_.get(); }  // rank 0, once started

 private:
  void validate(int64_t step);
  void lock_folder();  // rank 0; once
  void check_seed(uint64_t seed, const std::filesystem::path& checkpoint) const;

  Task& task_;
  std::filesystem::path out_dir_;
  RunSchedule schedule_;
  RunOptions options_;
  std::unique_ptr<Communicator> own_comm_;
  Communicator* comm_ = nullptr;
  std::unique_ptr<io::FolderLock> lock_;
  std::unique_ptr<MetricsLog> metrics_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
  int64_t last_saved_ = -1;  // the step of the last checkpoint written
};

}  // namespace ctsr::train
