// Data parallelism for the training loop: the gradients of the model live in one flat buffer cut
// into buckets (the parameters in backward order, about `bucket_bytes` each). During the last
// micro-batch's backward, the model announces each layer's finished gradients
// (UNet3D::set_gradients_ready); a bucket whose parameters are all finished starts its reduction
// at once, so communication overlaps the rest of backward. finish() waits for every bucket.
//
//   plain   each bucket is all-reduced (summed); the loss of every rank is scaled by
//           1 / (accumulation * ranks), so the sum is the mean gradient of the global batch.
//           Every rank then runs the same clipping and AdamW on the same gradients.
//   ZeRO-1  each bucket is reduce-scattered: rank r receives the summed gradients of its part
//           [r n, (r + 1) n) of the bucket, keeps AdamW's moments for that part only (optimiser
//           memory / ranks), updates its part of the weights (the model's parameters are views of
//           a flat weight buffer with the same layout), and an all-gather gives every rank the
//           whole updated weights.
//
// Every rank keeps identical weights; the gradient norm and every skip decision are the same
// on every rank. Buckets are padded to a multiple of the number of ranks (the padding is zero
// and stays zero).
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "kernels/optimizer.h"
#include "model/module.h"
#include "runtime/communicator.h"

namespace ctsr::train {

// The configuration key `distributed` of ctsr_train and ctsr_train_vqae: data parallelism over the
// ranks that mpirun or srun started (one process trains alone).
struct DistributedConfig {
  bool zero1 = false;          // shard AdamW's moments across ranks (ZeRO stage 1)
  double bucket_mb = 25;       // gradients reduced per collective, in MiB (overlapping backward)
  double timeout_s = 600;      // a collective waiting longer ends the job (a rank died or hangs)
};

// The part [first, last) of `count` items that `rank` of `size` takes: contiguous blocks whose
// sizes differ by at most one, every item in exactly one block, for any count and size.
std::pair<int64_t, int64_t> rank_share(int64_t count, int rank, int size);

class DataParallel {
 public:
  // params in forward order (the model's parameters()). Replaces each parameter's gradient (and,
  // with ZeRO-1, its value) by a view of the flat buffers, copying the current values.
  DataParallel(Communicator& comm, const std::vector<Parameter*>& params, bool zero1, int64_t bucket_bytes);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  bool zero1() const { return zero1_; }
  int64_t buckets() const { return static_cast<int64_t>(buckets_.size()); }
  // Elements each rank sends (and receives) per step through the collectives, for the record.
  int64_t flat_elements() const { return flat_elements_; }

  // Arms the reducer for the backward that follows (the last micro-batch of a step).
  void arm();
  // The model's GradientsReady hook.
  void gradients_ready(const std::vector<Parameter*>& params);
  // Waits for every bucket (starting those no announcement reached).
  void finish();

  // The global gradient norm (the same on every rank).
  double grad_norm();
  // Multiplies the gradients (ZeRO-1: this rank's shards) by factor (clipping).
  void scale_gradients(double factor);
  // AdamW on the reduced gradients; with ZeRO-1 on this rank's shard, then the all-gather.
  void adamw(const AdamWConfig& config, int64_t step);

  // AdamW's moments per parameter, whole (gathered from every rank with ZeRO-1: collective).
  std::vector<Tensor> gather_moments(bool second);
  // Sets the moments from whole per-parameter tensors (every rank passes the same).
  void load_moments(const std::vector<Tensor>& m, const std::vector<Tensor>& v);

 private:
  struct Bucket;
  void start(Bucket& bucket);
  Communicator& comm_;
  std::vector<Parameter*> params_;  // forward order
  bool zero1_;
  int64_t flat_elements_ = 0;
  Tensor flat_grads_, flat_values_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::unordered_map<const Parameter*, Bucket*> bucket_of_;
  std::unordered_map<const Parameter*, int64_t> offset_of_;  // in the flat buffers
  std::vector<Tensor> m_, v_;  // plain: per parameter; ZeRO-1: per bucket shard
  bool armed_ = false;
};

}  // namespace ctsr::train
