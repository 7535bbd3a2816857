// ctsr_train_vqae: stage 1 of the PatchVolume VQ-AE on random patches of CT volumes
// (train/vqae_trainer.h): L1 reconstruction, the straight-through codebook with EMA updates and
// restarts, the commitment loss. The adversarial and perceptual losses of the original are not
// part of it.
//
//   ctsr_train_vqae --config configs/vqae_8x.yaml [--set key=value ...] [--resume auto|PATH] [--device ...]
//   ctsr_train_vqae --export CHECKPOINT OUT.safetensors     the weights of one checkpoint (e.g. the best)
//
// The configuration is validated, overrides applied and validated again, and the data (every
// volume), the output folder and the checkpoint to resume checked, before any work; an error
// names the key or file. SIGINT or SIGTERM saves a checkpoint and exits with status 0.
#include <CLI/CLI.hpp>
#include <iostream>
#include <string>
#include <vector>

#include "tools/lib/cli.h"
#include "train/vqae_config.h"
#include "train/vqae_trainer.h"

int main(int argc, char** argv) {
  CLI::App app{"Train the PatchVolume VQ-AE (stage 1: L1 reconstruction, EMA codebook, commitment loss) on random "
               "patches of CT volumes",
               "ctsr_train_vqae"};
  std::string config_path, resume, device_text = "auto";
  std::vector<std::string> overrides, export_paths;
  bool quiet = false, print_config = false;
  app.add_option("--config", config_path, "YAML configuration (configs/vqae_8x.yaml); without it, the defaults");
  app.add_option("--set", overrides, "override one key, e.g. --set training.max_steps=200 (repeatable)");
  app.add_option("--resume", resume, "auto: continue from the latest checkpoint of output.dir; or a checkpoint path");
  app.add_option("--device", device_text, "auto (a GPU when present, else the CPU), cpu, cuda, cuda:N or cuda_on_cpu")
      ->capture_default_str();
  app.add_flag("--quiet", quiet, "no progress line");
  app.add_flag("--print-config", print_config, "print the resolved configuration and exit");
  app.add_option("--export", export_paths, "CHECKPOINT OUT: write a checkpoint's weights in ctsr_vqae's format and exit")
      ->expected(2);

  return ctsr::tools::run_program(app, argc, argv, [&] {
    using namespace ctsr;
    if (!export_paths.empty()) {
      train::export_vqae_checkpoint(export_paths[0], export_paths[1]);
      std::cerr << "ctsr_train_vqae: wrote " << export_paths[1] << "\n";
      return;
    }
    train::VqaeTrainConfig config =
        config_path.empty() ? train::VqaeTrainConfig{} : train::load_vqae_train_config(config_path);
    for (const std::string& assignment : overrides) train::apply_vqae_override(config, assignment);
    train::validate(config);
    if (print_config) {
      std::cout << train::to_yaml(config);
      return;
    }
    train::VqaeTrainerOptions options;
    options.device = tools::device_from_flag(device_text);
    options.resume = resume;
    options.progress = !quiet;
    train::VqaeTrainer trainer(config, options);
    const train::VqaeRunSummary summary = trainer.run();
    if (!summary.interrupted)
      std::cerr << "ctsr_train_vqae: done at step " << summary.last_step << "; weights in " << config.output_dir
                << "/vqae.safetensors\n";
  });
}
