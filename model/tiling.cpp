#include "model/tiling.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>

#include "runtime/error.h"

namespace ctsr {

int64_t reflect_index(int64_t p, int64_t n) {
  CTSR_CHECK(p >= 0 && n > 0, "reflect_index: position ", p, " in ", n);
  if (p < n) return p;
  if (n == 1) return 0;
  const int64_t period = 2 * (n - 1);
  p %= period;
  return p < n ? p : period - p;
}

TileAxis TileAxis::make(int64_t extent, int64_t tile, int64_t overlap) {
  CTSR_CHECK(extent > 0 && tile > 0 && overlap >= 0 && overlap < tile, "tiles of ", tile, " with overlap ", overlap,
             " over ", extent, ": expected a positive tile and 0 <= overlap < tile");
  TileAxis a;
  a.extent = extent;
  a.tile = std::min(tile, extent);
  a.overlap = std::min(overlap, a.tile - 1);
  const int64_t stride = a.tile - a.overlap;
  for (int64_t s = 0;; s += stride) {
    if (s + a.tile >= extent) {
      a.starts.push_back(extent - a.tile);
      break;
    }
    a.starts.push_back(s);
  }
  return a;
}

double TileAxis::weight(size_t index, int64_t i, int64_t scale) const {
  const int64_t n = tile * scale, r = overlap * scale;
  if (r == 0) return 1.0;
  auto ramp = [&](int64_t j) {
    const double s = std::sin(std::numbers::pi * (double(j) + 0.5) / (2.0 * double(r)));
    return s * s;
  };
  double w = 1.0;
  if (index > 0 && i < r) w *= ramp(i);
  if (index + 1 < starts.size() && i >= n - r) w *= ramp(n - 1 - i);
  return w;
}

std::vector<double> TileAxis::weight_sums(int64_t scale) const {
  std::vector<double> sums(size_t(extent * scale), 0.0);
  for (size_t t = 0; t < starts.size(); ++t)
    for (int64_t i = 0; i < tile * scale; ++i) sums[size_t(starts[t] * scale + i)] += weight(t, i, scale);
  return sums;
}

TileGrid TileGrid::make(const std::array<int64_t, 3>& extent, const std::array<int64_t, 3>& tile,
                        const std::array<int64_t, 3>& overlap) {
  TileGrid g;
  for (size_t a = 0; a < 3; ++a) g.axes[a] = TileAxis::make(extent[a], tile[a], overlap[a]);
  return g;
}

int64_t TileGrid::count() const {
  return int64_t(axes[0].starts.size() * axes[1].starts.size() * axes[2].starts.size());
}

std::array<int64_t, 3> TileGrid::origin(int64_t k) const {
  const int64_t n1 = int64_t(axes[1].starts.size()), n2 = int64_t(axes[2].starts.size());
  return {axes[0].starts[size_t(k / (n1 * n2))], axes[1].starts[size_t((k / n2) % n1)],
          axes[2].starts[size_t(k % n2)]};
}

std::string TileGrid::str() const {
  auto three = [](int64_t a, int64_t b, int64_t c) {
    return std::to_string(a) + " x " + std::to_string(b) + " x " + std::to_string(c);
  };
  return three(int64_t(axes[0].starts.size()), int64_t(axes[1].starts.size()), int64_t(axes[2].starts.size())) +
         " = " + std::to_string(count()) + (count() == 1 ? " tile of " : " tiles of ") +
         three(axes[0].tile, axes[1].tile, axes[2].tile) + ", overlap " +
         three(axes[0].overlap, axes[1].overlap, axes[2].overlap);
}

namespace {

// Tile index k's position along each axis in the grid (the index into axes[a].starts).
std::array<size_t, 3> tile_position(const TileGrid& g, int64_t k) {
  const int64_t n1 = int64_t(g.axes[1].starts.size()), n2 = int64_t(g.axes[2].starts.size());
  return {size_t(k / (n1 * n2)), size_t((k / n2) % n1), size_t(k % n2)};
}

// Copies tile k's box of `in` (at its scale, reflected past the end) into box b of `boxes`.
void gather(const TileGrid& g, int64_t k, const TiledInput& in, Tensor& boxes, int64_t b) {
  const Tensor& t = *in.tensor;
  const int64_t A = t.dim(1), B = t.dim(2), C = t.dim(3), K = t.dim(4), s = in.scale;
  const std::array<int64_t, 3> o = g.origin(k), n = g.tile();
  const int64_t n0 = n[0] * s, n1 = n[1] * s, n2 = n[2] * s;
  const float* src = t.data<float>();
  float* dst = boxes.data<float>() + b * n0 * n1 * n2 * K;
  std::vector<int64_t> cols(static_cast<size_t>(n2));
  bool contiguous = o[2] * s + n2 <= C;
  for (int64_t x = 0; x < n2; ++x) cols[size_t(x)] = reflect_index(o[2] * s + x, C);
  for (int64_t i = 0; i < n0; ++i) {
    const int64_t zi = reflect_index(o[0] * s + i, A);
    for (int64_t j = 0; j < n1; ++j) {
      const int64_t yj = reflect_index(o[1] * s + j, B);
      const float* row = src + (zi * B + yj) * C * K;
      float* out = dst + (i * n1 + j) * n2 * K;
      if (contiguous) {
        std::memcpy(out, row + o[2] * s * K, size_t(n2 * K) * sizeof(float));
      } else {
        for (int64_t x = 0; x < n2; ++x) std::memcpy(out + x * K, row + cols[size_t(x)] * K, size_t(K) * sizeof(float));
      }
    }
  }
}

}  // namespace

void blend_tiles(const TileGrid& grid, const std::vector<TiledInput>& inputs, int64_t out_scale, Tensor& out,
                 int64_t batch, const TileFunction& fn, const std::function<void(int64_t, int64_t)>& progress) {
  CTSR_CHECK(batch > 0, "blend_tiles: batch ", batch);
  CTSR_CHECK(out.ndim() == 5 && out.dim(0) == 1 && out.dtype() == DType::float32 && out.device() == Device::cpu(),
             "blend_tiles: the output is ", out.shape().str(), ", expected a host float32 [1, D, H, W, K]");
  for (const TiledInput& in : inputs)
    CTSR_CHECK(in.tensor && in.tensor->ndim() == 5 && in.tensor->dim(0) == 1 &&
                   in.tensor->dtype() == DType::float32 && in.tensor->device() == Device::cpu() && in.scale > 0,
               "blend_tiles: an input is not a host float32 [1, A, B, C, K] tensor");
  const std::array<int64_t, 3> extent = grid.extent(), n = grid.tile();
  const int64_t D = out.dim(1), H = out.dim(2), W = out.dim(3), K = out.dim(4), s = out_scale;
  CTSR_CHECK(D <= extent[0] * s && H <= extent[1] * s && W <= extent[2] * s, "blend_tiles: the output ",
             out.shape().str(), " is larger than the grid's ", extent[0] * s, " x ", extent[1] * s, " x ", extent[2] * s);
  const int64_t n0 = n[0] * s, n1 = n[1] * s, n2 = n[2] * s;
  std::memset(out.raw_data(), 0, out.nbytes());
  float* acc = out.data<float>();

  // Each axis's weights per tile, at the output's scale.
  std::array<std::vector<std::vector<float>>, 3> weights;
  for (size_t a = 0; a < 3; ++a) {
    const TileAxis& axis = grid.axes[a];
    for (size_t t = 0; t < axis.starts.size(); ++t) {
      std::vector<float> w(size_t(axis.tile * s));
      for (int64_t i = 0; i < axis.tile * s; ++i) w[size_t(i)] = float(axis.weight(t, i, s));
      weights[a].push_back(std::move(w));
    }
  }

  const int64_t total = grid.count();
  for (int64_t first = 0; first < total; first += batch) {
    const int64_t count = std::min(batch, total - first);
    std::vector<Tensor> boxes;
    for (const TiledInput& in : inputs) {
      const int64_t si = in.scale;
      Tensor box = Tensor::empty({count, n[0] * si, n[1] * si, n[2] * si, in.tensor->dim(4)});
      for (int64_t b = 0; b < count; ++b) gather(grid, first + b, in, box, b);
      boxes.push_back(std::move(box));
    }
    const Tensor y = fn(boxes).to(Device::cpu());
    CTSR_CHECK(y.ndim() == 5 && y.dim(0) == count && y.dim(1) == n0 && y.dim(2) == n1 && y.dim(3) == n2 &&
                   y.dim(4) == K && y.dtype() == DType::float32,
               "blend_tiles: a tile's output is ", y.shape().str(), ", expected [", count, ", ", n0, ", ", n1, ", ",
               n2, ", ", K, "] float32");
    const float* py = y.data<float>();
    for (int64_t b = 0; b < count; ++b) {
      const std::array<int64_t, 3> o = grid.origin(first + b);
      const std::array<size_t, 3> p = tile_position(grid, first + b);
      const std::vector<float>&w0 = weights[0][p[0]], &w1 = weights[1][p[1]], &w2 = weights[2][p[2]];
      const int64_t i_end = std::min(n0, D - o[0] * s), j_end = std::min(n1, H - o[1] * s),
                    x_end = std::min(n2, W - o[2] * s);
      for (int64_t i = 0; i < i_end; ++i)
        for (int64_t j = 0; j < j_end; ++j) {
          const float wij = w0[size_t(i)] * w1[size_t(j)];
          const float* src = py + ((b * n0 + i) * n1 + j) * n2 * K;
          float* dst = acc + (((o[0] * s + i) * H + o[1] * s + j) * W + o[2] * s) * K;
          for (int64_t x = 0; x < x_end; ++x) {
            const float w = wij * w2[size_t(x)];
            for (int64_t c = 0; c < K; ++c) dst[x * K + c] += w * src[x * K + c];
          }
        }
    }
    if (progress) progress(first + count, total);
  }

  // Divide by the separable sum of the weights (1 wherever a single tile covers a position).
  const std::vector<double> s0 = grid.axes[0].weight_sums(s), s1 = grid.axes[1].weight_sums(s),
                            s2 = grid.axes[2].weight_sums(s);
  for (int64_t i = 0; i < D; ++i)
    for (int64_t j = 0; j < H; ++j) {
      const double sij = s0[size_t(i)] * s1[size_t(j)];
      float* row = acc + (i * H + j) * W * K;
      for (int64_t x = 0; x < W; ++x) {
        const double sum = sij * s2[size_t(x)];
        if (sum == 1.0) continue;
        const float inv = float(1.0 / sum);
        for (int64_t c = 0; c < K; ++c) row[x * K + c] *= inv;
      }
    }
}

Tensor sample_in_tiles(const NoiseSchedule& schedule, const DiffusionConfig& config, const Tensor& condition,
                       const TileGrid& grid, int64_t batch, const TiledNetwork& net, uint64_t seed,
                       uint64_t sample_key, const std::function<void(double)>& progress) {
  CTSR_CHECK(condition.ndim() == 5 && condition.dim(0) == 1 && condition.device() == Device::cpu(),
             "sample_in_tiles: the condition is ", condition.shape().str(), ", expected a host [1, d, h, w, C]");
  const std::array<int64_t, 3> extent = grid.extent();
  CTSR_CHECK(extent[0] == condition.dim(1) && extent[1] == condition.dim(2) && extent[2] == condition.dim(3),
             "sample_in_tiles: the grid's extent ", extent[0], " x ", extent[1], " x ", extent[2],
             " is not the condition's ", condition.shape().str());
  const int64_t steps = config.sampling_steps;
  int64_t step = 0;
  Denoiser denoiser = [&](const Tensor& x_t, int64_t t) {
    Tensor out = Tensor::empty(x_t.shape());
    blend_tiles(
        grid, {{&x_t, 1}, {&condition, 1}}, 1, out, batch,
        [&](const std::vector<Tensor>& boxes) { return net(boxes[0], boxes[1], t); },
        [&](int64_t done, int64_t total) {
          if (progress) progress((double(step) + double(done) / double(total)) / double(steps));
        });
    ++step;
    return out;
  };
  return sample(schedule, config, condition.shape(), DType::float32, Device::cpu(), denoiser, seed, {sample_key});
}

}  // namespace ctsr
