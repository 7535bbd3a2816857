#include "runtime/tensor.h"

#include <cstring>
#include <sstream>

#include "runtime/allocator.h"
#include "runtime/cuda_on_cpu/device_memory.h"
#include "runtime/cuda_runtime_bridge.h"

namespace ctsr {

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::vector<int64_t>(dims)) {}

Shape::Shape(const std::vector<int64_t>& dims) {
  CTSR_CHECK(dims.size() <= static_cast<size_t>(kMaxDims), "shape with ", dims.size(), " dimensions: at most ",
             kMaxDims, " are supported");
  ndim_ = static_cast<int>(dims.size());
  for (int i = 0; i < ndim_; ++i) {
    CTSR_CHECK(dims[i] >= 0 || dims[i] == -1, "shape dimension ", i, " is ", dims[i], ": expected >= 0");
    dims_[i] = dims[i];
  }
  numel();  // a shape whose element count does not fit in int64 is refused here, where it is made
}

std::string dims_text(const int64_t* dims, size_t n) {
  std::string s = "[";
  for (size_t i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

int64_t checked_numel(const int64_t* dims, size_t ndim, std::string_view what) {
  bool negative = false, empty = false;
  for (size_t i = 0; i < ndim; ++i) {
    CTSR_CHECK(dims[i] >= -1, what, " ", dims_text(dims, ndim), ": dimension ", i, " is ", dims[i], "; expected >= 0");
    negative = negative || dims[i] == -1;  // the inferred dimension of a reshape: the others' product, negated
    empty = empty || dims[i] == 0;
  }
  if (empty) return 0;
  int64_t n = 1;
  for (size_t i = 0; i < ndim; ++i)
    if (dims[i] != -1)
      CTSR_CHECK(!__builtin_mul_overflow(n, dims[i], &n), what, " ", dims_text(dims, ndim),
                 " has more than 2^63 - 1 elements (a corrupt or hostile size)");
  return negative ? -n : n;
}

uint64_t checked_bytes(int64_t numel, size_t element_size, std::string_view what) {
  CTSR_CHECK(numel >= 0, what, ": ", numel, " elements; expected >= 0");
  uint64_t bytes = 0;
  CTSR_CHECK(!__builtin_mul_overflow(static_cast<uint64_t>(numel), static_cast<uint64_t>(element_size), &bytes) &&
                 bytes <= static_cast<uint64_t>(INT64_MAX),
             what, ": ", numel, " elements of ", element_size, " bytes are more than 2^63 - 1 bytes");
  return bytes;
}

int64_t Shape::operator[](int i) const {
  int j = i < 0 ? i + ndim_ : i;
  CTSR_CHECK(j >= 0 && j < ndim_, "dimension ", i, " out of range for shape ", str());
  return dims_[j];
}

int64_t& Shape::operator[](int i) {
  int j = i < 0 ? i + ndim_ : i;
  CTSR_CHECK(j >= 0 && j < ndim_, "dimension ", i, " out of range for shape ", str());
  return dims_[j];
}

int64_t Shape::numel() const {
  // The common case in one pass (numel is called in loops and per op): non-negative dims whose
  // product fits; anything else (-1, overflow) goes to checked_numel for its result or its error.
  int64_t n = 1;
  for (int i = 0; i < ndim_; ++i)
    if (dims_[i] < 0 || __builtin_mul_overflow(n, dims_[i], &n))
      return checked_numel(dims_.data(), static_cast<size_t>(ndim_), "shape");
  return n;
}

std::string Shape::str() const { return dims_text(dims_.data(), static_cast<size_t>(ndim_)); }

bool Shape::operator==(const Shape& o) const {
  if (ndim_ != o.ndim_) return false;
  for (int i = 0; i < ndim_; ++i)
    if (dims_[i] != o.dims_[i]) return false;
  return true;
}

Storage::Storage(Device device, size_t bytes)
    : device_(device), bytes_(bytes), data_(device_allocate(device, bytes)) {}

Storage::~Storage() { device_deallocate(device_, data_); }

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int i = 0; i < shape.ndim(); ++i)
    CTSR_CHECK(shape[i] >= 0, "Tensor::empty: dimension ", i, " of ", shape.str(), " is negative");
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(
      device, static_cast<size_t>(checked_bytes(shape.numel(), dtype_size(dtype), "Tensor::empty")));
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (device.is_host_memory()) {
    std::memset(t.raw_data(), 0, t.nbytes());
  } else if (device.kind == DeviceKind::cuda_on_cpu) {
    cuda_on_cpu::DeviceMemoryAccess access;  // the executor's cudaMemset
    std::memset(t.raw_data(), 0, t.nbytes());
  } else {
    std::vector<unsigned char> z(t.nbytes(), 0);
    copy_bytes(t.raw_data(), device, z.data(), Device::cpu(), z.size());
  }
  return t;
}

void* Tensor::raw_data() const {
  check_defined("raw_data");
  return static_cast<char*>(storage_->data()) + offset_bytes_;
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  check_defined("slice");
  CTSR_CHECK(ndim() >= 1, "slice of a 0-dimensional tensor");
  CTSR_CHECK(0 <= begin && begin <= end && end <= dim(0), "slice [", begin, ", ", end, ") out of range for ",
             shape_.str());
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.offset_bytes_ += static_cast<size_t>(begin) * (numel() / std::max<int64_t>(dim(0), 1)) * dtype_size(dtype_);
  return t;
}

