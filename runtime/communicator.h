// Collectives across the ranks of a data-parallel job.
//
// Backends:
//   single process  size 1; every collective leaves its data as it is.
//   MPI             tensors in host memory (the cpu and cuda_on_cpu devices) through MPI (Debian's
//                   Open MPI), and the host-side helpers (scalars, bytes, barrier) of every backend.
//   NCCL            tensors on GPUs through NCCL, on a stream of its own so that a reduction can
//                   run while backward continues; rank 0 makes the unique id and MPI broadcasts it.
// A job is started by mpirun or srun: launcher_info() reads the launcher's environment (so each
// rank can pick its GPU from its local rank before anything touches CUDA), make_communicator()
// initialises MPI only then; a plain run is a single process and needs no MPI at all.
//
// Reductions are asynchronous (start_*: the data must stay alive and untouched until wait()); the
// sums are float32 in place. Every rank must issue the same collectives in the same order.
//
// Hangs: while a rank waits for a collective, a watchdog thread measures the wait. A peer that
// died or hangs never joins, so after `timeout_seconds` the watchdog prints which rank waited on
// what and ends the job (MPI_Abort, which makes mpirun/srun stop every rank), instead of hanging
// forever. A rank that dies outright is also noticed by the launcher, which ends the job.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace ctsr {

struct LauncherInfo {
  int rank = 0, size = 1;              // in the whole job
  int local_rank = 0, local_size = 1;  // on this machine
  std::string launcher = "none";       // "mpirun", "srun", or "none"
  bool distributed() const { return size > 1; }
};
// From the environment of Open MPI's mpirun, Slurm's srun (or PMI/PMIx); a single process otherwise.
LauncherInfo launcher_info();

class Communicator {
 public:
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };
  virtual ~Communicator() = default;
  int rank() const { return info_.rank; }
  int size() const { return info_.size; }
  int local_rank() const { return info_.local_rank; }
  const LauncherInfo& info() const { return info_; }
  virtual const char* backend() const = 0;  // "single", "mpi", "nccl"

  // t += the same tensor of every other rank (float32, contiguous, same shape on every rank).
  virtual std::unique_ptr<Pending> start_all_reduce_sum(Tensor& t) = 0;
  // shard = rank r's part [r * n, (r + 1) * n) of the sum over ranks of `full` (n * size elements).
  virtual std::unique_ptr<Pending> start_reduce_scatter_sum(const Tensor& full, Tensor& shard) = 0;
  // full = the shards of every rank, in rank order.
  virtual std::unique_ptr<Pending> start_all_gather(const Tensor& shard, Tensor& full) = 0;
  virtual void broadcast(Tensor& t, int root) = 0;

  void all_reduce_sum(Tensor& t) { start_all_reduce_sum(t)->wait(); }
  void reduce_scatter_sum(const Tensor& full, Tensor& shard) { start_reduce_scatter_sum(full, shard)->wait(); }
  void all_gather(const Tensor& shard, Tensor& full) { start_all_gather(shard, full)->wait(); }

  // Host values, for metrics and decisions every rank must share.
  virtual void all_reduce_sum(std::vector<double>& values) = 0;
  virtual void all_reduce_max(std::vector<double>& values) = 0;
  virtual void broadcast_string(std::string& text, int root) = 0;
  virtual void barrier() = 0;

 protected:
  LauncherInfo info_;
};

// The communicator for tensors on `device`: single process when the launcher started one rank,
// NCCL for GPUs (when built with it), MPI otherwise. Throws naming what is missing when the job
// has several ranks but ctsr was built without MPI. The watchdog's timeout is `timeout_seconds`.
std::unique_ptr<Communicator> make_communicator(const LauncherInfo& info, Device device, double timeout_seconds = 600);
std::unique_ptr<Communicator> make_single_process_communicator();

// Ends the whole job with `code`: MPI_Abort when this process is one rank of several (so the
// launcher stops every rank at once instead of leaving them waiting), else exit.
[[noreturn]] void abort_job(int code);

// True when ctsr was built with MPI (NCCL): for messages and test skips.
bool mpi_built();
bool nccl_built();

}  // namespace ctsr
