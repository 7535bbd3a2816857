// Vectorised float access shared by kernel files: V consecutive floats as one 16-byte load or
// store when V == 4 (a bfloat16 store rounds them and writes 8 bytes) (the caller guarantees 16-byte alignment; the executor's full checks verify
// it), element by element otherwise. Included inside namespace ctsr::kernels::CTSR_KERNEL_NS, in an anonymous
// namespace, so the GPU and executor builds never share a symbol.
#pragma once

namespace ctsr::kernels::CTSR_KERNEL_NS {
namespace {

template <int V>
struct Pack {
  float v[V];
};

template <int V>
CTSR_DEVICE_INLINE Pack<V> load_pack(const float* p) {
  Pack<V> r;
  if constexpr (V == 4) {
    const float4 t = *reinterpret_cast<const float4*>(p);
    r.v[0] = t.x, r.v[1] = t.y, r.v[2] = t.z, r.v[3] = t.w;
  } else {
    for (int j = 0; j < V; ++j) r.v[j] = p[j];
  }
  return r;
}

template <int V>
CTSR_DEVICE_INLINE void store_pack(float* p, const Pack<V>& r) {
  if constexpr (V == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(r.v[0], r.v[1], r.v[2], r.v[3]);
  } else {
    for (int j = 0; j < V; ++j) p[j] = r.v[j];
  }
}

// V floats stored as bfloat16, each rounded to nearest (ties to even): one 8-byte store when
// V == 4 (the caller guarantees 8-byte alignment), element by element otherwise.
template <int V>
CTSR_DEVICE_INLINE void store_pack(bfloat16* p, const Pack<V>& r) {
  if constexpr (V == 4) {
    auto pair = [&](int j) {
      return int(uint32_t(bfloat16::from_float(r.v[j])) | (uint32_t(bfloat16::from_float(r.v[j + 1])) << 16));
    };
    *reinterpret_cast<int2*>(p) = make_int2(pair(0), pair(2));
  } else {
    for (int j = 0; j < V; ++j) p[j] = bfloat16(r.v[j]);
  }
}

}  // namespace
}  // namespace ctsr::kernels::CTSR_KERNEL_NS
