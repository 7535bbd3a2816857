// ctsr_train: conditional latent diffusion training of the 3-D UNet (train/trainer.h).
//
//   ctsr_train --config FILE [--set key=value ...] [--resume auto|PATH] [--device auto|cpu|cuda|cuda:N|cuda_on_cpu]
//              [--allow-incomplete-cache]
//   mpirun -np N ctsr_train ...      srun ctsr_train ...      (one rank per GPU, data parallel)
//
// The configuration is validated, overrides applied and validated again, and the cache, the
// VQ-AE and the output folder checked, before any work; an error names the key. A latent cache
// without its completion marker is refused unless --allow-incomplete-cache. The output folder is
// locked for the run (a second process on it is refused, naming the holder's PID). SIGINT or
// SIGTERM saves a checkpoint and exits with status 0; --resume auto continues from it. Under
// mpirun or srun every rank takes the GPU of its local rank (device auto or cuda), CPU ranks on
// one machine share its cores (unless OMP_NUM_THREADS says otherwise), and an error on any rank
// ends the whole job (tools/common/ranks.h).

#include <CLI/CLI.hpp>
#include <iostream>
#include <string>
#include <vector>

#include "runtime/communicator.h"
#include "tools/common/cli.h"
#include "tools/common/ranks.h"
#include "train/config.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  CLI::App app{"Train the conditional latent diffusion UNet on a latent cache (ctsr_vqae cache)", "ctsr_train"};
  std::string config_path, resume, device_text = "auto";
  std::vector<std::string> overrides;
  bool quiet = false, print_config = false, allow_incomplete_cache = false;
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
  app.add_flag("--allow-incomplete-cache", allow_incomplete_cache,
               "train on a latent cache whose ctsr_vqae cache run did not finish (no complete.json), with a warning; "
               "refused by default");

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
    tools::JoinedRanks joined = tools::join_ranks("ctsr_train", device_text, config.distributed.timeout_s);
    comm = std::move(joined.comm);
    train::TrainerOptions options;
    options.device = joined.device;
    options.resume = resume;
    options.progress = !quiet;
    options.allow_incomplete_cache = allow_incomplete_cache;
    if (comm->size() > 1) options.comm = comm.get();
    try {
      train::Trainer trainer(config, options);
      const train::RunSummary summary = trainer.run();
      if (!summary.interrupted && comm->rank() == 0)
        std::cerr << "ctsr_train: done at step " << summary.last_step << "; outputs in " << config.output.dir << "\n";
    } catch (const std::exception& e) {
      tools::end_job_on_error("ctsr_train", comm.get(), e);  // returns only in a process alone
      throw;
    }
  });
}
