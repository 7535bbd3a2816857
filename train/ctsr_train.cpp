// ctsr_train: conditional latent diffusion training of the 3-D UNet (train/trainer.h).
//
//   ctsr_train --config FILE [--set key=value ...] [--resume auto|PATH] [--device auto|cpu|cuda|cuda:N|cuda_on_cpu]
//
// The configuration is validated, overrides applied and validated again, and the cache, the
// VQ-AE and the output folder checked, before any work; an error names the key. SIGINT or
// SIGTERM saves a checkpoint and exits with status 0; --resume auto continues from it.
#include <CLI/CLI.hpp>
#include <iostream>
#include <string>
#include <vector>

#include "tools/lib/cli.h"
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
  app.add_option("--device", device_text, "auto (a GPU when present, else the CPU), cpu, cuda, cuda:N or cuda_on_cpu")
      ->capture_default_str();
  app.add_flag("--quiet", quiet, "no progress line");
  app.add_flag("--print-config", print_config, "print the resolved configuration and exit");

  return ctsr::tools::run_program(app, argc, argv, [&] {
    using namespace ctsr;
    train::TrainConfig config = config_path.empty() ? train::TrainConfig{} : train::load_train_config(config_path);
    for (const std::string& assignment : overrides) train::apply_override(config, assignment);
    train::validate(config);
    if (print_config) {
      std::cout << train::to_yaml(config);
      return;
    }
    train::TrainerOptions options;
    options.device = tools::device_from_flag(device_text);
    options.resume = resume;
    options.progress = !quiet;
    train::Trainer trainer(config, options);
    const train::RunSummary summary = trainer.run();
    if (!summary.interrupted)
      std::cerr << "ctsr_train: done at step " << summary.last_step << "; outputs in " << config.output.dir << "\n";
  });
}
