// Vectorised float access shared by kernel files: V consecutive floats as one 16-byte load or
// store when V == 4 (the caller guarantees 16-byte alignment; the executor's full checks verify
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

}  // namespace
}  // namespace ctsr::kernels::CTSR_KERNEL_NS
