#include "train/run_support.h"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <sstream>

#include "runtime/error.h"

namespace ctsr::train {

namespace {
std::atomic<int> g_signal{0};
extern "C" void on_stop_signal(int signal) { g_signal.store(signal); }
}  // namespace

StopSignals::StopSignals() {
  g_signal.store(0);
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &action, &old_int_);
  sigaction(SIGTERM, &action, &old_term_);
}

StopSignals::~StopSignals() {
  sigaction(SIGINT, &old_int_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
}

int StopSignals::received() const { return g_signal.load(); }

const char* StopSignals::name(int signal) { return signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "a signal"; }

Tensor scalar_on(double value, Device device) { return Tensor::from_vector(std::vector<float>{float(value)}, {1}, device); }
double host_value(const Tensor& t) { return double(t.to(Device::cpu()).to_vector<float>()[0]); }

std::string format_seconds(double seconds) {
  char buffer[32];
  if (seconds < 1.0)
    std::snprintf(buffer, sizeof buffer, "%.0f ms", seconds * 1e3);
  else
    std::snprintf(buffer, sizeof buffer, "%.1f s", seconds);
  return buffer;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buffer[32];
  if (s >= 3600)
    std::snprintf(buffer, sizeof buffer, "%lldh%02lldm", (long long)(s / 3600), (long long)(s / 60 % 60));
  else if (s >= 60)
    std::snprintf(buffer, sizeof buffer, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
  else
    std::snprintf(buffer, sizeof buffer, "%llds", (long long)s);
  return buffer;
}

ProgressLine::ProgressLine(std::ostream& out, bool enabled)
    : out_(out), enabled_(enabled), tty_(enabled && isatty(STDERR_FILENO)) {}

void ProgressLine::update(int64_t step, int64_t steps, const std::string& quantities, double samples_per_s,
                          double seconds_per_step, bool force_line) {
  if (!enabled_ || (!tty_ && !force_line)) return;
  char line[256];
  std::snprintf(line, sizeof line, "step %lld/%lld  %s  %.1f samples/s  ETA %s", static_cast<long long>(step),
                static_cast<long long>(steps), quantities.c_str(), samples_per_s,
                format_duration(seconds_per_step * double(steps - step)).c_str());
  if (tty_) {
    out_ << "\r" << line << "\x1b[K" << std::flush;
    open_ = true;
  } else {
    out_ << line << std::endl;
  }
}

void ProgressLine::end() {
  if (open_) out_ << std::endl;
  open_ = false;
}

SkippedStep record_skipped_step(TrainingState& state, double loss, double grad_norm, int64_t max_consecutive) {
  ++state.skipped_steps;
  ++state.consecutive_skips;
  const bool loss_bad = !std::isfinite(loss);
  SkippedStep s;
  s.step = state.step;
  s.consecutive = state.consecutive_skips;
  s.max_consecutive = max_consecutive;
  std::ostringstream text;
  text << "step " << state.step << ": " << (loss_bad ? "loss" : "gradient norm") << " is "
       << (loss_bad ? loss : grad_norm) << "; the update is skipped (" << state.consecutive_skips
       << " in a row, training.max_consecutive_skips " << max_consecutive << ")";
  s.message = text.str();
  s.metrics = {{"step", state.step}, {"skipped", true}, {"loss", loss_bad ? -1.0 : loss},
               {"reason", loss_bad ? "loss" : "grad_norm"}};
  return s;
}

void SkippedStep::throw_if_too_many() const {
  CTSR_CHECK(consecutive < max_consecutive, "training aborted at step ", step, ": ", consecutive,
             " steps in a row had a NaN or Inf loss or gradient (training.max_consecutive_skips ", max_consecutive,
             "); check the data and lower training.learning_rate");
}

AdamMoments::AdamMoments(const std::vector<Parameter*>& params, Device device) {
  for (const Parameter* p : params) {
    m_.push_back(Tensor::zeros(p->value.shape(), p->value.dtype(), device));
    v_.push_back(Tensor::zeros(p->value.shape(), p->value.dtype(), device));
  }
}

std::vector<Tensor*> AdamMoments::pointers(std::vector<Tensor>& tensors) {
  std::vector<Tensor*> out;
  for (Tensor& t : tensors) out.push_back(&t);
  return out;
}

double AdamMoments::gradient_norm(const std::vector<Parameter*>& params) {
  std::vector<const Tensor*> grads;
  for (const Parameter* p : params) grads.push_back(&p->grad);
  return global_grad_norm(grads);
}

void AdamMoments::update(const std::vector<Parameter*>& params, double norm, double max_norm, const AdamWConfig& adam,
                         int64_t t) {
  CTSR_CHECK(params.size() == m_.size(), "AdamMoments::update: ", params.size(), " parameters, moments for ", m_.size());
  std::vector<Tensor*> values, grads;
  std::vector<const Tensor*> const_grads;
  for (Parameter* p : params) {
    values.push_back(&p->value);
    grads.push_back(&p->grad);
    const_grads.push_back(&p->grad);
  }
  if (max_norm > 0) {
    const double coefficient = kernels::clip_coefficient(norm, max_norm);
    if (float(coefficient) < 1.0f) scale_in_place(grads, coefficient);
  }
  adamw_step(values, const_grads, pointers(m_), pointers(v_), adam, t);
}

}  // namespace ctsr::train
