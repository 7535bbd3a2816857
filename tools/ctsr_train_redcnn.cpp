// ctsr_train_redcnn: the RED-CNN learned baseline (train/redcnn_trainer.h) on patches of axial
// slices of a pairs.csv's pairs: LD in, HD the target, MSE, Adam. Its weights
// (OUTPUT/redcnn.safetensors) are what ctsr_evaluate --redcnn scores beside the classical baselines.
//
//   ctsr_train_redcnn --config configs/redcnn.yaml [--set key=value ...] [--resume auto|PATH] [--device ...]
//   ctsr_train_redcnn --export CHECKPOINT OUT.safetensors     the weights of one checkpoint (e.g. the best)
//
// The command line is tools/common/training_program.h's.
#include "train/redcnn_config.h"
#include "train/redcnn_trainer.h"
#include "tools/common/training_program.h"

int main(int argc, char** argv) {
  using namespace ctsr::train;
  const TrainingProgram program{"ctsr_train_redcnn",
                                "Train RED-CNN, the learned low-dose CT baseline, on slice patches of LD/HD pairs",
                                "configs/redcnn.yaml", "redcnn.safetensors", "for ctsr_evaluate --redcnn"};
  return training_program_main<RedCnnTrainConfig, RedCnnTrainer, RedCnnTrainerOptions>(
      argc, argv, program, load_redcnn_train_config, apply_redcnn_override, export_redcnn_checkpoint);
}