Tensor Tensor::select(int64_t index) const {
  CTSR_CHECK(ndim() >= 1 && 0 <= index && index < dim(0), "select(", index, ") out of range for ", shape_.str());
  Tensor t = slice(index, index + 1);
  std::vector<int64_t> d = shape_.vec();
  d.erase(d.begin());
  t.shape_ = Shape(d);
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  check_defined("reshape");
  std::vector<int64_t> d = shape.vec();
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < static_cast<int>(d.size()); ++i) {
    if (d[i] == -1) {
      CTSR_CHECK(infer < 0, "reshape to ", shape.str(), ": at most one dimension may be -1");
      infer = i;
    } else {
      known *= d[i];
    }
  }
  if (infer >= 0) {
    CTSR_CHECK(known > 0 && numel() % known == 0, "reshape ", shape_.str(), " to ", shape.str(), ": ", numel(),
               " elements do not divide");
    d[infer] = numel() / known;
  }
  Shape s(d);
  CTSR_CHECK(s.numel() == numel(), "reshape ", shape_.str(), " (", numel(), " elements) to ", s.str(), " (",
             s.numel(), " elements)");
  Tensor t = *this;
  t.shape_ = s;
  return t;
}

Tensor Tensor::to(Device device) const {
  check_defined("to");
  Tensor t = empty(shape_, dtype_, device);
  copy_bytes(t.raw_data(), device, raw_data(), this->device(), nbytes());
  return t;
}

Tensor Tensor::clone() const { return to(device()); }

void Tensor::copy_from(const Tensor& src) {
  src.check_defined("copy_from source");
  check_shape(src.shape(), "copy_from");
  check_dtype(src.dtype(), "copy_from");
  copy_bytes(raw_data(), device(), src.raw_data(), src.device(), nbytes());
}

namespace {
template <class T>
std::string format_value(T v) {
  std::ostringstream s;
  if constexpr (std::is_same_v<T, uint8_t>) s << static_cast<int>(v);
  else if constexpr (std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>) s << static_cast<float>(v);
  else s << v;
  return s.str();
}
}  // namespace

std::string Tensor::to_string(int64_t max_elements) const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream s;
  s << "Tensor" << shape_.str() << " " << dtype_name(dtype_) << " " << device().str() << " {";
  Tensor host = device().is_host_memory() ? *this : to(Device::cpu());
  int64_t n = std::min(numel(), max_elements);
  visit_dtype(dtype_, [&](auto tag) {
    using T = decltype(tag);
    const T* p = static_cast<const T*>(host.raw_data());
    for (int64_t i = 0; i < n; ++i) s << (i ? ", " : "") << format_value(p[i]);
  });
  if (numel() > n) s << ", ... (" << numel() << " total)";
  s << "}";
  return s.str();
}

void Tensor::check_defined(const char* what) const {
  CTSR_CHECK(storage_ != nullptr, what, ": tensor is undefined");
}

void Tensor::check_dtype(DType expected, const char* what) const {
  check_defined(what);
  CTSR_CHECK(dtype_ == expected, what, ": tensor ", shape_.str(), " is ", dtype_name(dtype_), ", expected ",
             dtype_name(expected));
}

void Tensor::check_shape(const Shape& expected, const char* what) const {
  check_defined(what);
  CTSR_CHECK(shape_ == expected, what, ": tensor has shape ", shape_.str(), ", expected ", expected.str());
}

void Tensor::check_device(Device expected, const char* what) const {
  check_defined(what);
  CTSR_CHECK(device() == expected, what, ": tensor is on ", device().str(), ", expected ", expected.str());
}

void copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t bytes) {
  if (bytes == 0 || dst == src) return;
  if (dd.is_host_memory() && sd.is_host_memory()) {
    std::memcpy(dst, src, bytes);
    return;
  }
  // Executor device memory under full checks: a copy is one of the places it may be touched.
  cuda_on_cpu::DeviceMemoryAccess access(dd.kind == DeviceKind::cuda_on_cpu || sd.kind == DeviceKind::cuda_on_cpu);
  if (dd.kind != DeviceKind::cuda && sd.kind != DeviceKind::cuda) {
    std::memcpy(dst, src, bytes);
  } else if (dd.kind == DeviceKind::cuda && sd.kind != DeviceKind::cuda) {
    bridge::copy(dst, src, bytes, bridge::CopyKind::host_to_device, dd.index);
  } else if (dd.kind != DeviceKind::cuda && sd.kind == DeviceKind::cuda) {
    bridge::copy(dst, src, bytes, bridge::CopyKind::device_to_host, sd.index);
  } else {
    CTSR_CHECK(dd.index == sd.index, "copy from ", sd.str(), " to ", dd.str(),
               ": copies between two GPUs go through the host or NCCL");
    bridge::copy(dst, src, bytes, bridge::CopyKind::device_to_device, dd.index);
  }
}

void check_same_device(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> ts) {
  const std::pair<const char*, const Tensor*>* first = nullptr;
  for (const auto& p : ts) {
    if (!p.second->defined()) continue;
    if (!first) {
      first = &p;
      continue;
    }
    CTSR_CHECK(p.second->device() == first->second->device(), op, ": ", p.first, " is on ",
               p.second->device().str(), " but ", first->first, " is on ", first->second->device().str());
  }
}

void check_same_dtype(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> ts) {
  const std::pair<const char*, const Tensor*>* first = nullptr;
  for (const auto& p : ts) {
    if (!p.second->defined()) continue;
    if (!first) {
      first = &p;
      continue;
    }
    CTSR_CHECK(p.second->dtype() == first->second->dtype(), op, ": ", p.first, " is ",
               dtype_name(p.second->dtype()), " but ", first->first, " is ", dtype_name(first->second->dtype()));
  }
}

}  // namespace ctsr
