#include "tools/common/progress.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>

#include <unistd.h>

namespace ctsr::tools {

namespace {

constexpr std::size_t kBarCells = 20;

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

bool stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0.0) seconds = 0.0;
  // Capped so that an absurd estimate stays a short, finite text (99999:59:59).
  const int64_t total = static_cast<int64_t>(std::min(seconds, 99999.0 * 3600.0 + 3599.0));
  const int64_t h = total / 3600, m = (total / 60) % 60, s = total % 60;
  char buffer[48];
  if (h > 0)
    std::snprintf(buffer, sizeof buffer, "%lld:%02lld:%02lld", static_cast<long long>(h), static_cast<long long>(m),
                  static_cast<long long>(s));
  else
    std::snprintf(buffer, sizeof buffer, "%lld:%02lld", static_cast<long long>(m), static_cast<long long>(s));
  return buffer;
}

std::string ProgressBar::render(const std::string& label, double fraction, double elapsed_seconds) {
  const double f = std::isfinite(fraction) ? std::clamp(fraction, 0.0, 1.0) : 0.0;
  const double elapsed = std::isfinite(elapsed_seconds) ? std::max(elapsed_seconds, 0.0) : 0.0;
  const auto cells = std::min(kBarCells, static_cast<std::size_t>(f * double(kBarCells)));
  const int percent = std::min(100, static_cast<int>(f * 100.0));
  const bool estimable = f > 0.0 && (f > 0.01 || elapsed >= 1.0);
  const std::string eta = estimable ? format_duration(elapsed * (1.0 - f) / f) : std::string("--");
  const std::string tail = " [" + std::string(cells, '#') + std::string(kBarCells - cells, '.') + "] " +
                           std::to_string(percent) + "% " + format_duration(elapsed) + " elapsed, ETA " + eta;
  // The label gives way: cut, with "..." where there is room for it, so the line fits.
  std::string shown = label;
  for (char& c : shown)
    if (c == '\r' || c == '\n' || c == '\t') c = ' ';
  const std::size_t room = kMaxColumns > tail.size() ? kMaxColumns - tail.size() : 0;
  if (shown.size() > room) shown = room >= 4 ? shown.substr(0, room - 3) + "..." : shown.substr(0, room);
  return shown + tail;
}

ProgressBar::ProgressBar(std::ostream& out, bool enabled, std::function<double()> clock)
    : out_(out), enabled_(enabled), clock_(clock ? std::move(clock) : std::function<double()>(steady_seconds)) {
  start_ = clock_();
}

ProgressBar::~ProgressBar() {
  try {
    finish();
  } catch (...) {
    // A destructor does not throw (a stream set to throw on failure).
  }
}

void ProgressBar::update(const std::string& label, double fraction) {
  if (!enabled_) return;
  if (std::isfinite(fraction)) fraction_ = std::max(fraction_, std::clamp(fraction, 0.0, 1.0));
  const double now = clock_();
  const bool label_changed = !drawn_ || label != last_label_;
  const bool reached_end = fraction_ >= 1.0 && last_fraction_drawn_ < 1.0;
  if (!label_changed && !reached_end && now - last_draw_ < kMinRedrawSeconds) return;

  const std::string line = render(label, fraction_, now - start_);
  out_ << '\r' << line;
  if (line.size() < last_width_) out_ << std::string(last_width_ - line.size(), ' ');
  out_ << std::flush;
  last_width_ = line.size();
  last_label_ = label;
  last_draw_ = now;
  last_fraction_drawn_ = fraction_;
  drawn_ = true;
}

void ProgressBar::finish() {
  if (!enabled_ || !drawn_) return;
  drawn_ = false;
  last_width_ = 0;
  last_fraction_drawn_ = -1.0;
  out_ << '\n' << std::flush;
}

}  // namespace ctsr::tools
