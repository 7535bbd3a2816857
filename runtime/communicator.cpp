#include "runtime/communicator.h"

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>

#include "runtime/error.h"
#include "runtime/stream.h"

#if CTSR_HAVE_MPI
#include <mpi.h>
#endif

namespace ctsr {

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return (end && *end == '\0') ? static_cast<int>(n) : fallback;
}

class SingleProcess : public Communicator {
 public:
  SingleProcess() { info_ = LauncherInfo{}; }
  const char* backend() const override { return "single"; }
  struct Done : Pending {
    void wait() override {}
  };
  std::unique_ptr<Pending> start_all_reduce_sum(Tensor&) override { return std::make_unique<Done>(); }
  std::unique_ptr<Pending> start_reduce_scatter_sum(const Tensor& full, Tensor& shard) override {
    CTSR_CHECK(full.numel() == shard.numel(), "reduce_scatter: ", full.numel(), " elements do not split into 1 shard of ",
               shard.numel());
    if (full.raw_data() != shard.raw_data()) shard.copy_from(full.reshape(shard.shape()));
    return std::make_unique<Done>();
  }
  std::unique_ptr<Pending> start_all_gather(const Tensor& shard, Tensor& full) override {
    return start_reduce_scatter_sum(shard, full);
  }
  void broadcast(Tensor&, int) override {}
  void all_reduce_sum(std::vector<double>&) override {}
  void all_reduce_max(std::vector<double>&) override {}
  void broadcast_string(std::string&, int) override {}
  void barrier() override {}
};

}  // namespace

LauncherInfo launcher_info() {
  LauncherInfo i;
  if (std::getenv("OMPI_COMM_WORLD_SIZE")) {
    i.launcher = "mpirun";
    i.size = env_int("OMPI_COMM_WORLD_SIZE", 1);
    i.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    i.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
    i.local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1);
  } else if (std::getenv("SLURM_STEP_NUM_TASKS") && std::getenv("SLURM_PROCID")) {
    // srun sets the step's variables; a batch script's own shell (no srun) has none of them.
    i.launcher = "srun";
    i.size = env_int("SLURM_STEP_NUM_TASKS", 1);
    i.rank = env_int("SLURM_PROCID", 0);
    i.local_rank = env_int("SLURM_LOCALID", 0);
    i.local_size = 0;  // from MPI once it runs
  } else if (std::getenv("PMI_SIZE") && std::getenv("PMI_RANK")) {
    i.launcher = "pmi";
    i.size = env_int("PMI_SIZE", 1);
    i.rank = env_int("PMI_RANK", 0);
    i.local_rank = env_int("MPI_LOCALRANKID", 0);
    i.local_size = env_int("MPI_LOCALNRANKS", 0);
  }
  return i;
}

std::unique_ptr<Communicator> make_single_process_communicator() { return std::make_unique<SingleProcess>(); }

#if CTSR_HAVE_MPI

namespace {

// Ends a job whose collective never completes (a dead or hung peer), rather than hang forever.
class Watchdog {
 public:
  explicit Watchdog(double timeout, int rank) : timeout_(timeout), rank_(rank), thread_([this] { run(); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }
  void enter(const char* what) {
    std::lock_guard<std::mutex> lock(mutex_);
    what_ = what;
    since_ = std::chrono::steady_clock::now();
    active_ = true;
  }
  void leave() {
    std::lock_guard<std::mutex> lock(mutex_);
    active_ = false;
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
      changed_.wait_for(lock, std::chrono::milliseconds(500));
      if (!active_) continue;
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - since_).count();
      if (waited > timeout_) {
        std::fprintf(stderr,
                     "ctsr: rank %d: %s has waited %.0f s for the other ranks (distributed.timeout_s %.0f); another "
                     "rank has died or hangs; ending the job (resume with --resume auto)\n",
                     rank_, what_, waited, timeout_);
        std::fflush(stderr);
        int level = 0;
        MPI_Query_thread(&level);
        if (level == MPI_THREAD_MULTIPLE) MPI_Abort(MPI_COMM_WORLD, 1);
        std::_Exit(1);
      }
    }
  }
  double timeout_;
  int rank_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stopping_ = false, active_ = false;
  const char* what_ = "";
  std::chrono::steady_clock::time_point since_;
  std::thread thread_;
};

void check_mpi(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  CTSR_FAIL(call, " failed: ", std::string(text, size_t(length)));
}

