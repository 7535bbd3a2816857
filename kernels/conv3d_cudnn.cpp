// The cuDNN engine of conv3d (kernels/conv3d.h), float32, built only with CUDA (CTSR_HAVE_CUDA;
// listed in CMakeLists.txt). It uses cuDNN's legacy convolution API, which cuDNN 9 still ships:
// cudnnConvolutionForward / BackwardData / BackwardFilter / BackwardBias and cudnnAddTensor.
//
// Layouts: activations are described as 5-D tensors with dims [N, C, D, H, W] and channels-last
// strides (C fastest), i.e. our NDHWC bytes; the weight is a filter [Co, Ci, kD, kH, kW] in
// CUDNN_TENSOR_NHWC format, which cuDNN lays out as [Co, kD, kH, kW, Ci], our layout.
//
// Algorithms come from the cudnnGet*Algorithm_v7 heuristics, once per (op, sizes, math mode)
// and cached: the first that succeeds, preferring deterministic ones (backward-filter algorithms
// that use atomics would make training runs irreproducible). Math: CUDNN_FMA_MATH (true fp32)
// unless ctsr::allow_tf32() (runtime/gemm.h), as cuBLAS. Workspaces come from the caching
// allocator as uint8 tensors. Everything is enqueued on the device's current stream.
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <vector>

#include "kernels/conv3d.h"
#include "runtime/cuda_check.h"
#include "runtime/gemm.h"
#include "runtime/stream.h"

#ifndef CTSR_HAVE_CUDNN_HEADER
#error "kernels/conv3d_cudnn.cpp needs cudnn.h (install cuDNN next to the CUDA toolkit)"
#endif

namespace ctsr::kernels::cudnn {

namespace {

constexpr float kOne = 1.0f, kZero = 0.0f;

int as_int(int64_t v, const char* what) {
  CTSR_CHECK(v >= 0 && v <= INT32_MAX, "conv3d (cudnn): ", what, " = ", v, " does not fit cuDNN's int sizes");
  return int(v);
}

// The calling thread's cuDNN handle for `device`, bound to the device's current stream.
cudnnHandle_t handle_for(Device device) {
  CTSR_CHECK(device.kind == DeviceKind::cuda, "conv3d (cudnn): tensors are on ", device.str(), ", not a GPU");
  thread_local std::vector<cudnnHandle_t> handles;
  if (handles.size() <= size_t(device.index)) handles.resize(size_t(device.index) + 1, nullptr);
  CTSR_CUDA_CALL(cudaSetDevice(device.index));
  if (!handles[size_t(device.index)]) CTSR_CUDA_CALL(cudnnCreate(&handles[size_t(device.index)]));
  cudnnHandle_t h = handles[size_t(device.index)];
  CTSR_CUDA_CALL(cudnnSetStream(h, static_cast<cudaStream_t>(Stream::current(device).handle())));
  return h;
}

// A channels-last activation [n, d, h, w, c].
void set_activation(cudnnTensorDescriptor_t desc, int64_t n, int64_t c, int64_t d, int64_t h, int64_t w) {
  const int dims[5] = {as_int(n, "batch"), as_int(c, "channels"), as_int(d, "depth"), as_int(h, "height"),
                       as_int(w, "width")};
  const int strides[5] = {as_int(d * h * w * c, "batch stride"), 1, as_int(h * w * c, "depth stride"),
                          as_int(w * c, "height stride"), as_int(c, "width stride")};
  CTSR_CUDA_CALL(cudnnSetTensorNdDescriptor(desc, CUDNN_DATA_FLOAT, 5, dims, strides));
}

cudnnMathType_t wanted_math() { return allow_tf32() ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH; }

// Descriptors of one convolution, destroyed with it.
struct ConvDescriptors {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;

  explicit ConvDescriptors(const Conv3dShape& s) {
    try {
      create_and_set(s);
    } catch (...) {
      destroy();
      throw;
    }
  }
  ~ConvDescriptors() { destroy(); }
  ConvDescriptors(const ConvDescriptors&) = delete;
  ConvDescriptors& operator=(const ConvDescriptors&) = delete;

