// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), a
// counter-based generator: the numbers for counter c under key k are a pure function of (c, k),
// so any thread can produce any element without shared state, and a resumed run continues the
// same stream from its (seed, offset).
//
// Element i of a fill uses counter (i / 4, offset) and output word i % 4. Normals come in
// Box-Muller pairs from words (0, 1) and (2, 3). The transcendental functions here are our
// own, written with correctly rounded IEEE operations only (and no fused multiply-add: on the
// GPU through the __f*_rn intrinsics, on the host because ctsr compiles in ISO mode, which
// disables contraction), so the CPU reference, the CUDA-on-CPU executor and the GPU produce
// bit-identical floats.
#pragma once

#include <cstdint>

#include "runtime/half.h"
#include "runtime/host_device.h"
#include "runtime/rounded.h"

namespace ctsr::philox {

struct Words {
  uint32_t v[4];
};

CTSR_HD inline Words philox4x32_10(uint64_t counter_lo, uint64_t counter_hi, uint64_t key) {
  uint32_t c0 = uint32_t(counter_lo), c1 = uint32_t(counter_lo >> 32);
  uint32_t c2 = uint32_t(counter_hi), c3 = uint32_t(counter_hi >> 32);
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(0xD2511F53u) * c0;
    const uint64_t p1 = uint64_t(0xCD9E8D57u) * c2;
    const uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ k1;
    c0 = n0;
    c1 = uint32_t(p1);
    c2 = n2;
    c3 = uint32_t(p0);
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// Explicitly rounded float arithmetic (runtime/rounded.h).
using rounded::add;
using rounded::div;
using rounded::mul;
CTSR_HD inline float sqrt_rn(float a) { return rounded::sqrt(a); }

// [0, 1) with 24 random bits: exact multiples of 2^-24.
CTSR_HD inline float uniform01(uint32_t x) { return float(x >> 8) * 5.9604644775390625e-8f; }

// Natural log for u in [2^-24, 1]: u = m 2^e with m in [sqrt(1/2), sqrt(2)), then
// log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, by its odd series to s^9.
CTSR_HD inline float log_unit(float u) {
  uint32_t bits = float_bits(u);
  int e = int((bits >> 23) & 0xffu) - 127;
  float m = bits_float((bits & 0x7fffffu) | 0x3f800000u);
  if (m > 1.41421356f) {
    m = mul(m, 0.5f);
    e += 1;
  }
  const float s = div(add(m, -1.0f), add(m, 1.0f));
  const float z = mul(s, s);
  float p = 0.22222222f;                  // 2/9
  p = add(mul(p, z), 0.28571429f);        // 2/7
  p = add(mul(p, z), 0.4f);               // 2/5
  p = add(mul(p, z), 0.66666669f);        // 2/3
  p = add(mul(p, z), 2.0f);
  const float log_m = mul(p, s);
  const float fe = float(e);
  return add(mul(fe, 0.693145752f), add(mul(fe, 1.42860677e-06f), log_m));  // ln 2 split in two
}

// sin and cos of a in [0, pi/4], Taylor series to a^9 and a^10.
CTSR_HD inline void sincos_small(float a, float* s, float* c) {
  const float z = mul(a, a);
  float ps = -2.5052108e-08f;
  ps = add(mul(ps, z), 2.7557319e-06f);
  ps = add(mul(ps, z), -1.9841270e-04f);
  ps = add(mul(ps, z), 8.3333333e-03f);
  ps = add(mul(ps, z), -1.6666667e-01f);
  *s = add(a, mul(mul(ps, z), a));
  float pc = -2.7557319e-07f;
  pc = add(mul(pc, z), 2.4801587e-05f);
  pc = add(mul(pc, z), -1.3888889e-03f);
  pc = add(mul(pc, z), 4.1666667e-02f);
  pc = add(mul(pc, z), -0.5f);
  *c = add(1.0f, mul(pc, z));
}

// sin and cos of 2 pi u for u in [0, 1) a multiple of 2^-24; the quadrant split is exact.
CTSR_HD inline void sincos_turns(float u, float* s, float* c) {
  const float q4 = mul(u, 4.0f);
  const int q = int(q4);
  const float r = add(q4, -float(q));  // in [0, 1), exact
  float sa, ca;
  if (r <= 0.5f) {
    sincos_small(mul(r, 1.57079637f), &sa, &ca);
  } else {
    sincos_small(mul(add(1.0f, -r), 1.57079637f), &ca, &sa);
  }
  switch (q) {
    case 0: *s = sa; *c = ca; break;
    case 1: *s = ca; *c = -sa; break;
    case 2: *s = -sa; *c = -ca; break;
    default: *s = -ca; *c = sa; break;
  }
}

// Two standard normals from two words (Box-Muller).
CTSR_HD inline void normal_pair(uint32_t w0, uint32_t w1, float* z0, float* z1) {
  const float u1 = add(uniform01(w0), 5.9604644775390625e-8f);  // (0, 1]
  const float radius = sqrt_rn(mul(-2.0f, log_unit(u1)));
  float s, c;
  sincos_turns(uniform01(w1), &s, &c);
  *z0 = mul(radius, c);
  *z1 = mul(radius, s);
}

// Element i of a uniform [0, 1) or standard normal fill under (seed, offset).
CTSR_HD inline float uniform_at(uint64_t seed, uint64_t offset, uint64_t i) {
  return uniform01(philox4x32_10(i / 4, offset, seed).v[i % 4]);
}
CTSR_HD inline float normal_at(uint64_t seed, uint64_t offset, uint64_t i) {
  const Words w = philox4x32_10(i / 4, offset, seed);
  const unsigned pair = unsigned(i % 4) / 2;
  float z0, z1;
  normal_pair(w.v[2 * pair], w.v[2 * pair + 1], &z0, &z1);
  return (i % 2) ? z1 : z0;
}

// Offsets for independent streams of one seed: (purpose, step) -> offset. Purposes are small
// constants (noise, dropout, timesteps, shuffling...); the step fills the low 48 bits.
CTSR_HD inline uint64_t stream_offset(uint32_t purpose, uint64_t step) {
  return (uint64_t(purpose) << 48) ^ (step & 0xffffffffffffull);
}

}  // namespace ctsr::philox
