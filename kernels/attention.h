// Multi-head scaled dot-product attention over tokens: non-causal, no mask, no dropout.
//
// Layout: the output of a fused QKV projection, read in place (nothing is split or copied):
//   qkv [B, N, 3C] with C = heads * head_dim; q = columns [0, C), k = [C, 2C), v = [2C, 3C);
//   head h uses columns [h * head_dim, (h + 1) * head_dim) of each.
//   o   [B, N, C], the heads concatenated in head order (ready for the output projection).
// Per (b, h), with q_i, k_j, v_j the head's rows and scale = 1 / sqrt(head_dim):
//   s_ij = scale * q_i . k_j,  P_ij = exp(s_ij - lse_i),  lse_i = log sum_j exp(s_ij),
//   o_i = sum_j P_ij v_j
// Forward saves only lse [B, heads, N] (dtype of qkv: float32 on the CUDA paths) besides qkv
// and o; backward recomputes P from q, k and lse, with D_i = dO_i . o_i:
//   dv_j = sum_i P_ij dO_i,  dS_ij = P_ij (dO_i . v_j - D_i),
//   dq_i = scale sum_j dS_ij k_j,  dk_j = scale sum_i dS_ij q_i
// and returns d_qkv [B, N, 3C] in the layout of qkv (written, not accumulated). No path ever
// holds an N x N matrix: extra memory is O(N) (the reference works a row at a time; the CUDA
// kernels tile in the manner of FlashAttention-2).
//
// bfloat16 (mixed precision): qkv, o, d_o and d_qkv in bf16, lse in float32; on the CUDA paths
// the products run on tensor cores (kernels/mma.h) with float scores, softmax and accumulators, P
// and dS rounded to bf16 as mma operands; on cpu the float reference on the widened values.
// Paths: cpu reference (float32, float64; any head_dim; sums in double; Device::cpu's float32
// forward of 1024 tokens or more goes through sgemm instead, attention_forward_gemm), CUDA and CUDA-on-CPU
// (float32; head_dim 32 or 64). The CUDA path is deterministic: fixed reduction orders and no
// float atomics, so repeated calls agree bit for bit.
#pragma once

#include "kernels/launchers.h"
#include "runtime/tensor.h"

namespace ctsr {

struct AttentionOutput {
  Tensor o;    // [B, N, C]
  Tensor lse;  // [B, heads, N], log-sum-exp of each row of scaled scores
};

AttentionOutput attention_forward(const Tensor& qkv, int64_t heads);
Tensor attention_backward(const Tensor& qkv, const Tensor& o, const Tensor& lse, const Tensor& d_o, int64_t heads);

}  // namespace ctsr

namespace ctsr::kernels {
// The geometry of one attention call.
struct AttentionShape {
  int64_t batch = 0, tokens = 0, heads = 0, head_dim = 0;
  int64_t channels() const { return heads * head_dim; }  // C
  double scale() const;                                  // 1 / sqrt(head_dim)
};
}  // namespace ctsr::kernels

// CUDA launchers: outputs are allocated by the caller (dispatch) and fully written.
CTSR_DECLARE_LAUNCHERS(
  void attention_forward(const AttentionShape& shape, const Tensor& qkv, Tensor& o, Tensor& lse);
  void attention_backward(const AttentionShape& shape, const Tensor& qkv, const Tensor& o, const Tensor& lse,
                          const Tensor& d_o, Tensor& d_qkv);
)

namespace ctsr::kernels::cpu {
template <class T>
void attention_forward(const AttentionShape& shape, const T* qkv, T* o, T* lse);
template <class T>
void attention_backward(const AttentionShape& shape, const T* qkv, const T* o, const T* lse, const T* d_o, T* d_qkv);
// The float32 forward of Device::cpu from kAttentionGemmTokens tokens up: the reference's sums in
// float through sgemm (S = scale Q K^T, the softmax in float with its sum in double, O = P V), a
// block of 64 query rows at a time (64 x N floats per thread); within float rounding of the
// reference (tests/test_attention.cpp). Shorter sequences keep the loops (exact sums: what the
// layers' CUDA parity tests compare against).
constexpr int64_t kAttentionGemmTokens = 1024;
void attention_forward_gemm(const AttentionShape& shape, const float* qkv, float* o, float* lse);
}  // namespace ctsr::kernels::cpu
