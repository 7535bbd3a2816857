// Tensor: a contiguous array of up to 6 dimensions on one device, with refcounted storage
// shared between a tensor and its views. Views are taken along the outermost dimension only
// (slice, select) or by reshaping, so every tensor stays contiguous and kernels take plain
// pointers. Shape, dtype and device mismatches throw with both sides named.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/error.h"

namespace ctsr {

constexpr int kMaxDims = 6;

// The element count of dims[0..ndim) (each >= 0; a -1, reshape's inferred dimension, makes the
// result the negated product of the others), or an error naming `what` and the shape when the
// product does not fit in int64: every size read from a file reaches Shape, and so this, before
// anything is allocated.
int64_t checked_numel(const int64_t* dims, size_t ndim, std::string_view what);
inline int64_t checked_numel(const std::vector<int64_t>& dims, std::string_view what) {
  return checked_numel(dims.data(), dims.size(), what);
}
// "[2, 25, 16]": dims as Shape::str() writes them, for sizes that may not make a valid Shape.
std::string dims_text(const int64_t* dims, size_t ndim);
inline std::string dims_text(const std::vector<int64_t>& dims) { return dims_text(dims.data(), dims.size()); }
// numel * element_size, or an error naming `what` when it does not fit in int64.
uint64_t checked_bytes(int64_t numel, size_t element_size, std::string_view what);

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(const std::vector<int64_t>& dims);
  int ndim() const { return ndim_; }
  int64_t operator[](int i) const;   // negative i counts from the end
  int64_t& operator[](int i);
  int64_t numel() const;            // overflow-checked (checked_numel)
  std::vector<int64_t> vec() const { return {dims_.begin(), dims_.begin() + ndim_}; }
  std::string str() const;           // "[2, 25, 16, 16, 8]"
  bool operator==(const Shape& o) const;

 private:
  std::array<int64_t, kMaxDims> dims_{};
  int ndim_ = 0;
};

// The buffer behind one or more tensors; returns its memory to the device allocator.
class Storage {
 public:
  Storage(Device device, size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  Device device_;
  size_t bytes_;
  void* data_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor: defined() is false
  static Tensor empty(const Shape& shape, DType dtype = DType::float32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::float32, Device device = Device::cpu());
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu());

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return shape_.ndim(); }
  int64_t dim(int i) const { return shape_[i]; }
  int64_t numel() const { return shape_.numel(); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  // Raw pointer to the first element (device memory for cuda tensors).
  void* raw_data() const;
  // Typed pointer; throws unless T matches the dtype.
  template <class T>
  T* data() const {
    check_dtype(dtype_v<T>, "data<T>()");
    return static_cast<T*>(raw_data());
  }

  // Views sharing storage.
  Tensor slice(int64_t begin, int64_t end) const;  // rows [begin, end) of dim 0
  Tensor select(int64_t index) const;              // row `index` of dim 0, one dim fewer
  Tensor reshape(const Shape& shape) const;        // same numel; one dim may be -1

  // Copies.
  Tensor to(Device device) const;
  Tensor clone() const;
  void copy_from(const Tensor& src);               // same shape and dtype, any devices
  template <class T>
  std::vector<T> to_vector() const;                // to host, dtype must be T

  std::string to_string(int64_t max_elements = 8) const;  // "Tensor[2, 3] float32 cpu {0.1, ...}"

  // Errors that name both sides: "silu_forward: x is float64 but y is float32".
  void check_dtype(DType expected, const char* what) const;
  void check_shape(const Shape& expected, const char* what) const;
  void check_device(Device expected, const char* what) const;
  void check_defined(const char* what) const;

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_bytes_ = 0;
  Shape shape_;
  DType dtype_ = DType::float32;
};

// Copies bytes between any two devices (host, cuda_on_cpu, GPU).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);

// Checks shared by ops: same device and dtype for every defined tensor; names op and tensors.
void check_same_device(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> tensors);
void check_same_dtype(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> tensors);

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  CTSR_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "from_vector: ", values.size(),
             " values for shape ", shape.str(), " (", shape.numel(), " elements)");
  Tensor t = empty(shape, dtype_v<T>, device);
  copy_bytes(t.raw_data(), device, values.data(), Device::cpu(), values.size() * sizeof(T));
  return t;
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  check_dtype(dtype_v<T>, "to_vector<T>()");
  std::vector<T> out(static_cast<size_t>(numel()));
  copy_bytes(out.data(), Device::cpu(), raw_data(), device(), nbytes());
  return out;
}

}  // namespace ctsr
