// Reference nearest-neighbour resampling and channel concatenation (kernels/resample.h): plain
// loops, float and double. The backward here is a SCATTER (each destination voxel adds its
// gradient into its source), written independently of the CUDA path's gather; both visit the
// destinations of a source voxel in increasing (d, h, w) order, so they agree bit for bit.

#include "kernels/resample.h"

namespace ctsr::kernels::cpu {

template <class T>
void resample_nearest_forward(const ResampleShape& sh, const T* x, T* y) {
  const int64_t C = sh.c;
#pragma omp parallel for collapse(2) if (sh.n * sh.od * sh.oh * sh.ow * C > 65536)
  for (int64_t n = 0; n < sh.n; ++n)
    for (int64_t i = 0; i < sh.od; ++i)
      for (int64_t j = 0; j < sh.oh; ++j)
        for (int64_t k = 0; k < sh.ow; ++k) {
          const int64_t si = nearest_source_index(i, sh.d, sh.od);
          const int64_t sj = nearest_source_index(j, sh.h, sh.oh);
          const int64_t sk = nearest_source_index(k, sh.w, sh.ow);
          const T* src = x + (((n * sh.d + si) * sh.h + sj) * sh.w + sk) * C;
          T* dst = y + (((n * sh.od + i) * sh.oh + j) * sh.ow + k) * C;
          for (int64_t c = 0; c < C; ++c) dst[c] = src[c];
        }
}

template <class T>
void resample_nearest_backward(const ResampleShape& sh, const T* dy, T* dx) {
  const int64_t C = sh.c;
  const int64_t in_voxels = sh.d * sh.h * sh.w, out_voxels = sh.od * sh.oh * sh.ow;
#pragma omp parallel for if (sh.n * out_voxels * C > 65536)
  for (int64_t n = 0; n < sh.n; ++n) {  // samples are independent; within one, the scatter runs in order
    T* dxn = dx + n * in_voxels * C;
    for (int64_t e = 0; e < in_voxels * C; ++e) dxn[e] = T(0);
    for (int64_t i = 0; i < sh.od; ++i)
      for (int64_t j = 0; j < sh.oh; ++j)
        for (int64_t k = 0; k < sh.ow; ++k) {
          const int64_t si = nearest_source_index(i, sh.d, sh.od);
          const int64_t sj = nearest_source_index(j, sh.h, sh.oh);
          const int64_t sk = nearest_source_index(k, sh.w, sh.ow);
          T* dst = dxn + ((si * sh.h + sj) * sh.w + sk) * C;
          const T* src = dy + (((n * sh.od + i) * sh.oh + j) * sh.ow + k) * C;
          for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
        }
  }
}

template <class T>
void concat_channels(int64_t rows, int64_t ca, int64_t cb, const T* a, const T* b, T* out) {
#pragma omp parallel for if (rows * (ca + cb) > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < ca; ++c) out[r * (ca + cb) + c] = a[r * ca + c];
    for (int64_t c = 0; c < cb; ++c) out[r * (ca + cb) + ca + c] = b[r * cb + c];
  }
}

template <class T>
void split_channels(int64_t rows, int64_t ca, int64_t cb, const T* in, T* a, T* b) {
#pragma omp parallel for if (rows * (ca + cb) > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < ca; ++c) a[r * ca + c] = in[r * (ca + cb) + c];
    for (int64_t c = 0; c < cb; ++c) b[r * cb + c] = in[r * (ca + cb) + ca + c];
  }
}

#define CTSR_INSTANTIATE(T)                                                                          \
  template void resample_nearest_forward<T>(const ResampleShape&, const T*, T*);                     \
  template void resample_nearest_backward<T>(const ResampleShape&, const T*, T*);                    \
  template void concat_channels<T>(int64_t, int64_t, int64_t, const T*, const T*, T*);               \
  template void split_channels<T>(int64_t, int64_t, int64_t, const T*, T*, T*);
CTSR_INSTANTIATE(float)
CTSR_INSTANTIATE(double)
#undef CTSR_INSTANTIATE

}  // namespace ctsr::kernels::cpu
