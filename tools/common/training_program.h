// The command line of the single-process training programs (ctsr_train_vqae, ctsr_train_redcnn),
// one definition for both:
//
//   <name> --config FILE [--set key=value ...] [--resume auto|PATH] [--device ...] [--quiet] [--print-config]
//   <name> --export CHECKPOINT OUT.safetensors     the weights of one checkpoint (e.g. the best)
//
// The configuration is validated, overrides applied and validated again, and the trainer checks
// its data, output folder and checkpoint to resume before any work; an error names the key or file.
// SIGINT or SIGTERM saves a checkpoint and exits with status 0.
#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "tools/common/cli.h"
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
    options.device = tools::device_from_flag(device_text);
    options.resume = resume;
    options.progress = !quiet;
    Trainer trainer(config, options);
    const RunSummary summary = trainer.run();
    if (!summary.interrupted)
      std::cerr << program.name << ": done at step " << summary.last_step << "; weights in " << config.output_dir << "/"
                << program.weights_file << "\n";
  });
}

}  // namespace ctsr::train
