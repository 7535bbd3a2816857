#include "model/layers.h"

#include "kernels/activation.h"
#include "kernels/dropout.h"
#include "kernels/group_norm.h"

namespace ctsr {

namespace {
Tensor take(Tensor& saved, const char* layer) {
  CTSR_CHECK(saved.defined(), layer, ".backward called without a forward (or twice after one forward)");
  Tensor t = saved;
  saved = Tensor();
  return t;
}
}  // namespace

// ---- SiLU ----------------------------------------------------------------------------------------

Tensor SiLU::forward(const Tensor& x) {
  x_ = x;
  return silu_forward(x);
}

Tensor SiLU::backward(const Tensor& dy) { return silu_backward(take(x_, "SiLU"), dy); }

// ---- GroupNorm -----------------------------------------------------------------------------------

GroupNorm::GroupNorm(int64_t channels, int64_t groups, double eps, bool fused_silu, const LayerOptions& o)
    : weight(make_parameter("weight", {channels}, o.dtype, o.device)),
      bias(make_parameter("bias", {channels}, o.dtype, o.device)),
      channels_(channels),
      groups_(groups),
      eps_(eps),
      fused_silu_(fused_silu) {
  CTSR_CHECK(groups > 0 && channels % groups == 0, "GroupNorm: ", channels, " channels do not split into ", groups,
             " groups");
  init_constant(weight, 1.0);
}

void GroupNorm::collect(const std::string& prefix, std::vector<Parameter*>& out) {
  weight.name = prefix + "weight";
  bias.name = prefix + "bias";
  out.push_back(&weight);
  out.push_back(&bias);
}

Tensor GroupNorm::forward(const Tensor& x) {
  CTSR_CHECK(x.ndim() >= 2 && x.dim(-1) == channels_, "GroupNorm(", channels_, "): input ", x.shape().str(),
             " has ", x.ndim() >= 1 ? x.dim(-1) : 0, " channels in its last dimension");
  GroupNormOutput out = fused_silu_ ? group_norm_silu_forward(x, weight.value, bias.value, groups_, eps_)
                                    : group_norm_forward(x, weight.value, bias.value, groups_, eps_);
  x_ = x;
  mean_ = out.mean;
  rstd_ = out.rstd;
  return out.y;
}

Tensor GroupNorm::backward(const Tensor& dy) {
  Tensor x = take(x_, "GroupNorm"), mean = take(mean_, "GroupNorm"), rstd = take(rstd_, "GroupNorm");
  return fused_silu_ ? group_norm_silu_backward(x, weight.value, bias.value, mean, rstd, dy, groups_, weight.grad,
                                                bias.grad)
                     : group_norm_backward(x, weight.value, mean, rstd, dy, groups_, weight.grad, bias.grad);
}

// ---- Dropout -------------------------------------------------------------------------------------

Tensor Dropout::forward(const Tensor& x) {
  applied_ = training_ && p_ > 0.0;
  return applied_ ? dropout_forward(x, p_, seed_, offset_) : x;
}

Tensor Dropout::backward(const Tensor& dy) {
  return applied_ ? dropout_backward(dy, p_, seed_, offset_) : dy;
}

}  // namespace ctsr