// MPI stays initialised for the life of the process; finalised at exit.
struct MpiSession {
  MpiSession() {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) {
      int provided = 0;
      check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
      owned = true;
    }
  }
  ~MpiSession() {
    int finalised = 0;
    MPI_Finalized(&finalised);
    if (owned && !finalised) MPI_Finalize();
  }
  bool owned = false;
};

MpiSession& mpi_session() {
  static MpiSession session;
  return session;
}

int checked_count(const Tensor& t, const char* op) {
  CTSR_CHECK(t.dtype() == DType::float32, op, ": tensor is ", dtype_name(t.dtype()), ", expected float32");
  CTSR_CHECK(t.numel() <= INT_MAX, op, ": ", t.numel(), " elements are more than one MPI call takes (", INT_MAX, ")");
  return static_cast<int>(t.numel());
}

class Mpi : public Communicator {
 public:
  Mpi(const LauncherInfo& launcher, double timeout) {
    mpi_session();
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    info_ = launcher;
    MPI_Comm_rank(comm_, &info_.rank);
    MPI_Comm_size(comm_, &info_.size);
    MPI_Comm local;
    MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, info_.rank, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &info_.local_rank);
    MPI_Comm_size(local, &info_.local_size);
    MPI_Comm_free(&local);
    watchdog_ = std::make_unique<Watchdog>(timeout, info_.rank);
  }
  ~Mpi() override {
    watchdog_.reset();
    int finalised = 0;
    MPI_Finalized(&finalised);
    if (!finalised) MPI_Comm_free(&comm_);
  }
  const char* backend() const override { return "mpi"; }

  struct Request : Pending {
    Request(Mpi* owner, const char* what) : owner(owner), what(what) {}
    ~Request() override {
      if (request != MPI_REQUEST_NULL) MPI_Wait(&request, MPI_STATUS_IGNORE);
    }
    void wait() override {
      owner->watchdog_->enter(what);
      check_mpi(MPI_Wait(&request, MPI_STATUS_IGNORE), what);
      owner->watchdog_->leave();
      finish();
    }
    std::function<void()> finish = [] {};
    Mpi* owner;
    const char* what;
    MPI_Request request = MPI_REQUEST_NULL;
  };

  // Tensors in GPU memory go through host copies (no NCCL in this build, or an MPI-only run).
  struct Staged {
    Tensor host;
    bool copied = false;
  };
  static Staged on_host(const Tensor& t) {
    if (t.device().is_host_memory()) return {t, false};
    return {t.to(Device::cpu()), true};
  }

  std::unique_ptr<Pending> start_all_reduce_sum(Tensor& t) override {
    const int n = checked_count(t, "all_reduce");
    auto r = std::make_unique<Request>(this, "all_reduce");
    Staged s = on_host(t);
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, s.host.raw_data(), n, MPI_FLOAT, MPI_SUM, comm_, &r->request), "MPI_Iallreduce");
    if (s.copied) r->finish = [s, &t]() mutable { t.copy_from(s.host); };
    return r;
  }
  std::unique_ptr<Pending> start_reduce_scatter_sum(const Tensor& full, Tensor& shard) override {
    const int n = checked_count(shard, "reduce_scatter");
    CTSR_CHECK(full.numel() == shard.numel() * size(), "reduce_scatter: ", full.numel(), " elements do not split into ",
               size(), " shards of ", shard.numel());
    auto r = std::make_unique<Request>(this, "reduce_scatter");
    Staged in = on_host(full), out = on_host(shard);
    check_mpi(MPI_Ireduce_scatter_block(in.host.raw_data(), out.host.raw_data(), n, MPI_FLOAT, MPI_SUM, comm_,
                                        &r->request),
              "MPI_Ireduce_scatter_block");
    if (out.copied) r->finish = [in, out, &shard]() mutable { shard.copy_from(out.host); };
    else r->finish = [in] {};  // keeps a staged input alive until the reduction is done
    return r;
  }
  std::unique_ptr<Pending> start_all_gather(const Tensor& shard, Tensor& full) override {
    const int n = checked_count(shard, "all_gather");
    CTSR_CHECK(full.numel() == shard.numel() * size(), "all_gather: ", full.numel(), " elements are not ", size(),
               " shards of ", shard.numel());
    auto r = std::make_unique<Request>(this, "all_gather");
    // In place when the shard is this rank's part of `full` (MPI wants MPI_IN_PLACE then).
    const bool in_place = shard.device().is_host_memory() && full.device().is_host_memory() &&
                          shard.raw_data() == static_cast<const float*>(full.raw_data()) + int64_t(n) * rank();
    Staged in = in_place ? Staged{shard, false} : on_host(shard), out = on_host(full);
    check_mpi(MPI_Iallgather(in_place ? MPI_IN_PLACE : in.host.raw_data(), n, MPI_FLOAT, out.host.raw_data(), n,
                             MPI_FLOAT, comm_, &r->request),
              "MPI_Iallgather");
    if (out.copied) r->finish = [in, out, &full]() mutable { full.copy_from(out.host); };
    else r->finish = [in] {};
    return r;
  }
  void broadcast(Tensor& t, int root) override {
    CTSR_CHECK(t.nbytes() <= size_t(INT_MAX), "broadcast: ", t.nbytes(), " bytes are more than one MPI call takes");
    Staged s = on_host(t);
    watchdog_->enter("broadcast");
    check_mpi(MPI_Bcast(s.host.raw_data(), int(t.nbytes()), MPI_BYTE, root, comm_), "MPI_Bcast");
    watchdog_->leave();
    if (s.copied) t.copy_from(s.host);
  }
  void all_reduce_sum(std::vector<double>& v) override { reduce_host(v, MPI_SUM, "all_reduce (host)"); }
  void all_reduce_max(std::vector<double>& v) override { reduce_host(v, MPI_MAX, "all_reduce max (host)"); }
  void broadcast_string(std::string& text, int root) override {
    long long length = static_cast<long long>(text.size());
    watchdog_->enter("broadcast (host)");
    check_mpi(MPI_Bcast(&length, 1, MPI_LONG_LONG, root, comm_), "MPI_Bcast");
    // Every rank has root's length here, so all of them refuse alike.
    CTSR_CHECK(length <= INT_MAX, "broadcast (host): ", length, " bytes of text are more than one MPI call takes (",
               INT_MAX, ")");
    text.resize(size_t(length));
    if (length > 0) check_mpi(MPI_Bcast(text.data(), int(length), MPI_CHAR, root, comm_), "MPI_Bcast");
    watchdog_->leave();
  }
  void barrier() override {
    watchdog_->enter("barrier");
    check_mpi(MPI_Barrier(comm_), "MPI_Barrier");
    watchdog_->leave();
  }

  MPI_Comm comm() const { return comm_; }
  Watchdog& watchdog() { return *watchdog_; }

 private:
  void reduce_host(std::vector<double>& v, MPI_Op op, const char* what) {
    CTSR_CHECK(v.size() <= size_t(INT_MAX), what, ": ", v.size(), " values are more than one MPI call takes (", INT_MAX,
               ")");
    watchdog_->enter(what);
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, v.data(), int(v.size()), MPI_DOUBLE, op, comm_), "MPI_Allreduce");
    watchdog_->leave();
  }
  MPI_Comm comm_ = MPI_COMM_NULL;
  std::unique_ptr<Watchdog> watchdog_;
};

}  // namespace

