// ctsr_train_vqae: stage 1 of the PatchVolume VQ-AE on random patches of CT volumes
// (train/vqae_trainer.h): L1 reconstruction, the straight-through codebook with EMA updates and
// restarts, the commitment loss. The adversarial and perceptual losses of the original are not
// part of it.
//
//   ctsr_train_vqae --config configs/vqae_8x.yaml [--set key=value ...] [--resume auto|PATH] [--device ...]
//   ctsr_train_vqae --export CHECKPOINT OUT.safetensors     the weights of one checkpoint (e.g. the best)
//
// The command line is tools/common/training_program.h's.
#include "tools/common/training_program.h"
#include "train/vqae_config.h"
#include "train/vqae_trainer.h"

int main(int argc, char** argv) {
  using namespace ctsr::train;
  const TrainingProgram program{
      "ctsr_train_vqae",
      "Train the PatchVolume VQ-AE (stage 1: L1 reconstruction, EMA codebook, commitment loss) on random patches of "
      "CT volumes",
      "configs/vqae_8x.yaml", "vqae.safetensors", "in ctsr_vqae's format"};
  return training_program_main<VqaeTrainConfig, VqaeTrainer, VqaeTrainerOptions>(
      argc, argv, program, load_vqae_train_config, apply_vqae_override, export_vqae_checkpoint);
}
