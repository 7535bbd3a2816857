// What every training program shares around its loop: SIGINT/SIGTERM handling for a clean stop
// (a cluster's pre-emption), the terminal progress line, and the bookkeeping of a step skipped
// for a NaN or Inf loss or gradient.
#pragma once

#include <csignal>
#include <cstdint>
#include <iosfwd>
#include <string>

#include <nlohmann/json.hpp>

#include "kernels/optimizer.h"
#include "model/module.h"
#include "train/checkpoint.h"

namespace ctsr::train {

// Installs SIGINT/SIGTERM handlers for its lifetime; received() is the signal (0: none). A second
// signal, while the checkpoint is written, falls back to the default action (the process ends).
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  int received() const;
  static const char* name(int signal);  // "SIGINT", "SIGTERM"

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

// "42s", "3m05s", "2h07m"; "?" for a negative or non-finite time.
std::string format_duration(double seconds);
// "12.3 s", "850 ms": a short time, for progress lines and reports.
std::string format_seconds(double seconds);
// A one-element float32 tensor on `device`, and the value of one back on the host (losses).
Tensor scalar_on(double value, Device device);
double host_value(const Tensor& t);

// The progress line: rewritten in place on a terminal, one line per call otherwise.
class ProgressLine {
 public:
  explicit ProgressLine(std::ostream& out, bool enabled);
  // step/steps, the quantities to show ("loss 0.0123  lr 2e-4"), samples per second and the ETA
  // from the seconds one step takes.
  void update(int64_t step, int64_t steps, const std::string& quantities, double samples_per_s,
              double seconds_per_step, bool force_line);
  void end();  // finishes a line left open on a terminal
  bool terminal() const { return tty_; }

 private:
  std::ostream& out_;
  bool enabled_, tty_;
  bool open_ = false;
};

// A step whose loss or gradient norm is not finite: record_skipped_step counts it in `state`
// (state.step already counts the step) and says what to log and what to write to metrics.jsonl;
// throw_if_too_many then ends the run once training.max_consecutive_skips came in a row.
struct SkippedStep {
  std::string message;   // "step 12: loss is nan; the update is skipped (1 in a row, ...)"
  nlohmann::json metrics;  // {"step", "skipped": true, "loss" (-1 when not finite), "reason"}
  int64_t step = 0, consecutive = 0, max_consecutive = 0;
  void throw_if_too_many() const;
};
SkippedStep record_skipped_step(TrainingState& state, double loss, double grad_norm, int64_t max_consecutive);

// Adam's moments for a module's parameters (one pair per parameter, zeros, on `device`), and the
// update of a single-process task: clipping (torch's clip_grad_norm_: the gradients scaled by
// max_norm / (norm + 1e-6) when that is below 1; max_norm 0: none), then adamw_step with step
// count t. The checkpoints save m and v under adam_m/ and adam_v/.
class AdamMoments {
 public:
  AdamMoments(const std::vector<Parameter*>& params, Device device);
  std::vector<Tensor*> m() { return pointers(m_); }
  std::vector<Tensor*> v() { return pointers(v_); }
  // The global L2 norm of the parameters' gradients.
  static double gradient_norm(const std::vector<Parameter*>& params);
  void update(const std::vector<Parameter*>& params, double norm, double max_norm, const AdamWConfig& adam, int64_t t);

 private:
  static std::vector<Tensor*> pointers(std::vector<Tensor>& tensors);
  std::vector<Tensor> m_, v_;
};

}  // namespace ctsr::train