  void create_and_set(const Conv3dShape& s) {
    CTSR_CUDA_CALL(cudnnCreateTensorDescriptor(&x));
    CTSR_CUDA_CALL(cudnnCreateTensorDescriptor(&y));
    CTSR_CUDA_CALL(cudnnCreateTensorDescriptor(&bias));
    CTSR_CUDA_CALL(cudnnCreateFilterDescriptor(&w));
    CTSR_CUDA_CALL(cudnnCreateConvolutionDescriptor(&conv));
    set_activation(x, s.n, s.ci, s.d, s.h, s.w);
    set_activation(y, s.n, s.co, s.od, s.oh, s.ow);
    const int filter[5] = {as_int(s.co, "output channels"), as_int(s.ci, "input channels"), as_int(s.kd, "kD"),
                           as_int(s.kh, "kH"), as_int(s.kw, "kW")};
    CTSR_CUDA_CALL(cudnnSetFilterNdDescriptor(w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, 5, filter));
    const int pad[3] = {as_int(s.pd, "padding"), as_int(s.ph, "padding"), as_int(s.pw, "padding")};
    const int stride[3] = {as_int(s.sd, "stride"), as_int(s.sh, "stride"), as_int(s.sw, "stride")};
    const int dilation[3] = {1, 1, 1};
    CTSR_CUDA_CALL(
        cudnnSetConvolutionNdDescriptor(conv, 3, pad, stride, dilation, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CTSR_CUDA_CALL(cudnnSetConvolutionMathType(conv, wanted_math()));
    // cuDNN's own idea of the output size must be ours (PyTorch's floor rule).
    int out[5] = {0, 0, 0, 0, 0};
    CTSR_CUDA_CALL(cudnnGetConvolutionNdForwardOutputDim(conv, x, w, 5, out));
    CTSR_CHECK(out[0] == s.n && out[1] == s.co && out[2] == s.od && out[3] == s.oh && out[4] == s.ow,
               "conv3d (cudnn): cuDNN computes output [", out[0], ", ", out[1], ", ", out[2], ", ", out[3], ", ",
               out[4], "] (NCDHW), expected N ", s.n, " C ", s.co, " ", s.od, "x", s.oh, "x", s.ow);
  }
  void destroy() {
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (bias) cudnnDestroyTensorDescriptor(bias);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (x) cudnnDestroyTensorDescriptor(x);
    conv = nullptr, w = nullptr, bias = nullptr, y = nullptr, x = nullptr;
  }

  // A [channels] vector broadcast over an activation.
  cudnnTensorDescriptor_t bias_of(int64_t channels) {
    const int c = as_int(channels, "bias channels");
    const int dims[5] = {1, c, 1, 1, 1};
    const int strides[5] = {c, 1, c, c, c};
    CTSR_CUDA_CALL(cudnnSetTensorNdDescriptor(bias, CUDNN_DATA_FLOAT, 5, dims, strides));
    return bias;
  }
};

enum class Op { forward, backward_data, backward_filter };

struct Choice {
  int algo = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

std::string cache_key(Op op, const Conv3dShape& s, int device) {
  std::ostringstream k;
  k << int(op) << ':' << device << ':' << int(wanted_math());
  for (int64_t v : {s.n, s.ci, s.co, s.d, s.h, s.w, s.kd, s.kh, s.kw, s.sd, s.sh, s.sw, s.pd, s.ph, s.pw}) {
    k << ',' << v;
  }
  return k.str();
}

// The first successful result, preferring deterministic ones. With TF32 off, algorithms that
// need tensor-op math are skipped and the descriptor is run with CUDNN_FMA_MATH whatever the
// heuristic reports (CUDNN_DEFAULT_MATH would let cuDNN use TF32 on Ampere and later).
template <class Perf>
Choice pick(const Perf* perf, int count, const char* what) {
  const bool tf32 = allow_tf32();
  for (bool need_deterministic : {true, false}) {
    for (int i = 0; i < count; ++i) {
      if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
      if (!tf32 && (perf[i].mathType == CUDNN_TENSOR_OP_MATH ||
                    perf[i].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)) continue;
      if (need_deterministic && perf[i].determinism != CUDNN_DETERMINISTIC) continue;
      return {int(perf[i].algo), tf32 ? perf[i].mathType : CUDNN_FMA_MATH};
    }
  }
  CTSR_FAIL("conv3d (cudnn): no ", what, " algorithm supports this convolution (", count, " candidates)");
}

Choice choose(Op op, const Conv3dShape& s, cudnnHandle_t h, ConvDescriptors& d, int device) {
  static std::mutex mutex;
  static std::map<std::string, Choice> cache;
  const std::string key = cache_key(op, s, device);
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  Choice c;
  int count = 0;
  switch (op) {
    case Op::forward: {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      CTSR_CUDA_CALL(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.conv, d.y,
                                                            CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, perf));
      c = pick(perf, count, "forward");
      break;
    }
    case Op::backward_data: {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      CTSR_CUDA_CALL(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w, d.y, d.conv, d.x,
                                                                 CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count, perf));
      c = pick(perf, count, "backward-data");
      break;
    }
    case Op::backward_filter: {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      CTSR_CUDA_CALL(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
          h, d.x, d.y, d.conv, d.w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count, perf));
      c = pick(perf, count, "backward-filter");
      break;
    }
  }
  std::lock_guard<std::mutex> lock(mutex);
  cache[key] = c;
  return c;
}

// A workspace of `bytes` from the caching allocator (undefined when none is needed).
Tensor workspace(size_t bytes, Device device) {
  if (bytes == 0) return Tensor();
  return Tensor::empty(Shape{int64_t(bytes)}, DType::uint8, device);
}

void* workspace_ptr(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }

void check_float(const Tensor& t, const char* what) { t.check_dtype(DType::float32, what); }

}  // namespace

void conv3d_forward(const Conv3dShape& s, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) {
  check_float(x, "conv3d_forward (cudnn) x");
  const Device device = x.device();
  cudnnHandle_t h = handle_for(device);
  ConvDescriptors d(s);
  const Choice c = choose(Op::forward, s, h, d, device.index);
  CTSR_CUDA_CALL(cudnnSetConvolutionMathType(d.conv, c.math));
  const auto algo = static_cast<cudnnConvolutionFwdAlgo_t>(c.algo);
  size_t bytes = 0;
  CTSR_CUDA_CALL(cudnnGetConvolutionForwardWorkspaceSize(h, d.x, d.w, d.conv, d.y, algo, &bytes));
  Tensor ws = workspace(bytes, device);
  CTSR_CUDA_CALL(cudnnConvolutionForward(h, &kOne, d.x, x.raw_data(), d.w, w.raw_data(), d.conv, algo,
                                         workspace_ptr(ws), bytes, &kZero, d.y, y.raw_data()));
  if (bias.defined()) {
    CTSR_CUDA_CALL(cudnnAddTensor(h, &kOne, d.bias_of(s.co), bias.raw_data(), &kOne, d.y, y.raw_data()));
  }
}

void conv3d_backward_data(const Conv3dShape& s, const Tensor& dy, const Tensor& w, const Tensor& bias, Tensor& dx) {
  check_float(dy, "conv3d_backward_data (cudnn) dy");
  const Device device = dy.device();
  cudnnHandle_t h = handle_for(device);
  ConvDescriptors d(s);
  const Choice c = choose(Op::backward_data, s, h, d, device.index);
  CTSR_CUDA_CALL(cudnnSetConvolutionMathType(d.conv, c.math));
  const auto algo = static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo);
  size_t bytes = 0;
  CTSR_CUDA_CALL(cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w, d.y, d.conv, d.x, algo, &bytes));
  Tensor ws = workspace(bytes, device);
  CTSR_CUDA_CALL(cudnnConvolutionBackwardData(h, &kOne, d.w, w.raw_data(), d.y, dy.raw_data(), d.conv, algo,
                                              workspace_ptr(ws), bytes, &kZero, d.x, dx.raw_data()));
  if (bias.defined()) {
    CTSR_CUDA_CALL(cudnnAddTensor(h, &kOne, d.bias_of(s.ci), bias.raw_data(), &kOne, d.x, dx.raw_data()));
  }
}

