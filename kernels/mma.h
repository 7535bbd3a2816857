// Warp-level matrix primitives: the bf16 tensor-core multiply mma.sync m16n8k16 (bf16 inputs,
// float accumulation) and its fragments, for every tensor-core kernel (conv3d, attention). Included
// by kernel files after runtime/kernel_prelude.h; it lives in namespace
// ctsr::kernels::CTSR_KERNEL_NS::mma, so each build of a kernel file (GPU, executor, mutant) has
// its own copy.
//
// One warp computes D = A B + C for A 16x16 (row major), B 16x8 (column major), C, D 16x8 float.
// Each lane holds a fragment of each operand; where each element sits is the PTX ISA's table for
// mma.m16n8k16 with .bf16 (section "Matrix Fragments for mma.m16n8k16"), written out in
// `FragmentLayout` below. With g = lane / 4 and t = lane % 4, and two bf16 per 32-bit register,
// the lower k in the low 16 bits:
//   A  a.r[0]: row g,   k 2t, 2t+1       a.r[1]: row g+8, k 2t, 2t+1
//      a.r[2]: row g,   k 2t+8, 2t+9     a.r[3]: row g+8, k 2t+8, 2t+9
//   B  b.r[0]: k 2t, 2t+1, column g      b.r[1]: k 2t+8, 2t+9, column g
//   C  c.v[0], c.v[1]: row g, columns 2t, 2t+1;  c.v[2], c.v[3]: row g+8, the same columns
// On the GPU `mma_bf16` is the PTX instruction (sm_80 and later); on the CUDA-on-CPU executor it is
// cuda_on_cpu::warp_mma_m16n8k16_bf16, which gathers the warp's fragments and multiplies them by
// its own transcription of the same tables. A kernel that puts an element in the wrong register
// therefore gets a wrong product on the executor exactly as on a GPU, and its parity test fails.
//
// Mutation testing: compiled with CTSR_MMA_MUTATION=1, `FragmentLayout::a_col` swaps the two k
// halves of A's rows g+8 (a wrong fragment index). The tests build each tensor-core kernel file a
// second time that way (tests/CMakeLists.txt, namespace cuda_on_cpu_mma_mutant) and require its
// parity check to fail.
#pragma once

#include <cstdint>

#include "runtime/half.h"
#include "runtime/host_device.h"

