#include "tools/common/ranks.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "tools/common/cli.h"

namespace ctsr::tools {

JoinedRanks join_ranks(const std::string& program, const std::string& device_text, double timeout_s) {
  const LauncherInfo launch = launcher_info();
  std::string device_choice = device_text;
  if (launch.distributed() && (device_text == "auto" || device_text == "cuda") && cuda_available())
    device_choice = "cuda:" + std::to_string(launch.local_rank % cuda_device_count());
  JoinedRanks joined;
  joined.device = device_from_flag(device_choice);
  joined.comm = make_communicator(launch, joined.device, timeout_s);
  Communicator& comm = *joined.comm;
  if (comm.size() > 1) {
    if (!std::getenv("OMP_NUM_THREADS")) {
      const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
      omp_set_num_threads(std::max(1, cores / std::max(1, comm.info().local_size)));
    }
    // One write per line, so the ranks' lines do not interleave.
    const std::string banner = program + ": rank " + std::to_string(comm.rank()) + "/" + std::to_string(comm.size()) +
                               " (local " + std::to_string(comm.local_rank()) + ") pid " + std::to_string(::getpid()) +
                               ": " + joined.device.str() + ", " + comm.backend() + "\n";
    std::cerr << banner << std::flush;
  }
  return joined;
}

void end_job_on_error(const std::string& program, const Communicator* comm, const std::exception& error) {
  if (!comm || comm->size() <= 1) return;
  std::string message = error.what();
  std::replace(message.begin(), message.end(), '\n', ' ');
  std::cerr << (program + ": rank " + std::to_string(comm->rank()) + ": error: " + message + "\n") << std::flush;
  abort_job(1);
}

}  // namespace ctsr::tools
