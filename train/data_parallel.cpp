#include "train/data_parallel.h"

#include <algorithm>
#include <cmath>

#include "kernels/copy.h"
#include "runtime/error.h"

namespace ctsr::train {

std::pair<int64_t, int64_t> rank_share(int64_t count, int rank, int size) {
  CTSR_CHECK(size > 0 && rank >= 0 && rank < size, "rank_share: rank ", rank, " of ", size);
  CTSR_CHECK(count >= 0, "rank_share: negative count ", count);
  return {count * rank / size, count * (rank + 1) / size};
}

struct DataParallel::Bucket {
  int64_t offset = 0, size = 0;  // in the flat buffers; size padded to a multiple of the ranks
  std::vector<Parameter*> params;
  int64_t waiting = 0;           // parameters not yet announced since arm()
  Tensor grads, values;          // views of the flat buffers
  Tensor grad_shard;             // ZeRO-1: this rank's summed part of the gradients
  std::unique_ptr<Communicator::Pending> pending;
  int64_t shard() const { return size; }
};

DataParallel::DataParallel(Communicator& comm, const std::vector<Parameter*>& params, bool zero1, int64_t bucket_bytes)
    : comm_(comm), params_(params), zero1_(zero1) {
  CTSR_CHECK(!params.empty(), "DataParallel: no parameters");
  CTSR_CHECK(bucket_bytes > 0, "distributed.bucket_mb must be positive");
  const Device device = params[0]->value.device();
  const DType dtype = params[0]->value.dtype();
  const int64_t ranks = comm.size();
  // Buckets in backward order: the last layers' gradients are finished first.
  auto bucket = std::make_unique<Bucket>();
  int64_t offset = 0;
  auto close = [&] {
    const int64_t used = offset - bucket->offset;
    bucket->size = (used + ranks - 1) / ranks * ranks;
    offset = bucket->offset + bucket->size;
    buckets_.push_back(std::move(bucket));
    bucket = std::make_unique<Bucket>();
    bucket->offset = offset;
  };
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    Parameter* p = *it;
    CTSR_CHECK(p->value.device() == device && p->value.dtype() == dtype, "DataParallel: parameter ", p->name, " is ",
               dtype_name(p->value.dtype()), " on ", p->value.device().str(), ", the first is ", dtype_name(dtype),
               " on ", device.str());
    offset_of_[p] = offset;
    bucket->params.push_back(p);
    offset += p->value.numel();
    if ((offset - bucket->offset) * int64_t(dtype_size(dtype)) >= bucket_bytes) close();
  }
  if (!bucket->params.empty()) close();
  flat_elements_ = offset;

  flat_grads_ = Tensor::zeros({flat_elements_}, dtype, device);
  if (zero1_) flat_values_ = Tensor::zeros({flat_elements_}, dtype, device);
  for (auto& b : buckets_) {
    b->grads = flat_grads_.slice(b->offset, b->offset + b->size);
    if (zero1_) {
      b->values = flat_values_.slice(b->offset, b->offset + b->size);
      b->grad_shard = Tensor::zeros({b->size / ranks}, dtype, device);
      m_.push_back(Tensor::zeros({b->size / ranks}, dtype, device));
      v_.push_back(Tensor::zeros({b->size / ranks}, dtype, device));
    }
    for (Parameter* p : b->params) bucket_of_[p] = b.get();
  }
  for (Parameter* p : params_) {
    const int64_t at = offset_of_[p], n = p->value.numel();
    p->grad = flat_grads_.slice(at, at + n).reshape(p->value.shape());
    if (zero1_) {
      Tensor view = flat_values_.slice(at, at + n).reshape(p->value.shape());
      view.copy_from(p->value);
      p->value = view;
    } else {
      m_.push_back(Tensor::zeros(p->value.shape(), dtype, device));
      v_.push_back(Tensor::zeros(p->value.shape(), dtype, device));
    }
  }
}

DataParallel::~DataParallel() {
  for (auto& b : buckets_)
    if (b->pending) b->pending->wait();
}

void DataParallel::arm() {
  for (auto& b : buckets_) b->waiting = static_cast<int64_t>(b->params.size());
  armed_ = true;
}

void DataParallel::start(Bucket& b) {
  if (zero1_) b.pending = comm_.start_reduce_scatter_sum(b.grads, b.grad_shard);
  else b.pending = comm_.start_all_reduce_sum(b.grads);
}

void DataParallel::gradients_ready(const std::vector<Parameter*>& params) {
  if (!armed_) return;
  for (Parameter* p : params) {
    auto it = bucket_of_.find(p);
    CTSR_CHECK(it != bucket_of_.end(), "DataParallel: gradients of an unknown parameter ", p->name, " announced");
    Bucket& b = *it->second;
    CTSR_CHECK(b.waiting > 0, "DataParallel: the gradient of ", p->name, " was announced twice in one backward");
    if (--b.waiting == 0) start(b);
  }
}

