// What every training program shares around its loop: SIGINT/SIGTERM handling for a clean stop
// (a cluster's pre-emption), and the terminal progress line.
#pragma once

#include <csignal>
#include <cstdint>
#include <iosfwd>
#include <string>

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

}  // namespace ctsr::train
