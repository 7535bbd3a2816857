#include "model/pytorch_import.h"

#include <cstring>
#include <sstream>

#include "kernels/copy.h"
#include "runtime/error.h"

namespace ctsr {

namespace {
std::vector<int64_t> dims_of(const Shape& s) { return s.vec(); }
Tensor move_dim1_last(const Tensor& t) { return move_axis_last(t, 1); }
Tensor move_last_dim1(const Tensor& t) { return move_last_axis_to(t, 1); }

}  // namespace

namespace {
// Moves axis `axis` of a host tensor [outer..., n, inner...] to the end, or back.
Tensor permute_axis(const Tensor& t, int axis, bool to_last) {
  const std::vector<int64_t> d = dims_of(t.shape());
  const int nd = static_cast<int>(d.size());
  CTSR_CHECK(t.device().kind != DeviceKind::cuda, "move_axis: host tensors only (got ", t.device().str(), ")");
  CTSR_CHECK(axis >= 0 && axis < nd, "move_axis: axis ", axis, " of a ", nd, "-dimensional tensor");
  std::vector<int64_t> out_dims;
  int64_t outer = 1, n, inner = 1;
  if (to_last) {
    for (int i = 0; i < axis; ++i) outer *= d[i];
    n = d[axis];
    for (int i = axis + 1; i < nd; ++i) inner *= d[i];
    out_dims = d;
    out_dims.erase(out_dims.begin() + axis);
    out_dims.push_back(n);
  } else {
    for (int i = 0; i < axis; ++i) outer *= d[i];
    n = d[nd - 1];
    for (int i = axis; i < nd - 1; ++i) inner *= d[i];
    out_dims = d;
    out_dims.pop_back();
    out_dims.insert(out_dims.begin() + axis, n);
  }
  Tensor out = Tensor::empty(Shape(out_dims), t.dtype(), Device::cpu());
  const size_t es = dtype_size(t.dtype());
  const auto* src = static_cast<const unsigned char*>(t.raw_data());
  auto* dst = static_cast<unsigned char*>(out.raw_data());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t k = 0; k < inner; ++k) {
        const int64_t axis_major = (o * n + j) * inner + k, axis_minor = (o * inner + k) * n + j;
        if (to_last) std::memcpy(dst + axis_minor * es, src + axis_major * es, es);
        else std::memcpy(dst + axis_major * es, src + axis_minor * es, es);
      }
  return out;
}
}  // namespace

Tensor move_axis_last(const Tensor& t, int axis) { return permute_axis(t, axis, true); }
Tensor move_last_axis_to(const Tensor& t, int axis) { return permute_axis(t, axis, false); }

Shape pytorch_shape(const Shape& ours, int pytorch_ndim) {
  std::vector<int64_t> d = dims_of(ours);
  if (pytorch_ndim == 5 && d.size() == 2) return Shape({d[0], d[1], 1, 1, 1});
  if (pytorch_ndim == 5 && d.size() == 5) return Shape({d[0], d[4], d[1], d[2], d[3]});
  return ours;
}

Tensor from_pytorch_layout(const Tensor& t, const Shape& ours, DType dtype, const std::string& file,
                           const std::string& key) {
  CTSR_CHECK(dtype_is_floating(t.dtype()), file, ": tensor '", key, "' is ", dtype_name(t.dtype()),
             ", expected a floating-point weight");
  const Shape expected = pytorch_shape(ours, t.ndim());
  CTSR_CHECK(t.shape() == expected, file, ": tensor '", key, "' has shape ", t.shape().str(), ", expected ",
             expected.str(), " (PyTorch layout) for the architecture read from this file");
  Tensor host = t.device().kind == DeviceKind::cpu ? t : t.to(Device::cpu());
  if (host.dtype() != dtype) host = cast(host, dtype);
  if (t.ndim() == 5) host = ours.ndim() == 2 ? host.reshape(ours) : move_dim1_last(host);
  CTSR_CHECK(host.shape() == ours, "internal: converted '", key, "' to ", host.shape().str(), " not ", ours.str());
  return host;
}

Tensor to_pytorch_layout(const Tensor& ours, int pytorch_ndim) {
  Tensor host = ours.to(Device::cpu());
  if (host.dtype() != DType::float32) host = cast(host, DType::float32);
  if (pytorch_ndim == 5 && host.ndim() == 2) return host.reshape(pytorch_shape(host.shape(), 5));
  if (pytorch_ndim == 5 && host.ndim() == 5) return move_last_dim1(host);
  return host;
}

void load_parameters(const io::TensorSource& source, const std::vector<Parameter*>& params,
                     const std::function<std::string(const std::string&)>& key_of) {
  const std::string file = source.path().filename().string();
  std::vector<std::string> missing;
  for (Parameter* p : params)
    if (!source.contains(key_of(p->name))) missing.push_back(key_of(p->name));
  if (!missing.empty()) {
    std::ostringstream list;
    for (size_t i = 0; i < missing.size() && i < 3; ++i) list << (i ? ", " : "") << "'" << missing[i] << "'";
    CTSR_FAIL(file, ": ", missing.size(), " of the ", params.size(), " tensors the model needs ",
              missing.size() == 1 ? "is" : "are", " missing: ", list.str(), missing.size() > 3 ? ", ..." : "");
  }
  for (Parameter* p : params) {
    const std::string key = key_of(p->name);
    Tensor value = from_pytorch_layout(source.load(key), p->value.shape(), p->value.dtype(), file, key);
    p->value.copy_from(value);
  }
}

}  // namespace ctsr
