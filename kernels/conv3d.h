// 3D convolution (PyTorch Conv3d semantics: cross-correlation, zero padding, no dilation, one
// group), forward and the three backwards.
//
// Layout: channels-last. x [N, D, H, W, Ci], weight [Co, kD, kH, kW, Ci], bias [Co] (optional),
// y [N, Do, Ho, Wo, Co] with Do = (D + 2 pD - kD) / sD + 1 per axis (floor, like PyTorch):
//   y[n, o, co] = b[co] + sum_{tap, ci} x[n, o * s - p + tap, ci] * w[co, tap, ci]
// (o, tap: 3-vectors; x is zero outside [0, D) x [0, H) x [0, W)). In GEMM terms, with M = N Do
// Ho Wo output voxels and K = kD kH kW Ci:  Y[M, Co] = X_col[M, K] * W[Co, K]^T.
//   conv3d_backward_data    dx = the adjoint of forward in x (needs only dy, w and x's shape)
//   conv3d_backward_weight  dw[co, tap, ci] += sum_m dy[m, co] * X_col[m, (tap, ci)]
//   conv3d_backward_bias    db[co] += sum_m dy[m, co]
// The two parameter backwards ACCUMULATE into dw / db (created as zeros when undefined), the
// layer contract of model/module.h. A layer saves x in forward for backward_weight; nothing else.
//
// Paths:
//   cpu          reference (float32, float64): im2col of a bounded chunk of output rows + GEMM
//                through ctsr::gemm (OpenBLAS); kernels/cpu/conv3d.cpp.
//   cuda         float32, one of two engines, chosen process-wide (set_conv_engine; config key
//                kernels.conv): `custom`, our implicit-GEMM kernels (kernels/conv3d.cu), or
//                `cudnn`, the same ops through cuDNN's convolution API (kernels/conv3d_cudnn.cpp).
//   cuda_on_cpu  the custom kernels on the CUDA-on-CPU executor (the cudnn engine is an error).
// The engine applies to GPU tensors: with cudnn selected, tensors on cpu or cuda_on_cpu are an
// error naming the device (a configuration mistake is reported, not silently worked around).
// The custom CUDA path is deterministic (fixed reduction orders, no float atomics); the cudnn
// engine prefers deterministic algorithms but cannot promise them for every shape.
#pragma once

#include <array>
#include <string>

#include "kernels/launchers.h"
#include "runtime/host_device.h"
#include "runtime/tensor.h"

namespace ctsr {

// Per axis (D, H, W): kernel size, stride and zero padding.
struct Conv3dParams {
  std::array<int64_t, 3> kernel{1, 1, 1};
  std::array<int64_t, 3> stride{1, 1, 1};
  std::array<int64_t, 3> padding{0, 0, 0};

  // The same kernel size, stride and padding along every axis.
  static Conv3dParams cubic(int64_t kernel, int64_t stride = 1, int64_t padding = 0);
  std::string str() const;  // "kernel [3, 3, 3] stride [2, 2, 2] padding [1, 1, 1]"
};

// Output size per axis, (in + 2 p - k) / s + 1. Throws, naming `op`, the axis and the values,
// when params are invalid (kernel or stride < 1, padding < 0) or the kernel is larger than the
// padded input.
std::array<int64_t, 3> conv3d_output_size(const char* op, const std::array<int64_t, 3>& in, const Conv3dParams& p);

// bias may be an undefined Tensor (no bias).
Tensor conv3d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv3dParams& params);
// dx of shape x_shape ([N, D, H, W, Ci]). Input voxels no output window reaches (when
// (D + 2p - k) % s != 0) get zero gradient, as in PyTorch.
Tensor conv3d_backward_data(const Tensor& dy, const Tensor& weight, const Shape& x_shape, const Conv3dParams& params);
// dweight += dL/dw ([Co, kD, kH, kW, Ci], Co from dy, Ci from x); created as zeros when undefined.
void conv3d_backward_weight(const Tensor& x, const Tensor& dy, const Conv3dParams& params, Tensor& dweight);
// dbias += sum of dy over every voxel ([Co]); created as zeros when undefined.
void conv3d_backward_bias(const Tensor& dy, Tensor& dbias);

// Which implementation runs the convolutions on a GPU (process-wide; default custom).
enum class ConvEngine { custom, cudnn };
void set_conv_engine(ConvEngine engine);
ConvEngine conv_engine();
const char* conv_engine_name(ConvEngine engine);  // "custom", "cudnn"
// "custom" or "cudnn"; anything else throws, naming the text and the choices.
ConvEngine parse_conv_engine(const std::string& text);

// Sets the engine for a scope (tests, benchmarks) and restores the previous one.
class ScopedConvEngine {
 public:
  explicit ScopedConvEngine(ConvEngine engine) : previous_(conv_engine()) { set_conv_engine(engine); }
  ~ScopedConvEngine() { set_conv_engine(previous_); }
  ScopedConvEngine(const ScopedConvEngine&) = delete;
  ScopedConvEngine& operator=(const ScopedConvEngine&) = delete;

 private:
  ConvEngine previous_;
};

}  // namespace ctsr