#if CTSR_HAVE_NCCL
// runtime/communicator_nccl.cpp
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> mpi, double timeout);
#endif

std::unique_ptr<Communicator> make_communicator(const LauncherInfo& info, Device device, double timeout_seconds) {
  if (!info.distributed()) return make_single_process_communicator();
  auto mpi = std::make_unique<Mpi>(info, timeout_seconds);
#if CTSR_HAVE_NCCL
  if (device.kind == DeviceKind::cuda) return make_nccl_communicator(std::move(mpi), timeout_seconds);
#else
  (void)device;
#endif
  return mpi;
}

bool mpi_built() { return true; }

void abort_job(int code) {
  int initialised = 0, finalised = 0, size = 1;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  if (initialised && !finalised) MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::fflush(nullptr);
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

#else  // !CTSR_HAVE_MPI

std::unique_ptr<Communicator> make_communicator(const LauncherInfo& info, Device, double) {
  CTSR_CHECK(!info.distributed(), info.launcher, " started ", info.size,
             " ranks, but ctsr was built without MPI (install libopenmpi-dev, scripts/install_deps.sh, and rebuild)");
  return make_single_process_communicator();
}

bool mpi_built() { return false; }

void abort_job(int code) {
  std::fflush(nullptr);
  std::exit(code);
}

#endif

bool nccl_built() { return CTSR_HAVE_NCCL; }

}  // namespace ctsr