void DataParallel::finish() {
  CTSR_CHECK(armed_, "DataParallel.finish without arm()");
  // Buckets no announcement completed start now, in bucket order (the same on every rank).
  for (auto& b : buckets_)
    if (!b->pending) start(*b);
  for (auto& b : buckets_) {
    b->pending->wait();
    b->pending.reset();
  }
  armed_ = false;
}

double DataParallel::grad_norm() {
  if (!zero1_) return global_grad_norm({&flat_grads_});
  std::vector<const Tensor*> shards;
  for (auto& b : buckets_) shards.push_back(&b->grad_shard);
  std::vector<double> sum{sum_of_squares(shards)};
  comm_.all_reduce_sum(sum);
  return double(float(std::sqrt(sum[0])));  // rounded to float32, as global_grad_norm does
}

void DataParallel::scale_gradients(double factor) {
  if (!zero1_) {
    scale_in_place({&flat_grads_}, factor);
    return;
  }
  std::vector<Tensor*> shards;
  for (auto& b : buckets_) shards.push_back(&b->grad_shard);
  scale_in_place(shards, factor);
}

void DataParallel::adamw(const AdamWConfig& config, int64_t step) {
  std::vector<Tensor*> values, m, v;
  std::vector<const Tensor*> grads;
  if (!zero1_) {
    for (size_t i = 0; i < params_.size(); ++i) {
      values.push_back(&params_[i]->value);
      grads.push_back(&params_[i]->grad);
      m.push_back(&m_[i]);
      v.push_back(&v_[i]);
    }
    adamw_step(values, grads, m, v, config, step);
    return;
  }
  const int64_t r = comm_.rank(), ranks = comm_.size();
  std::vector<Tensor> shards;
  shards.reserve(buckets_.size());
  for (size_t k = 0; k < buckets_.size(); ++k) {
    const int64_t n = buckets_[k]->size / ranks;
    shards.push_back(buckets_[k]->values.slice(r * n, (r + 1) * n));
  }
  for (size_t k = 0; k < buckets_.size(); ++k) {
    values.push_back(&shards[k]);
    grads.push_back(&buckets_[k]->grad_shard);
    m.push_back(&m_[k]);
    v.push_back(&v_[k]);
  }
  adamw_step(values, grads, m, v, config, step);
  // Every rank's updated part to every rank, in place.
  for (size_t k = 0; k < buckets_.size(); ++k) buckets_[k]->pending = comm_.start_all_gather(shards[k], buckets_[k]->values);
  for (auto& b : buckets_) {
    b->pending->wait();
    b->pending.reset();
  }
}

std::vector<Tensor> DataParallel::gather_moments(bool second) {
  std::vector<Tensor>& moments = second ? v_ : m_;
  if (!zero1_) return moments;
  std::unordered_map<const Parameter*, Tensor> whole;
  for (size_t k = 0; k < buckets_.size(); ++k) {
    Bucket& b = *buckets_[k];
    Tensor full = Tensor::empty({b.size}, moments[k].dtype(), moments[k].device());
    comm_.all_gather(moments[k], full);
    for (Parameter* p : b.params) {
      const int64_t at = offset_of_[p] - b.offset;
      whole[p] = full.slice(at, at + p->value.numel()).reshape(p->value.shape());
    }
  }
  std::vector<Tensor> out;
  for (Parameter* p : params_) out.push_back(whole.at(p));
  return out;
}

void DataParallel::load_moments(const std::vector<Tensor>& m, const std::vector<Tensor>& v) {
  CTSR_CHECK(m.size() == params_.size() && v.size() == params_.size(), "DataParallel.load_moments: ", m.size(), " and ",
             v.size(), " moments for ", params_.size(), " parameters");
  if (!zero1_) {
    for (size_t i = 0; i < params_.size(); ++i) m_[i].copy_from(m[i]), v_[i].copy_from(v[i]);
    return;
  }
  std::unordered_map<const Parameter*, size_t> index;
  for (size_t i = 0; i < params_.size(); ++i) index[params_[i]] = i;
  const int64_t r = comm_.rank(), ranks = comm_.size();
  for (size_t k = 0; k < buckets_.size(); ++k) {
    Bucket& b = *buckets_[k];
    const int64_t n = b.size / ranks;
    for (auto [source, target] : {std::pair<const std::vector<Tensor>*, Tensor*>{&m, &m_[k]}, {&v, &v_[k]}}) {
      Tensor full = Tensor::zeros({b.size}, target->dtype(), target->device());
      for (Parameter* p : b.params) {
        const int64_t at = offset_of_[p] - b.offset, count = p->value.numel();
        Tensor slot = full.slice(at, at + count);
        slot.copy_from((*source)[index.at(p)].reshape({count}));
      }
      target->copy_from(full.slice(r * n, (r + 1) * n));
    }
  }
}

}  // namespace ctsr::train