namespace ctsr::kernels {

// Every size of one convolution, in the terms of conv3d (for a transposed convolution, the
// conv3d whose adjoint it is): input (d, h, w) with ci channels, output (od, oh, ow) with co.
struct Conv3dShape {
  int64_t n = 0, ci = 0, co = 0;
  int64_t d = 0, h = 0, w = 0;
  int64_t od = 0, oh = 0, ow = 0;
  int64_t kd = 1, kh = 1, kw = 1;
  int64_t sd = 1, sh = 1, sw = 1;
  int64_t pd = 0, ph = 0, pw = 0;

  CTSR_HD int64_t taps() const { return kd * kh * kw; }
  CTSR_HD int64_t in_voxels() const { return n * d * h * w; }
  CTSR_HD int64_t out_voxels() const { return n * od * oh * ow; }
  CTSR_HD int64_t reduction() const { return taps() * ci; }  // K of the forward GEMM
  // 1x1x1, stride 1, no padding: the convolution is a plain GEMM over voxels.
  CTSR_HD bool pointwise() const {
    return kd == 1 && kh == 1 && kw == 1 && sd == 1 && sh == 1 && sw == 1 && pd == 0 && ph == 0 && pw == 0;
  }
};

// Tile size of the custom CUDA kernels: chosen by problem size, or forced (tests cover both
// sizes on the executor at small shapes; benchmarks compare them). Process-wide.
enum class Conv3dTiles { automatic, small, large };  // small: 64x64, large: 128x128
void set_conv3d_tiles(Conv3dTiles tiles);
Conv3dTiles conv3d_tiles();

// Validated sizes of a convolution of x [N, D, H, W, Ci] by weight [Co, kD, kH, kW, Ci]
// (shapes only; names in messages come from `op`, `x_name`, `w_name`).
Conv3dShape conv3d_shape(const char* op, const Shape& x_shape, const char* x_name, const Shape& w_shape,
                         const char* w_name, const Conv3dParams& params);

// Engine-dispatched ops on validated shapes, shared with conv_transpose3d (its forward is
// conv3d's backward_data plus a bias, and so on). `op` names the public op in messages.
// bias (undefined for none) is added to dx per input channel: conv_transpose3d's bias.
void conv3d_run_forward(const char* op, const Conv3dShape& s, const Tensor& x, const Tensor& w, const Tensor& bias,
                        Tensor& y);
void conv3d_run_backward_data(const char* op, const Conv3dShape& s, const Tensor& dy, const Tensor& w,
                              const Tensor& bias, Tensor& dx);
void conv3d_run_backward_weight(const char* op, const Conv3dShape& s, const Tensor& x, const Tensor& dy, Tensor& dw);
// db[c] += sum over rows of t [rows, C].
void conv3d_run_backward_bias(const char* op, const Tensor& dy, int64_t rows, int64_t channels, Tensor& db);

}  // namespace ctsr::kernels

// Custom CUDA launchers (float32). Outputs are allocated by the dispatch; y and dx are
// overwritten, dw and db accumulated into. bias may be undefined.
CTSR_DECLARE_LAUNCHERS(
  void conv3d_forward(const Conv3dShape& s, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y);
  void conv3d_backward_data(const Conv3dShape& s, const Tensor& dy, const Tensor& w, const Tensor& bias, Tensor& dx);
  void conv3d_backward_weight(const Conv3dShape& s, const Tensor& x, const Tensor& dy, Tensor& dw);
  void conv3d_backward_bias(int64_t rows, int64_t channels, const Tensor& dy, Tensor& db);
)

// The cuDNN engine (kernels/conv3d_cudnn.cpp, built with CUDA only). Same contracts as the
// launchers above.
namespace ctsr::kernels::cudnn {
void conv3d_forward(const Conv3dShape& s, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y);
void conv3d_backward_data(const Conv3dShape& s, const Tensor& dy, const Tensor& w, const Tensor& bias, Tensor& dx);
void conv3d_backward_weight(const Conv3dShape& s, const Tensor& x, const Tensor& dy, Tensor& dw);
void conv3d_backward_bias(int64_t rows, int64_t channels, const Tensor& dy, Tensor& db);
}  // namespace ctsr::kernels::cudnn

// Reference (kernels/cpu/conv3d.cpp), float and double. bias may be null.
namespace ctsr::kernels::cpu {
// The bound on one chunk's im2col matrix (default 32 MiB; at least one (n, od) plane is always
// taken). Settable so that tests can force many chunks at small sizes; returns the old value.
int64_t set_conv3d_column_budget(int64_t bytes);
template <class T> void conv3d_forward(const Conv3dShape& s, const T* x, const T* w, const T* bias, T* y);
template <class T> void conv3d_backward_data(const Conv3dShape& s, const T* dy, const T* w, const T* bias, T* dx);
template <class T> void conv3d_backward_weight(const Conv3dShape& s, const T* x, const T* dy, T* dw);
template <class T> void conv3d_backward_bias(int64_t rows, int64_t channels, const T* dy, T* db);
}  // namespace ctsr::kernels::cpu
