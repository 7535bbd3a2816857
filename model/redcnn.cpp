#include "model/redcnn.h"

#include <sstream>

#include "kernels/binary.h"
#include "runtime/error.h"

namespace ctsr {

std::string RedCnnConfig::str() const {
  std::ostringstream s;
  s << "RED-CNN: " << channels << " channels, 1 x " << kernel << " x " << kernel << " kernels";
  return s.str();
}

RedCnn::RedCnn(const RedCnnConfig& config, const LayerOptions& options) : config_(config) {
  CTSR_CHECK(config.channels >= 1, "RED-CNN channels is ", config.channels, ", expected at least 1");
  CTSR_CHECK(config.kernel >= 1 && config.kernel % 2 == 1, "RED-CNN kernel is ", config.kernel,
             ", expected an odd size of at least 1");
  Conv3dParams slice;  // k x k within each axial slice, nothing across slices, no padding
  slice.kernel = {1, config.kernel, config.kernel};
  LayerOptions o = options;
  for (int i = 0; i < 5; ++i) {
    o.stream = uint64_t(i);
    convs_.push_back(std::make_unique<Conv3d>(i == 0 ? 1 : config.channels, config.channels, slice, true, o));
  }
  for (int i = 0; i < 5; ++i) {
    o.stream = uint64_t(5 + i);
    tconvs_.push_back(
        std::make_unique<ConvTranspose3d>(config.channels, i == 4 ? 1 : config.channels, slice, true, o));
  }
  for (int i = 0; i < 9; ++i) relus_.push_back(std::make_unique<ReLU>());
}

void RedCnn::collect(const std::string& prefix, std::vector<Parameter*>& out) {
  for (size_t i = 0; i < convs_.size(); ++i) collect_child(*convs_[i], prefix, "conv" + std::to_string(i + 1), out);
  for (size_t i = 0; i < tconvs_.size(); ++i) collect_child(*tconvs_[i], prefix, "tconv" + std::to_string(i + 1), out);
}

void RedCnn::clear_saved() {
  for (auto& c : convs_) c->clear_saved();
  for (auto& t : tconvs_) t->clear_saved();
  for (auto& r : relus_) r->clear_saved();
}

Tensor RedCnn::forward(const Tensor& x) {
  CTSR_CHECK(x.ndim() == 5 && x.dim(4) == 1, "RED-CNN input is ", x.shape().str(), ", expected [N, D, H, W, 1]");
  CTSR_CHECK(x.dim(2) >= min_slice_size() && x.dim(3) >= min_slice_size(), "RED-CNN input slices are ", x.dim(2),
             " x ", x.dim(3), ", expected at least ", min_slice_size(), " x ", min_slice_size(), " (",
             config_.str(), ")");
  Tensor h = x, r2, r3;
  for (int i = 0; i < 5; ++i) {
    h = relus_[size_t(i)]->forward(convs_[size_t(i)]->forward(h));
    if (i == 1) r2 = h;
    if (i == 3) r3 = h;
  }
  h = add(tconvs_[0]->forward(h), r3);
  h = tconvs_[1]->forward(relus_[5]->forward(h));
  h = add(tconvs_[2]->forward(relus_[6]->forward(h)), r2);
  h = tconvs_[3]->forward(relus_[7]->forward(h));
  return add(tconvs_[4]->forward(relus_[8]->forward(h)), x);
}

Tensor RedCnn::backward(const Tensor& dy, bool input_grad) {
  // The sums pass their gradient unchanged to both terms: dy reaches x directly (the outer
  // shortcut), and the shortcut gradients d_r2, d_r3 join the main path where r2, r3 were taken.
  Tensor g = tconvs_[4]->backward(dy);
  g = tconvs_[3]->backward(relus_[8]->backward(g));
  g = relus_[7]->backward(g);
  const Tensor d_r2 = g;
  g = tconvs_[2]->backward(g);
  g = tconvs_[1]->backward(relus_[6]->backward(g));
  g = relus_[5]->backward(g);
  const Tensor d_r3 = g;
  g = tconvs_[0]->backward(g);
  for (int i = 4; i >= 0; --i) {
    if (i == 3) g = add(g, d_r3);
    if (i == 1) g = add(g, d_r2);
    g = relus_[size_t(i)]->backward(g);
    if (i == 0 && !input_grad) {
      convs_[0]->backward(g, /*input_grad=*/false);
      return Tensor();
    }
    g = convs_[size_t(i)]->backward(g);
  }
  return add(g, dy);
}

}  // namespace ctsr
