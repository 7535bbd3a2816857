// CUDA kernels for fill, copy and cast (kernels/copy.h): one thread per element (per word for
// copy) in a grid-stride loop. Memory-bound, so the only tuning is the width of each access:
// copy moves the widest word (8, 4, 2 or 1 bytes) that divides the size and both addresses,
// fill writes the element's bit pattern as an unsigned word of the element's size, and cast
// converts with kernels/cast_value.h, the rule the reference uses, so every path agrees bitwise.
#include "runtime/kernel_prelude.h"

#include <cstring>

#include "kernels/cast_value.h"
#include "kernels/copy.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

template <class Word>
__global__ void fill_kernel(Word* __restrict__ y, Word value, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = value;
}

template <class Word>
__global__ void copy_kernel(const Word* __restrict__ x, Word* __restrict__ y, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = x[i];
}

template <class From, class To>
__global__ void cast_kernel(const From* __restrict__ x, To* __restrict__ y, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = cast_rules::cast_value<To>(x[i]);
}

constexpr unsigned kThreads = 256;
constexpr unsigned kMaxBlocks = 4096;  // grid-stride beyond this

unsigned grid_for(int64_t n) { return std::min<unsigned>(kMaxBlocks, std::max<unsigned>(1, blocks_for(n, kThreads))); }

// The unsigned type of `bytes` bytes, for moving bit patterns.
template <size_t bytes>
using word_t = std::conditional_t<bytes == 1, uint8_t,
                                  std::conditional_t<bytes == 2, uint16_t, std::conditional_t<bytes == 4, uint32_t, uint64_t>>>;

template <size_t bytes>
void launch_copy_words(Device device, const void* x, void* y, size_t nbytes) {
  using W = word_t<bytes>;
  const int64_t n = int64_t(nbytes / bytes);
  launch_kernel(device, copy_kernel<W>, grid_for(n), kThreads, 0, static_cast<const W*>(x), static_cast<W*>(y), n);
}

}  // namespace

void fill(Tensor& y, double value) {
  visit_dtype(y.dtype(), [&](auto tag) {
    using T = decltype(tag);
    using W = word_t<sizeof(T)>;
    const T converted = cast_rules::cast_value<T>(value);  // on the host, by the reference's rule
    W bits;
    std::memcpy(&bits, &converted, sizeof bits);
    launch_kernel(y.device(), fill_kernel<W>, grid_for(y.numel()), kThreads, 0, static_cast<W*>(y.raw_data()), bits,
                  y.numel());
  });
}

void copy(const Tensor& x, Tensor& y) {
  y.check_shape(x.shape(), "copy (CUDA) y");
  y.check_dtype(x.dtype(), "copy (CUDA) y");
  const size_t nbytes = x.nbytes();
  const auto fits = [&](size_t word) {
    return nbytes % word == 0 && reinterpret_cast<uintptr_t>(x.raw_data()) % word == 0 &&
           reinterpret_cast<uintptr_t>(y.raw_data()) % word == 0;
  };
  if (fits(8)) launch_copy_words<8>(x.device(), x.raw_data(), y.raw_data(), nbytes);
  else if (fits(4)) launch_copy_words<4>(x.device(), x.raw_data(), y.raw_data(), nbytes);
  else if (fits(2)) launch_copy_words<2>(x.device(), x.raw_data(), y.raw_data(), nbytes);
  else launch_copy_words<1>(x.device(), x.raw_data(), y.raw_data(), nbytes);
}

void cast(const Tensor& x, Tensor& y) {
  y.check_shape(x.shape(), "cast (CUDA) y");
  visit_dtype(x.dtype(), [&](auto from_tag) {
    using From = decltype(from_tag);
    visit_dtype(y.dtype(), [&](auto to_tag) {
      using To = decltype(to_tag);
      launch_kernel(x.device(), cast_kernel<From, To>, grid_for(x.numel()), kThreads, 0,
                    static_cast<const From*>(x.raw_data()), static_cast<To*>(y.raw_data()), x.numel());
    });
  });
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
