// A one-line terminal progress bar with an ETA, for long-running programs (ctsr_infer):
//
//   encode [##########..........]  42% 0:37 elapsed, ETA 0:51
//
// The line is rewritten in place with '\r', so it is for terminals only: programs pass
// stderr_is_terminal() as `enabled`, and a disabled bar writes nothing at all (logs and pipes stay
// clean). The clock is injectable so that the tests can drive the rate limit and the ETA.
#pragma once

#include <cstddef>
#include <functional>
#include <ostream>
#include <string>

namespace ctsr::tools {

// true when stderr is a terminal (isatty(2)).
bool stderr_is_terminal();

// Seconds as "m:ss", or "h:mm:ss" from one hour on (negative or non-finite: "0:00"). Rounds down.
std::string format_duration(double seconds);

class ProgressBar {
 public:
  // The widest line drawn (columns), the label truncated to fit.
  static constexpr std::size_t kMaxColumns = 79;
  // The least time between two redraws of the same label, in seconds of the clock.
  static constexpr double kMinRedrawSeconds = 0.25;

  // enabled false: prints nothing at all. `clock` returns seconds (default: steady_clock); tests
  // pass a fake one. Elapsed time counts from construction.
  explicit ProgressBar(std::ostream& out, bool enabled, std::function<double()> clock = {});
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // `label` names the stage ("encode", "sample step 3/20", "decode"); `fraction` in [0,1] is the
  // whole job's progress (clamped to [0,1], and never below a previous value). Redraws one line
  // with '\r' at most every kMinRedrawSeconds of the clock, and always when the label changes or
  // the fraction reaches 1. ETA = elapsed*(1-f)/f, shown as "ETA --" until f > 0.01 or 1 s has
  // elapsed. Pads with spaces to clear the previous, longer line; never exceeds kMaxColumns.
  void update(const std::string& label, double fraction);
  // Ends the line (one newline) if anything was drawn since the last finish(); idempotent; also
  // called by the destructor. A later update() starts a new line.
  void finish();

  // The line update() would draw for this state (without '\r' or padding); for the tests.
  static std::string render(const std::string& label, double fraction, double elapsed_seconds);

 private:
  std::ostream& out_;
  bool enabled_;
  std::function<double()> clock_;
  double start_ = 0.0;
  double last_draw_ = 0.0;
  double fraction_ = 0.0;
  double last_fraction_drawn_ = -1.0;
  bool drawn_ = false;  // a line is open (drawn since the last finish)
  std::string last_label_;
  std::size_t last_width_ = 0;
};

}  // namespace ctsr::tools
