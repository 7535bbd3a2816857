// ctsr_train: conditional latent diffusion training of the 3-D UNet (train/trainer.h).
//
//   ctsr_train --config FILE [--set key=value ...] [--resume auto|PATH] [--device auto|cpu|cuda|cuda:N|cuda_on_cpu]
//   mpirun -np N ctsr_train ...      srun ctsr_train ...      (one rank per GPU, data parallel)
//
// The configuration is validated, overrides applied and validated again, and the cache, the
// VQ-AE and the output folder checked, before any work; an error names the key. SIGINT or
// SIGTERM saves a checkpoint and exits with status 0; --resume auto continues from it. Under
// mpirun or srun every rank takes the GPU of its local rank (device auto or cuda), CPU ranks on
// one machine share its cores (unless OMP_NUM_THREADS says otherwise), and an error on any rank
// ends the whole job.
#include <omp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "runtime/communicator.h"
#include "tools/common/cli.h"
#include "train/config.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  CLI::App app{"Train the conditional latent diffusion UNet on a latent cache (ctsr_vqae cache)", "ctsr_train"};
  std::string config_path, resume, device_text = "auto";
  std::vector<std::string> overrides;
  bool quiet = false, print_config = false;
  app.add_option("--config", config_path, "YAML configuration (configs/diffusion.yaml, configs/tiny.yaml); "
                                          "without it, the production defaults");
  app.add_option("--set", overrides, "override one key, e.g. --set training.max_steps=200 (repeatable)");
  app.add_option("--resume", resume, "auto: continue from the latest checkpoint of output.dir; or a checkpoint path");
  app.add_option("--device", device_text,
                 "auto (a GPU when present, else the CPU), cpu, cuda, cuda:N or cuda_on_cpu; under mpirun/srun, "
                 "auto and cuda take the GPU of the rank's local rank")
      ->capture_default_str();
  app.add_flag("--quiet", quiet, "no progress line");
  app.add_flag("--print-config", print_config, "print the resolved configuration and exit");

  const ctsr::LauncherInfo launch = ctsr::launcher_info();
  std::unique_ptr<ctsr::Communicator> comm;
  return ctsr::tools::run_program(app, argc, argv, [&] {
    using namespace ctsr;
    train::DiffusionTrainConfig config = config_path.empty() ? train::DiffusionTrainConfig{} : train::load_train_config(config_path);
    for (const std::string& assignment : overrides) train::apply_override(config, assignment);
    train::validate(config);
    if (print_config) {
      std::cout << train::to_yaml(config);
      return;
    }
    std::string device_choice = device_text;
    if (launch.distributed() && (device_text == "auto" || device_text == "cuda") && cuda_available())
      device_choice = "cuda:" + std::to_string(launch.local_rank % cuda_device_count());
    train::TrainerOptions options;
    options.device = tools::device_from_flag(device_choice);
    options.resume = resume;
    options.progress = !quiet;
    comm = make_communicator(launch, options.device, config.distributed.timeout_s);
    if (comm->size() > 1) {
      options.comm = comm.get();
      if (!std::getenv("OMP_NUM_THREADS")) {
        const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
        omp_set_num_threads(std::max(1, cores / std::max(1, comm->info().local_size)));
      }
      // One write per line, so the ranks' lines do not interleave.
      const std::string banner = "ctsr_train: rank " + std::to_string(comm->rank()) + "/" + std::to_string(comm->size()) +
                                 " (local " + std::to_string(comm->local_rank()) + ") pid " + std::to_string(::getpid()) +
                                 ": " + options.device.str() + ", " + comm->backend() + "\n";
      std::cerr << banner << std::flush;
    }
    try {
      train::Trainer trainer(config, options);
      const train::RunSummary summary = trainer.run();
      if (!summary.interrupted && comm->rank() == 0)
        std::cerr << "ctsr_train: done at step " << summary.last_step << "; outputs in " << config.output.dir << "\n";
    } catch (const std::exception& e) {
      if (comm->size() <= 1) throw;
      // The other ranks would wait for this one in their next collective: end them all now.
      std::string message = e.what();
      std::replace(message.begin(), message.end(), '\n', ' ');
      std::cerr << ("ctsr_train: rank " + std::to_string(comm->rank()) + ": error: " + message + "\n") << std::flush;
      abort_job(1);
    }
  });
}
