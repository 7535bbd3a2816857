// The NCCL backend of runtime/communicator.h (built with CUDA and NCCL). Reductions run on a
// stream of their own: start_* makes it wait for the work already queued on the device's current
// stream, so backward kernels keep
// running while a bucket of gradients is reduced; wait() returns once the reduction is complete
// (it polls, so a peer that never joins is noticed). Host-side collectives go to the MPI
// communicator this one wraps; rank 0's NCCL unique id reaches the others through it.
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "runtime/communicator.h"
#include "runtime/cuda_check.h"
#include "runtime/error.h"
#include "runtime/stream.h"

namespace ctsr {

namespace {

void check_nccl(ncclResult_t result, const char* call) {
  CTSR_CHECK(result == ncclSuccess, call, " failed: ", ncclGetErrorString(result));
}

class Nccl : public Communicator {
 public:
  Nccl(std::unique_ptr<Communicator> host, double timeout) : host_(std::move(host)), timeout_(timeout) {
    info_ = host_->info();
    ncclUniqueId id;
    if (rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    std::string bytes(reinterpret_cast<const char*>(&id), sizeof id);
    host_->broadcast_string(bytes, 0);
    std::memcpy(&id, bytes.data(), sizeof id);
    check_nccl(ncclCommInitRank(&comm_, size(), id, rank()), "ncclCommInitRank");
    CTSR_CUDA_CALL(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~Nccl() override {
    ncclCommDestroy(comm_);
    cudaStreamDestroy(stream_);
  }
  const char* backend() const override { return "nccl"; }

  struct Request : Pending {
    Request(Nccl* owner, const char* what) : owner(owner), what(what) {
      CTSR_CUDA_CALL(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    }
    ~Request() override { cudaEventDestroy(done); }
    // Polls, so a peer that never joins (dead or hung) ends the job after the timeout instead of
    // blocking this rank in a CUDA call forever; NCCL's own asynchronous errors end it at once.
    void wait() override {
      const auto start = std::chrono::steady_clock::now();
      for (;;) {
        const cudaError_t state = cudaEventQuery(done);
        if (state == cudaSuccess) break;
        CTSR_CHECK(state == cudaErrorNotReady, what, ": ", cudaGetErrorString(state));
        ncclResult_t async = ncclSuccess;
        ncclCommGetAsyncError(owner->comm_, &async);
        const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (async != ncclSuccess || waited > owner->timeout_) {
          std::fprintf(stderr, "ctsr: rank %d: %s %s after %.0f s (distributed.timeout_s %.0f); ending the job\n",
                       owner->rank(), what, async != ncclSuccess ? ncclGetErrorString(async) : "has not completed",
                       waited, owner->timeout_);
          std::fflush(stderr);
          ncclCommAbort(owner->comm_);
          std::_Exit(1);
        }
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
    Nccl* owner;
    const char* what;
    cudaEvent_t done{};
  };

  // The reduction stream waits for what the current stream has queued (the gradients).
  std::unique_ptr<Request> begin(const Tensor& t, const char* what) {
    CTSR_CHECK(t.device().kind == DeviceKind::cuda, what, " (NCCL): tensor is on ", t.device().str(), ", expected a GPU");
    CTSR_CHECK(t.dtype() == DType::float32, what, " (NCCL): tensor is ", dtype_name(t.dtype()), ", expected float32");
    auto r = std::make_unique<Request>(this, what);
    cudaEvent_t ready;
    CTSR_CUDA_CALL(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    CTSR_CUDA_CALL(cudaEventRecord(ready, static_cast<cudaStream_t>(Stream::current(t.device()).handle())));
    CTSR_CUDA_CALL(cudaStreamWaitEvent(stream_, ready, 0));
    cudaEventDestroy(ready);
    return r;
  }
  std::unique_ptr<Pending> end(std::unique_ptr<Request> r) {
    CTSR_CUDA_CALL(cudaEventRecord(r->done, stream_));
    return r;
  }

  std::unique_ptr<Pending> start_all_reduce_sum(Tensor& t) override {
    auto r = begin(t, "all_reduce");
    check_nccl(ncclAllReduce(t.raw_data(), t.raw_data(), size_t(t.numel()), ncclFloat, ncclSum, comm_, stream_),
               "ncclAllReduce");
    return end(std::move(r));
  }
  std::unique_ptr<Pending> start_reduce_scatter_sum(const Tensor& full, Tensor& shard) override {
    CTSR_CHECK(full.numel() == shard.numel() * size(), "reduce_scatter: ", full.numel(), " elements do not split into ",
               size(), " shards of ", shard.numel());
    auto r = begin(full, "reduce_scatter");
    check_nccl(ncclReduceScatter(full.raw_data(), shard.raw_data(), size_t(shard.numel()), ncclFloat, ncclSum, comm_,
                                 stream_),
               "ncclReduceScatter");
    return end(std::move(r));
  }
  std::unique_ptr<Pending> start_all_gather(const Tensor& shard, Tensor& full) override {
    CTSR_CHECK(full.numel() == shard.numel() * size(), "all_gather: ", full.numel(), " elements are not ", size(),
               " shards of ", shard.numel());
    auto r = begin(shard, "all_gather");
    check_nccl(ncclAllGather(shard.raw_data(), full.raw_data(), size_t(shard.numel()), ncclFloat, comm_, stream_),
               "ncclAllGather");
    return end(std::move(r));
  }
  void broadcast(Tensor& t, int root) override {
    auto r = begin(t, "broadcast");
    check_nccl(ncclBroadcast(t.raw_data(), t.raw_data(), t.nbytes(), ncclUint8, root, comm_, stream_), "ncclBroadcast");
    end(std::move(r))->wait();
  }
  void all_reduce_sum(std::vector<double>& v) override { host_->all_reduce_sum(v); }
  void all_reduce_max(std::vector<double>& v) override { host_->all_reduce_max(v); }
  void broadcast_string(std::string& text, int root) override { host_->broadcast_string(text, root); }
  void barrier() override { host_->barrier(); }

 private:
  std::unique_ptr<Communicator> host_;
  double timeout_;
  ncclComm_t comm_{};
  cudaStream_t stream_{};
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> mpi, double timeout) {
  return std::make_unique<Nccl>(std::move(mpi), timeout);
}

}  // namespace ctsr
