#include "runtime/stream.h"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string_view>
#include <vector>

#include "runtime/error.h"

#if CTSR_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "runtime/cuda_check.h"
#endif

namespace ctsr {

namespace {
std::atomic<bool>& sync_launches_flag() {
  static std::atomic<bool> on{parse_sync_launches(std::getenv("CTSR_SYNC_LAUNCHES"))};
  return on;
}
}  // namespace

bool parse_sync_launches(const char* value) {
  const std::string_view v = value ? value : "";
  if (v.empty() || v == "0") return false;
  CTSR_CHECK(v == "1", "CTSR_SYNC_LAUNCHES='", v, "': expected 1 (wait for every kernel launch) or 0");
  return true;
}
bool sync_launches() { return sync_launches_flag().load(std::memory_order_relaxed); }
void set_sync_launches(bool on) { sync_launches_flag() = on; }

Stream Stream::current(Device d) {
  if (d.kind != DeviceKind::cuda) return Stream(d, nullptr);
#if CTSR_HAVE_CUDA
  thread_local std::vector<void*> streams;
  if (streams.size() <= static_cast<size_t>(d.index)) streams.resize(d.index + 1, nullptr);
  if (!streams[d.index]) {
    CTSR_CUDA_CALL(cudaSetDevice(d.index));
    cudaStream_t s;
    CTSR_CUDA_CALL(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    streams[d.index] = s;
  }
  return Stream(d, streams[d.index]);
#else
  CTSR_FAIL("stream on ", d.str(), ": ctsr was built without CUDA");
#endif
}

void Stream::synchronize() const {
#if CTSR_HAVE_CUDA
  if (handle_) CTSR_CUDA_CALL(cudaStreamSynchronize(static_cast<cudaStream_t>(handle_)));
#endif
}

Event::Event(Device d) : device_(d) {
#if CTSR_HAVE_CUDA
  if (d.kind == DeviceKind::cuda) {
    CTSR_CUDA_CALL(cudaSetDevice(d.index));
    cudaEvent_t e;
    CTSR_CUDA_CALL(cudaEventCreate(&e));
    handle_ = e;
  }
#endif
}

Event::~Event() {
#if CTSR_HAVE_CUDA
  if (handle_) cudaEventDestroy(static_cast<cudaEvent_t>(handle_));
#endif
}

void Event::record() {
#if CTSR_HAVE_CUDA
  if (handle_) {
    CTSR_CUDA_CALL(cudaEventRecord(static_cast<cudaEvent_t>(handle_),
                                   static_cast<cudaStream_t>(Stream::current(device_).handle())));
    return;
  }
#endif
  host_time_ = std::chrono::steady_clock::now();
}

void Event::synchronize() const {
#if CTSR_HAVE_CUDA
  if (handle_) CTSR_CUDA_CALL(cudaEventSynchronize(static_cast<cudaEvent_t>(handle_)));
#endif
}

float Event::elapsed_ms(const Event& start) const {
#if CTSR_HAVE_CUDA
  if (handle_) {
    float ms = 0;
    CTSR_CUDA_CALL(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start.handle_), static_cast<cudaEvent_t>(handle_)));
    return ms;
  }
#endif
  return std::chrono::duration<float, std::milli>(host_time_ - start.host_time_).count();
}

}  // namespace ctsr
