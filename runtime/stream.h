// Streams and events. On a GPU they wrap cudaStream_t and cudaEvent_t. ctsr enqueues all of a
// device's work on that device's current stream (the caching allocator relies on it). On the
// cpu and cuda_on_cpu devices work runs synchronously: a stream is a null handle and an event
// records the host clock, so timing code is the same on every device.
#pragma once

#include <chrono>

#include "runtime/device.h"

namespace ctsr {

class Stream {
 public:
  // The calling thread's stream for `device` (created on first use for a GPU; never the legacy
  // default stream, so it does not serialise with other libraries' work).
  static Stream current(Device device);
  void* handle() const { return handle_; }  // cudaStream_t, or nullptr off the GPU
  Device device() const { return device_; }
  void synchronize() const;

 private:
  Stream(Device d, void* h) : device_(d), handle_(h) {}
  Device device_;
  void* handle_;
};

// CTSR_SYNC_LAUNCHES=1: every GPU kernel launch waits for its kernel and checks for errors, so that
// a fault is reported by the launch that caused it, naming the kernel, grid and block (slow; for
// debugging). The variable is read once, on first use; unset, empty or 0 is off, 1 is on, anything
// else an error. On the CUDA-on-CPU executor launches are always synchronous.
bool sync_launches();
void set_sync_launches(bool on);  // overrides the variable (tests)
bool parse_sync_launches(const char* value);  // the variable's value (nullptr: unset) -> on

class Event {
 public:
  explicit Event(Device device);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record();                                 // on the device's current stream
  void synchronize() const;
  float elapsed_ms(const Event& start) const;    // this - start, both recorded and complete

 private:
  Device device_;
  void* handle_ = nullptr;  // cudaEvent_t on a GPU
  std::chrono::steady_clock::time_point host_time_{};
};

}  // namespace ctsr
