// What the tiling tests measure on a blended result (model/tiling.h): the convexity bound per
// position, and the error on the planes where tiles begin or end against the rest.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <vector>

#include "model/tiling.h"

namespace ctsr::test {

// Runs fn on each tile of `grid` alone (its box of `input`, at in_scale positions per unit) and
// compares it with `want` (host [1, D, H, W, K] at out_scale): per position of want, the largest
// |tile_k(p) - want(p)| over the tiles k covering p. The blend of the same tiles can be no
// further from want than that, up to rounding. `input` must cover the grid (no reflection).
inline std::vector<float> convexity_bound(const TileGrid& grid, const Tensor& input, int64_t in_scale,
                                          const Tensor& want, int64_t out_scale,
                                          const std::function<Tensor(const Tensor&)>& fn) {
  const int64_t H = want.dim(2), W = want.dim(3), K = want.dim(4), D = want.dim(1);
  const int64_t iB = input.dim(2), iC = input.dim(3), iK = input.dim(4);
  std::vector<float> bound(size_t(want.numel()), 0.0f);
  const float* pw = want.data<float>();
  const std::array<int64_t, 3> t = grid.tile();
  for (int64_t k = 0; k < grid.count(); ++k) {
    const std::array<int64_t, 3> o = grid.origin(k);
    const int64_t n0 = t[0] * in_scale, n1 = t[1] * in_scale, n2 = t[2] * in_scale;
    Tensor box = Tensor::empty({1, n0, n1, n2, iK});
    for (int64_t i = 0; i < n0; ++i)
      for (int64_t j = 0; j < n1; ++j)
        std::copy_n(input.data<float>() + (((o[0] * in_scale + i) * iB + o[1] * in_scale + j) * iC + o[2] * in_scale) * iK,
                    n2 * iK, box.data<float>() + (i * n1 + j) * n2 * iK);
    const Tensor y = fn(box).to(Device::cpu());
    const int64_t m0 = t[0] * out_scale, m1 = t[1] * out_scale, m2 = t[2] * out_scale;
    for (int64_t i = 0; i < m0 && o[0] * out_scale + i < D; ++i)
      for (int64_t j = 0; j < m1 && o[1] * out_scale + j < H; ++j)
        for (int64_t x = 0; x < m2 && o[2] * out_scale + x < W; ++x)
          for (int64_t c = 0; c < K; ++c) {
            const size_t p = size_t((((o[0] * out_scale + i) * H + o[1] * out_scale + j) * W + o[2] * out_scale + x) * K + c);
            const float e = std::fabs(y.data<float>()[((i * m1 + j) * m2 + x) * K + c] - pw[p]);
            bound[p] = std::max(bound[p], e);
          }
  }
  return bound;
}

// Per position of a [1, D, H, W, K] tensor at `scale`: whether it lies on a plane where a tile of
// `grid` begins or ends inside the volume (the first or last `scale` positions of a tile's side).
inline std::vector<bool> tile_edge_planes(const TileGrid& grid, const std::array<int64_t, 4>& dims, int64_t scale) {
  std::array<std::vector<bool>, 3> edge;
  for (size_t a = 0; a < 3; ++a) {
    edge[a].assign(size_t(dims[a]), false);
    for (int64_t s : grid.axes[a].starts) {
      const int64_t lo = s * scale, hi = (s + grid.axes[a].tile) * scale;
      for (int64_t q = 0; q < scale; ++q) {
        if (s > 0 && lo + q < dims[a]) edge[a][size_t(lo + q)] = true;
        if (hi < grid.axes[a].extent * scale && hi - 1 - q < dims[a]) edge[a][size_t(hi - 1 - q)] = true;
      }
    }
  }
  std::vector<bool> out;
  for (int64_t i = 0; i < dims[0]; ++i)
    for (int64_t j = 0; j < dims[1]; ++j)
      for (int64_t k = 0; k < dims[2]; ++k)
        for (int64_t c = 0; c < dims[3]; ++c)
          out.push_back(edge[0][size_t(i)] || edge[1][size_t(j)] || edge[2][size_t(k)]);
  return out;
}

// Mean |got - want| over the positions where `mask` is `on`.
inline double mean_error(const std::vector<float>& got, const std::vector<float>& want, const std::vector<bool>& mask,
                         bool on) {
  double s = 0;
  int64_t n = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (mask[i] == on) s += std::fabs(double(got[i]) - double(want[i])), ++n;
  return n ? s / double(n) : 0.0;
}

}  // namespace ctsr::test
