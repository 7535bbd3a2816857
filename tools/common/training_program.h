// The command line of the training programs ctsr_train_vqae and ctsr_train_redcnn, one definition
// for both:
//
//   <name> --config FILE [--set key=value ...] [--resume auto|PATH] [--device ...] [--quiet] [--print-config]
//   <name> --export CHECKPOINT OUT.safetensors     the weights of one checkpoint (e.g. the best)
//   mpirun -np N <name> ...      srun <name> ...   (a trainer whose options take a communicator:
//                                                   ctsr_train_vqae; data parallel, as ctsr_train)
//
// The configuration is validated, overrides applied and validated again, and the trainer checks
// its data, output folder and checkpoint to resume before any work; an error names the key or file.
// SIGINT or SIGTERM saves a checkpoint and exits with status 0. Under mpirun or srun (Options has
// `comm`, Config has distributed.timeout_s) every rank takes the GPU of its local rank (device auto
// or cuda), CPU ranks on one machine share its cores (unless OMP_NUM_THREADS says otherwise), and
// an error on any rank ends the whole job, as ctsr_train does (tools/common/ranks.h).
#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "runtime/communicator.h"
#include "tools/common/cli.h"
#include "tools/common/ranks.h"
#include "train/run.h"

namespace ctsr::train {

struct TrainingProgram {
  std::string name;            // "ctsr_train_redcnn"
  std::string description;     // the --help line
  std::string example_config;  // "configs/redcnn.yaml"
  std::string weights_file;    // what the run writes in output.dir: "redcnn.safetensors"
  std::string export_help;     // what --export's weights are for
};

// Config: the configuration (load, apply_override, validate(Config), to_yaml(Config), .output_dir);
// Trainer: constructed from (Config, Options) with Options' device, resume and progress, and run().
template <class Config, class Trainer, class Options>
int training_program_main(int argc, char** argv, const TrainingProgram& program,
                          Config (*load)(const std::filesystem::path&), void (*apply_override)(Config&, const std::string&),
                          void (*export_checkpoint)(const std::filesystem::path&, const std::filesystem::path&)) {
  CLI::App app{program.description, program.name};
  std::string config_path, resume, device_text = "auto";
  std::vector<std::string> overrides, export_paths;
  bool quiet = false, print_config = false;
  app.add_option("--config", config_path, "YAML configuration (" + program.example_config + "); without it, the defaults");
  app.add_option("--set", overrides, "override one key, e.g. --set training.max_steps=200 (repeatable)");
  app.add_option("--resume", resume, "auto: continue from the latest checkpoint of output.dir; or a checkpoint path");
  app.add_option("--device", device_text, "auto (a GPU when present, else the CPU), cpu, cuda, cuda:N or cuda_on_cpu")
      ->capture_default_str();
  app.add_flag("--quiet", quiet, "no progress line");
  app.add_flag("--print-config", print_config, "print the resolved configuration and exit");
  app.add_option("--export", export_paths, "CHECKPOINT OUT: write a checkpoint's weights " + program.export_help + " and exit")
      ->expected(2);

  return tools::run_program(app, argc, argv, [&] {
    if (!export_paths.empty()) {
      export_checkpoint(export_paths[0], export_paths[1]);
      std::cerr << program.name << ": wrote " << export_paths[1] << "\n";
      return;
    }
    Config config = config_path.empty() ? Config{} : load(config_path);
    for (const std::string& assignment : overrides) apply_override(config, assignment);
    validate(config);
    if (print_config) {
      std::cout << to_yaml(config);
      return;
    }
    Options options;
    options.resume = resume;
    options.progress = !quiet;
    std::unique_ptr<Communicator> comm;
    if constexpr (requires(Options& o) { o.comm; }) {
      tools::JoinedRanks joined = tools::join_ranks(program.name, device_text, config.distributed.timeout_s);
      options.device = joined.device;
      comm = std::move(joined.comm);
      if (comm->size() > 1) options.comm = comm.get();
    } else {
      options.device = tools::device_from_flag(device_text);
    }
    try {
      Trainer trainer(config, options);
      const RunSummary summary = trainer.run();
      if (!summary.interrupted && (!comm || comm->rank() == 0))
        std::cerr << program.name << ": done at step " << summary.last_step << "; weights in " << config.output_dir
                  << "/" << program.weights_file << "\n";
    } catch (const std::exception& e) {
      tools::end_job_on_error(program.name, comm.get(), e);  // returns only in a process alone
      throw;
    }
  });
}

}  // namespace ctsr::train