void conv3d_backward_weight(const Conv3dShape& s, const Tensor& x, const Tensor& dy, Tensor& dw) {
  check_float(x, "conv3d_backward_weight (cudnn) x");
  const Device device = x.device();
  cudnnHandle_t h = handle_for(device);
  ConvDescriptors d(s);
  const Choice c = choose(Op::backward_filter, s, h, d, device.index);
  CTSR_CUDA_CALL(cudnnSetConvolutionMathType(d.conv, c.math));
  const auto algo = static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo);
  size_t bytes = 0;
  CTSR_CUDA_CALL(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.x, d.y, d.conv, d.w, algo, &bytes));
  Tensor ws = workspace(bytes, device);
  // beta = 1: accumulate into dw, the layer contract.
  CTSR_CUDA_CALL(cudnnConvolutionBackwardFilter(h, &kOne, d.x, x.raw_data(), d.y, dy.raw_data(), d.conv, algo,
                                                workspace_ptr(ws), bytes, &kOne, d.w, dw.raw_data()));
}

void conv3d_backward_bias(int64_t rows, int64_t channels, const Tensor& dy, Tensor& db) {
  check_float(dy, "conv3d_backward_bias (cudnn) dy");
  cudnnHandle_t h = handle_for(dy.device());
  cudnnTensorDescriptor_t dy_desc = nullptr, db_desc = nullptr;
  CTSR_CUDA_CALL(cudnnCreateTensorDescriptor(&dy_desc));
  CTSR_CUDA_CALL(cudnnCreateTensorDescriptor(&db_desc));
  try {
    set_activation(dy_desc, 1, channels, rows, 1, 1);  // the rows as one long depth axis
    set_activation(db_desc, 1, channels, 1, 1, 1);
    CTSR_CUDA_CALL(cudnnConvolutionBackwardBias(h, &kOne, dy_desc, dy.raw_data(), &kOne, db_desc, db.raw_data()));
  } catch (...) {
    cudnnDestroyTensorDescriptor(db_desc);
    cudnnDestroyTensorDescriptor(dy_desc);
    throw;
  }
  cudnnDestroyTensorDescriptor(db_desc);
  cudnnDestroyTensorDescriptor(dy_desc);
}

}  // namespace ctsr::kernels::cudnn
