// Overlapping tiles blended with a smooth window: how a network runs over a volume larger than it
// should see at once (ctsr_infer's encode, sampling and decode; DESIGN.md, "Large volumes").
//
// A grid is laid out in coarse units (latent voxels). Along each axis of `extent` units, tiles of
// `tile` units (the extent when that is smaller) start at 0, s, 2s, ... with s = tile - overlap,
// and the last one ends at the extent (it may share more than `overlap` with its neighbour).
// Inputs and outputs may be finer than the grid by an integer `scale` (8 voxels per latent voxel
// for the VQ-AE's 8x side); a tile of t units covers t * scale positions there.
//
// Blending: every output position is sum_k w_k y_k / sum_k w_k over the tiles k that cover it.
// w_k is a product of one weight per axis; along an axis a tile weighs
//   sin^2(pi (i + 0.5) / (2 r))   at the i-th of its first r = overlap * scale positions when it
//                                  has a neighbour before it (mirrored at its end when it has one
//                                  after it), 1 elsewhere and at the volume's own borders,
// so a tile's edges, where it lacks context, count least; two neighbours at stride tile - overlap
// sum to exactly 1 across their shared ramp (sin^2 + cos^2). The weights are positive, so the
// result at a position is a convex combination of the tiles' values there: wherever every tile
// agrees with a reference to within e, so does the blend. The denominator is separable (a product
// of per-axis sums), so no weight volume is held. One tile (or tiles that do not overlap) gives
// the tile outputs bit for bit.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/diffusion.h"
#include "runtime/tensor.h"

namespace ctsr {

struct TileAxis {
  int64_t extent = 0, tile = 0, overlap = 0;
  std::vector<int64_t> starts;
  // Throws unless extent, tile > 0 and 0 <= overlap < tile (overlap is clamped to tile - 1 when
  // the extent shrinks the tile).
  static TileAxis make(int64_t extent, int64_t tile, int64_t overlap);
  // The blend weight of fine position i (0 <= i < tile * scale) of tile `index`.
  double weight(size_t index, int64_t i, int64_t scale) const;
  // sum over tiles of their weights at every fine position 0 .. extent * scale - 1.
  std::vector<double> weight_sums(int64_t scale) const;
};

struct TileGrid {
  std::array<TileAxis, 3> axes;
  static TileGrid make(const std::array<int64_t, 3>& extent, const std::array<int64_t, 3>& tile,
                       const std::array<int64_t, 3>& overlap);
  int64_t count() const;
  std::array<int64_t, 3> origin(int64_t k) const;  // tile k's first coarse position per axis
  std::array<int64_t, 3> tile() const { return {axes[0].tile, axes[1].tile, axes[2].tile}; }
  std::array<int64_t, 3> extent() const { return {axes[0].extent, axes[1].extent, axes[2].extent}; }
  // "3 x 5 x 5 = 75 tiles of 8 x 8 x 8, overlap 1 x 1 x 1"
  std::string str() const;
};

// One input of blend_tiles: a host [1, A, B, C, K] tensor at `scale` positions per grid unit.
// Positions of a tile past the tensor's end (the grid's extent * scale may exceed A) are read by
// mirror reflection about the last position, repeated as often as needed (numpy's "reflect").
struct TiledInput {
  const Tensor* tensor = nullptr;
  int64_t scale = 1;
};

// Called with one host tensor per input, each [b, tile0 * scale, tile1 * scale, tile2 * scale, K]
// (b tiles of the batch, in grid order); returns [b, tile0 * s, tile1 * s, tile2 * s, K_out] for
// the output's scale s, on any device.
using TileFunction = std::function<Tensor(const std::vector<Tensor>& boxes)>;

// out: host float32 [1, D, H, W, K_out] with D <= extent0 * out_scale (likewise H, W): what lies
// beyond is computed and dropped (a padded volume cropped back). Overwritten with the blend of
// `fn` over every tile, `batch` tiles per call. progress(done, total) after every call.
void blend_tiles(const TileGrid& grid, const std::vector<TiledInput>& inputs, int64_t out_scale, Tensor& out,
                 int64_t batch, const TileFunction& fn,
                 const std::function<void(int64_t done, int64_t total)>& progress = {});

// The network a tiled sampler calls: b tiles of x_t and of the condition (host
// [b, t0, t1, t2, C] each) at timestep t -> the network's output for them ([b, t0, t1, t2, C],
// any device).
using TiledNetwork = std::function<Tensor(const Tensor& x_t, const Tensor& condition, int64_t t)>;

// sample() (model/diffusion.h) over the whole latent of `condition` (host [1, d, h, w, C]), in
// host memory, where the network's output at every step is the blend of `net` over the tiles of
// `grid` (extent d, h, w): each step sees one consistent latent. The noise is drawn for the whole
// latent from (seed, sample_key), element by element of its position, so it does not depend on
// the tiling. progress(fraction) after every batch of tiles.
Tensor sample_in_tiles(const NoiseSchedule& schedule, const DiffusionConfig& config, const Tensor& condition,
                       const TileGrid& grid, int64_t batch, const TiledNetwork& net, uint64_t seed,
                       uint64_t sample_key, const std::function<void(double fraction)>& progress = {});

// Mirror index of position p >= 0 in [0, n): numpy's "reflect" (the edge is not repeated),
// periodic with period 2 (n - 1).
int64_t reflect_index(int64_t p, int64_t n);

}  // namespace ctsr
