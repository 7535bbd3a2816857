#include "model/redcnn.h"

#include <algorithm>
#include <sstream>

#include "kernels/binary.h"
#include "kernels/resample.h"
#include "runtime/error.h"
#include "runtime/formats/safetensors.h"

namespace ctsr {

std::string RedCnnConfig::str() const {
  std::ostringstream s;
  s << "RED-CNN: " << channels << " channels, 1 x " << kernel << " x " << kernel << " kernels";
  if (in_channels == 2) s << ", guided (inputs: low dose, guide)";
  return s.str();
}

RedCnn::RedCnn(const RedCnnConfig& config, const LayerOptions& options) : config_(config) {
  CTSR_CHECK(config.channels >= 1, "RED-CNN channels is ", config.channels, ", expected at least 1");
  CTSR_CHECK(config.kernel >= 1 && config.kernel % 2 == 1, "RED-CNN kernel is ", config.kernel,
             ", expected an odd size of at least 1");
  CTSR_CHECK(config.in_channels == 1 || config.in_channels == 2, "RED-CNN in_channels is ", config.in_channels,
             ", expected 1 (the low-dose volume) or 2 (it and a guide)");
  Conv3dParams slice;  // k x k within each axial slice, nothing across slices, no padding
  slice.kernel = {1, config.kernel, config.kernel};
  LayerOptions o = options;
  for (int i = 0; i < 5; ++i) {
    o.stream = uint64_t(i);
    convs_.push_back(std::make_unique<Conv3d>(i == 0 ? config.in_channels : config.channels, config.channels, slice, true, o));
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
  CTSR_CHECK(x.ndim() == 5 && x.dim(4) == config_.in_channels, "RED-CNN input is ", x.shape().str(),
             ", expected [N, D, H, W, ", config_.in_channels, "] (", config_.str(), ")");
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
  const Tensor shortcut = config_.in_channels == 1 ? x : split_channels(x, 1).first;
  return add(tconvs_[4]->forward(relus_[8]->forward(h)), shortcut);
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
  if (config_.in_channels == 1) return add(g, dy);
  auto [g_ld, g_guide] = split_channels(g, 1);  // the shortcut reaches the low-dose channel only
  return concat_channels(add(g_ld, dy), g_guide);
}

namespace {

constexpr const char* kRedCnnFormat = "ctsr-redcnn";

std::string window_text(const io::HuWindow& w) {
  std::ostringstream s;
  s << w.lo << "," << w.hi;
  return s.str();
}

// A whole-number metadata value of `file`, at least `smallest`.
int64_t metadata_integer(const std::map<std::string, std::string>& meta, const std::string& key,
                         const std::string& file, int64_t smallest) {
  auto it = meta.find(key);
  CTSR_CHECK(it != meta.end(), file, ": the metadata has no '", key, "' (expected a RED-CNN weights file ",
             "written by ctsr_train_redcnn)");
  size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(it->second, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  CTSR_CHECK(used == it->second.size() && used > 0 && value >= smallest, file, ": metadata ", key, " is '", it->second,
             "'; expected a whole number of at least ", smallest);
  return value;
}

}  // namespace

void write_redcnn_weights(const std::filesystem::path& path, RedCnn& net, const io::HuWindow& window,
                          const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (Parameter* p : net.parameters()) tensors.emplace_back(p->name, p->value);
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = kRedCnnFormat;
  meta["channels"] = std::to_string(net.config().channels);
  meta["kernel"] = std::to_string(net.config().kernel);
  meta["in_channels"] = std::to_string(net.config().in_channels);
  meta["hu_window"] = window_text(window);
  io::write_safetensors(path, tensors, meta);
}

LoadedRedCnn load_redcnn_weights(const std::filesystem::path& path, const LayerOptions& options) {
  CTSR_CHECK(std::filesystem::is_regular_file(path), path.string(), ": no such RED-CNN weights file");
  const io::SafetensorsReader reader(path);
  const std::string file = path.string();
  const auto& meta = reader.metadata();
  auto format = meta.find("format");
  CTSR_CHECK(format != meta.end() && format->second == kRedCnnFormat, file, ": metadata format is '",
             format == meta.end() ? std::string("(none)") : format->second, "'; expected '", kRedCnnFormat,
             "' (a RED-CNN weights file written by ctsr_train_redcnn)");
  RedCnnConfig config;
  config.channels = metadata_integer(meta, "channels", file, 1);
  config.kernel = metadata_integer(meta, "kernel", file, 1);
  CTSR_CHECK(config.kernel % 2 == 1, file, ": metadata kernel is ", config.kernel, "; expected an odd size");
  if (meta.count("in_channels")) config.in_channels = metadata_integer(meta, "in_channels", file, 1);
  CTSR_CHECK(config.in_channels <= 2, file, ": metadata in_channels is ", config.in_channels,
             "; expected 1 (RED-CNN) or 2 (the guided refiner)");
  auto window = meta.find("hu_window");
  CTSR_CHECK(window != meta.end(), file, ": the metadata has no 'hu_window' (expected \"lo,hi\" in HU)");
  LoadedRedCnn out;
  try {
    out.window = io::parse_hu_window(window->second);
  } catch (const Error& e) {
    CTSR_FAIL(file, ": metadata hu_window: ", e.what());
  }
  out.metadata = meta;
  out.net = std::make_unique<RedCnn>(config, options);
  for (Parameter* p : out.net->parameters()) {
    CTSR_CHECK(reader.contains(p->name), file, ": no tensor '", p->name, "' (expected every parameter of ",
               config.str(), ")");
    const io::TensorRecord& record = reader.record(p->name);
    CTSR_CHECK(record.dtype == DType::float32 && Shape(record.shape) == p->value.shape(), file, ": tensor '", p->name,
               "' is ", Shape(record.shape).str(), " ", dtype_name(record.dtype), "; expected ", p->value.shape().str(),
               " float32 (", config.str(), ")");
    p->value.copy_from(reader.load(p->name));
  }
  CTSR_CHECK(reader.names().size() == out.net->parameters().size(), file, ": holds ", reader.names().size(),
             " tensors; expected the ", out.net->parameters().size(), " parameters of ", config.str());
  return out;
}

void init_redcnn_from(RedCnn& net, RedCnn& source, const std::string& source_name) {
  const RedCnnConfig &a = net.config(), &b = source.config();
  CTSR_CHECK(a.channels == b.channels && a.kernel == b.kernel && a.in_channels >= b.in_channels, source_name, ": ",
             b.str(), " cannot start ", a.str(), "; expected the same channels and kernel, and no more inputs");
  const std::vector<Parameter*> to = net.parameters(), from = source.parameters();
  for (size_t i = 0; i < to.size(); ++i) {
    const Tensor& w = from[i]->value;
    if (w.shape() == to[i]->value.shape()) {
      to[i]->value.copy_from(w);
      continue;
    }
    // conv1.weight [C, 1, k, k, Ci]: the source's input channels first, zeros after.
    CTSR_CHECK(from[i]->name == "conv1.weight", source_name, ": tensor ", from[i]->name, " is ", w.shape().str(),
               ", expected ", to[i]->value.shape().str());
    const Tensor src = w.to(Device::cpu());
    Tensor dst = Tensor::zeros(to[i]->value.shape(), DType::float32, Device::cpu());
    const int64_t ci_from = w.dim(4), ci_to = dst.dim(4), taps = w.numel() / ci_from;
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t c = 0; c < ci_from; ++c) dst.data<float>()[t * ci_to + c] = src.data<float>()[t * ci_from + c];
    to[i]->value.copy_from(dst.to(to[i]->value.device()));
  }
}

namespace {

Tensor restore_slabs(RedCnn& net, const Tensor& volume, const Tensor* guide, int64_t slab) {
  auto check = [](const Tensor& v, const char* what) {
    CTSR_CHECK(v.ndim() == 3 && v.dtype() == DType::float32, "restore_volume: the ", what, " is ", v.shape().str(), " ",
               dtype_name(v.dtype()), ", expected [D, H, W] float32");
  };
  check(volume, "volume");
  CTSR_CHECK((guide != nullptr) == (net.config().in_channels == 2), "restore_volume: ", net.config().str(),
             guide ? " takes no guide volume" : " needs a guide volume");
  if (guide) {
    check(*guide, "guide");
    CTSR_CHECK(guide->shape() == volume.shape(), "restore_volume: the guide is ", guide->shape().str(),
               " but the volume is ", volume.shape().str(), "; expected one shape");
  }
  const int64_t D = volume.dim(0), H = volume.dim(1), W = volume.dim(2);
  NoGradGuard no_grad;
  const int64_t step = slab > 0 ? std::min(slab, D) : D;
  const Tensor guide_here = guide ? guide->to(volume.device()) : Tensor();  // moved once, not per slab
  Tensor out = Tensor::empty({D, H, W}, DType::float32, volume.device());
  for (int64_t d = 0; d < D; d += step) {
    const int64_t n = std::min(step, D - d);
    Tensor x = volume.slice(d, d + n).reshape({1, n, H, W, 1});
    if (guide) x = concat_channels(x, guide_here.slice(d, d + n).reshape({1, n, H, W, 1}));
    Tensor part = out.slice(d, d + n);
    part.copy_from(net.forward(x).reshape({n, H, W}));
  }
  return out;
}

}  // namespace

Tensor restore_volume(RedCnn& net, const Tensor& volume, int64_t slab) { return restore_slabs(net, volume, nullptr, slab); }

Tensor restore_volume(RedCnn& net, const Tensor& volume, const Tensor& guide, int64_t slab) {
  return restore_slabs(net, volume, &guide, slab);
}

}  // namespace ctsr
