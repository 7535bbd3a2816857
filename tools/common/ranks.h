// How a training program joins the ranks of a data-parallel job (ctsr_train, and ctsr_train_vqae
// through training_program.h): one process alone is a job of one rank.
#pragma once

#include <exception>
#include <memory>
#include <string>

#include "runtime/communicator.h"
#include "runtime/device.h"

namespace ctsr::tools {

struct JoinedRanks {
  Device device;                      // this rank's device
  std::unique_ptr<Communicator> comm; // never null; size() 1 for a process alone
};

// Under mpirun or srun, `auto` and `cuda` take the GPU of the rank's local rank; CPU ranks on one
// machine share its cores (unless OMP_NUM_THREADS says otherwise); each rank prints one banner
// line "<program>: rank r/n (local l) pid p: <device>, <backend>". A collective waiting longer than
// timeout_s ends the job.
JoinedRanks join_ranks(const std::string& program, const std::string& device_text, double timeout_s);

// In a job of several ranks, an error on one rank would leave the others waiting in their next
// collective: prints "<program>: rank r: error: <message>" and ends the whole job. Returns only
// when this process is alone (comm null or of size 1), for the caller to rethrow.
void end_job_on_error(const std::string& program, const Communicator* comm, const std::exception& error);

}  // namespace ctsr::tools