namespace ctsr::kernels::CTSR_KERNEL_NS::mma {

constexpr int kM = 16, kN = 8, kK = 16;  // the shape of one mma

struct FragA {
  uint32_t r[4];
};
struct FragB {
  uint32_t r[2];
};
struct FragC {
  float v[4];
};

// Where each fragment element of a lane sits in its matrix. `reg` is the register, `h` the half
// (0: low 16 bits, 1: high).
struct FragmentLayout {
  CTSR_HD static constexpr int a_row(int lane, int reg) { return lane / 4 + 8 * (reg & 1); }
  CTSR_HD static constexpr int a_col(int lane, int reg, int h) {
#if CTSR_MMA_MUTATION
    return 2 * (lane % 4) + h + 8 * ((reg >> 1) ^ (reg & 1));
#else
    return 2 * (lane % 4) + h + 8 * (reg >> 1);
#endif
  }
  CTSR_HD static constexpr int b_row(int lane, int reg, int h) { return 2 * (lane % 4) + h + 8 * reg; }  // k
  CTSR_HD static constexpr int b_col(int lane) { return lane / 4; }
  CTSR_HD static constexpr int c_row(int lane, int i) { return lane / 4 + 8 * (i >> 1); }
  CTSR_HD static constexpr int c_col(int lane, int i) { return 2 * (lane % 4) + (i & 1); }
};

// Two bf16 bit patterns as one register, `lo` in the low half.
CTSR_HD inline uint32_t pack_bf16x2(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }

// A's fragment from a tile stored k-major: element (row, k) at tile[k * ld + row] (bf16 bits).
CTSR_DEVICE_INLINE void load_a_k_major(FragA& a, const uint16_t* tile, int ld, int lane) {
  CTSR_UNROLL
  for (int reg = 0; reg < 4; ++reg) {
    const int row = FragmentLayout::a_row(lane, reg);
    a.r[reg] = pack_bf16x2(tile[FragmentLayout::a_col(lane, reg, 0) * ld + row],
                           tile[FragmentLayout::a_col(lane, reg, 1) * ld + row]);
  }
}

// B's fragment from a tile stored k-major: element (k, column) at tile[k * ld + column].
CTSR_DEVICE_INLINE void load_b_k_major(FragB& b, const uint16_t* tile, int ld, int lane) {
  const int col = FragmentLayout::b_col(lane);
  CTSR_UNROLL
  for (int reg = 0; reg < 2; ++reg) {
    b.r[reg] = pack_bf16x2(tile[FragmentLayout::b_row(lane, reg, 0) * ld + col],
                           tile[FragmentLayout::b_row(lane, reg, 1) * ld + col]);
  }
}

// A's fragment from a row-major tile: element (row, k) at tile[row * ld + k].
CTSR_DEVICE_INLINE void load_a_row_major(FragA& a, const uint16_t* tile, int ld, int lane) {
  CTSR_UNROLL
  for (int reg = 0; reg < 4; ++reg) {
    const uint16_t* row = tile + FragmentLayout::a_row(lane, reg) * ld;
    a.r[reg] = pack_bf16x2(row[FragmentLayout::a_col(lane, reg, 0)], row[FragmentLayout::a_col(lane, reg, 1)]);
  }
}

// B's fragment from a tile stored column by column: element (k, column) at tile[column * ld + k]
// (B^T row major: the keys of attention's q k^T).
CTSR_DEVICE_INLINE void load_b_n_major(FragB& b, const uint16_t* tile, int ld, int lane) {
  const uint16_t* col = tile + FragmentLayout::b_col(lane) * ld;
  CTSR_UNROLL
  for (int reg = 0; reg < 2; ++reg) {
    b.r[reg] = pack_bf16x2(col[FragmentLayout::b_row(lane, reg, 0)], col[FragmentLayout::b_row(lane, reg, 1)]);
  }
}

// The A fragment of a 16 x 16 block whose columns 0-7 are the accumulator `left` and columns 8-15
// `right`, rounded to bf16 (attention's probabilities, computed as an mma's D, reused as the next
// mma's A without leaving registers). By the tables above, a lane's A register r holds row
// g + 8 (r & 1), columns 2t, 2t+1 of the left (r < 2) or right half: its own C elements
// 2 (r & 1) and 2 (r & 1) + 1 of that accumulator.
CTSR_DEVICE_INLINE FragA a_from_accumulators(const FragC& left, const FragC& right) {
  FragA a;
  CTSR_UNROLL
  for (int reg = 0; reg < 4; ++reg) {
    const FragC& c = reg < 2 ? left : right;
    const int e = 2 * (reg & 1);
    a.r[reg] = pack_bf16x2(bfloat16::from_float(c.v[e]), bfloat16::from_float(c.v[e + 1]));
  }
  return a;
}

// d += a b, by the whole warp.
#if defined(__CUDACC__)
CTSR_DEVICE_INLINE void mma_bf16(FragC& d, const FragA& a, const FragB& b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d.v[0]), "+f"(d.v[1]), "+f"(d.v[2]), "+f"(d.v[3])
      : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]));
#elif defined(__CUDA_ARCH__)
  __trap();  // bf16 mma needs sm_80 or later
#endif
}
#else
inline void mma_bf16(FragC& d, const FragA& a, const FragB& b, ctsr_call_site site = ctsr_call_site::current()) {
  ::ctsr::cuda_on_cpu::warp_mma_m16n8k16_bf16(a.r, b.r, d.v, CTSR_WARP_SITE("mma.sync.m16n8k16.bf16"));
}
#endif

}  // namespace ctsr::kernels::CTSR_KERNEL_NS::mma
