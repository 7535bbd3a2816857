// Nearest-neighbour resizing of the spatial dims, and channel concatenation, for the UNet's
// up path (Up resizes to the skip's size; the skip is then concatenated along channels).
//
// Layout: channels-last [N, D, H, W, C].
//   resample_nearest_forward(x, {Do, Ho, Wo}):  y[n, i, j, k, c] = x[n, src_D(i), src_H(j), src_W(k), c]
//     with PyTorch's 'nearest' rule per axis, src(i) = floor(i * n_in / n_out), in integer
//     arithmetic (no float rounding at any size). Works for upsizing, downsizing, any ratio.
//   resample_nearest_backward(dy, {D, H, W}):  dx = the adjoint, computed as a GATHER: source
//     index j along an axis receives the destinations ceil(j * out / in) .. ceil((j+1) * out / in) - 1
//     (possibly none when downsizing), summed in increasing (d, h, w) order. No atomics, so
//     every path gives the same bits.
//   concat_channels(a [..., Ca], b [..., Cb]) -> [..., Ca + Cb] (a's channels first);
//   split_channels(dy [..., C], Ca) -> {dy[..., :Ca], dy[..., Ca:]}, its backward (and the
//     backward of split is concat). Leading dims of a and b must match.
// Nothing is saved for backward beyond the sizes. Paths: cpu reference (float32, float64),
// CUDA and CUDA-on-CPU (float32).
#pragma once

#include <array>
#include <utility>

#include "kernels/launchers.h"
#include "runtime/host_device.h"
#include "runtime/tensor.h"

namespace ctsr {

Tensor resample_nearest_forward(const Tensor& x, const std::array<int64_t, 3>& out_size);
Tensor resample_nearest_backward(const Tensor& dy, const std::array<int64_t, 3>& in_size);

Tensor concat_channels(const Tensor& a, const Tensor& b);
std::pair<Tensor, Tensor> split_channels(const Tensor& dy, int64_t channels_first);

}  // namespace ctsr

namespace ctsr::kernels {
// Source index along one axis for destination index i (PyTorch 'nearest').
CTSR_HD inline int64_t nearest_source_index(int64_t i, int64_t n_in, int64_t n_out) { return i * n_in / n_out; }
// The destinations [first, last) that read source index j along one axis.
CTSR_HD inline int64_t nearest_first_destination(int64_t j, int64_t n_in, int64_t n_out) {
  return (j * n_out + n_in - 1) / n_in;
}

// [N, D, H, W, C] sizes of a resampling: input (d, h, w) and output (od, oh, ow).
struct ResampleShape {
  int64_t n = 0, c = 0;
  int64_t d = 0, h = 0, w = 0;
  int64_t od = 0, oh = 0, ow = 0;
};
}  // namespace ctsr::kernels

CTSR_DECLARE_LAUNCHERS(
  void resample_nearest_forward(const ResampleShape& shape, const Tensor& x, Tensor& y);
  void resample_nearest_backward(const ResampleShape& shape, const Tensor& dy, Tensor& dx);
  // out[r, :] = [a[r, :ca], b[r, :cb]] over `rows` rows, and its inverse.
  void concat_channels(int64_t rows, int64_t ca, int64_t cb, const Tensor& a, const Tensor& b, Tensor& out);
  void split_channels(int64_t rows, int64_t ca, int64_t cb, const Tensor& in, Tensor& a, Tensor& b);
)

namespace ctsr::kernels::cpu {
template <class T> void resample_nearest_forward(const ResampleShape& shape, const T* x, T* y);
template <class T> void resample_nearest_backward(const ResampleShape& shape, const T* dy, T* dx);
template <class T> void concat_channels(int64_t rows, int64_t ca, int64_t cb, const T* a, const T* b, T* out);
template <class T> void split_channels(int64_t rows, int64_t ca, int64_t cb, const T* in, T* a, T* b);
}  // namespace ctsr::kernels::cpu
