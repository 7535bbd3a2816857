// What the caller of a run-loop task (train/run.h) chooses besides its configuration: the
// device, resuming, the progress line, the log and a per-step hook; with the ranks of a
// data-parallel job for the tasks that have one. TrainerOptions (train/trainer.h),
// VqaeTrainerOptions (train/vqae_trainer.h) and RedCnnTrainerOptions (train/redcnn_trainer.h).
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>

#include "runtime/device.h"

namespace ctsr {
class Communicator;
}

namespace ctsr::train {

struct TaskOptions {
  Device device = Device::cpu();
  // "": a new run (an output folder that already holds checkpoints is an error, so nothing is
  // overwritten by mistake); "auto": continue from the latest checkpoint of output.dir, or start
  // anew when there is none; otherwise the path of a checkpoint to continue from.
  std::string resume;
  bool progress = true;                          // the terminal progress line
  std::ostream* log = nullptr;                   // messages (default std::cerr)
  std::function<void(int64_t step)> after_step;  // called after every step (tests)
};

struct DataParallelTaskOptions : TaskOptions {
  // The ranks of a data-parallel job (runtime/communicator.h); nullptr: this process alone.
  Communicator* comm = nullptr;
};

}  // namespace ctsr::train
