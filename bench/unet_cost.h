// The analytic cost of the UNet (model/unet.h): its parameter count and the multiply-adds of one
// forward pass, found by walking the spec's graph with the spatial size of every level.
//
// Counted (the usual "model FLOPs" convention, the one tools/pytorch/bench_unet_step.py's
// forward hooks use): every convolution, output voxels x C_out x C_in x taps (padding taps
// counted as if real); every linear layer, rows x in x out; every attention's q k^T and P v,
// 2 x tokens^2 x channels per sample (all heads together). Not counted: GroupNorm, SiLU, dropout,
// softmax, adds, the resizes and concatenations, the loss and the optimiser.
// A training step is taken as 3 forwards (the backward's data and weight products are one
// forward's worth each), 2 FLOPs per multiply-add: 6 x forward_macs, as for transformers.
#pragma once

#include <cstdint>
#include <vector>

#include "model/unet.h"

namespace ctsr::bench {

struct UNetCost {
  int64_t parameters = 0;
  double forward_macs = 0;  // one forward of the whole batch
  double train_step_flops() const { return 6.0 * forward_macs; }
};

inline UNetCost unet_cost(const UNetConfig& c, int64_t batch, int64_t depth, int64_t height, int64_t width) {
  UNetCost cost;
  const double n = double(batch);
  auto linear = [&](int64_t in, int64_t out, double rows) {
    cost.parameters += in * out + out;
    cost.forward_macs += rows * double(in) * double(out);
  };
  auto conv = [&](int64_t in, int64_t out, int64_t taps, int64_t voxels_out) {
    cost.parameters += out * taps * in + out;
    cost.forward_macs += n * double(voxels_out) * double(out) * double(in) * double(taps);
  };
  auto norm = [&](int64_t channels) { cost.parameters += 2 * channels; };
  auto res_block = [&](int64_t in, int64_t out, int64_t voxels) {
    norm(in);
    conv(in, out, 27, voxels);
    linear(c.time_embed_dim, out, n);
    norm(out);
    conv(out, out, 27, voxels);
    if (in != out) conv(in, out, 1, voxels);
  };
  auto attention = [&](int64_t channels, int64_t tokens) {
    norm(channels);
    linear(channels, 3 * channels, n * double(tokens));
    cost.forward_macs += 2.0 * n * double(tokens) * double(tokens) * double(channels);
    linear(channels, channels, n * double(tokens));
  };

  // Voxels per sample at every level: each Down maps n to ceil(n / 2) per axis.
  const int64_t levels = c.levels();
  std::vector<int64_t> voxels;
  for (int64_t l = 0; l < levels; ++l) {
    voxels.push_back(depth * height * width);
    depth = unet_downsampled(depth), height = unet_downsampled(height), width = unet_downsampled(width);
  }

  linear(c.model_channels, c.time_embed_dim, n);
  linear(c.time_embed_dim, c.time_embed_dim, n);
  conv(c.in_channels, c.width(0), 27, voxels[0]);
  std::vector<int64_t> skips{c.width(0)};
  int64_t ch = c.width(0);
  for (int64_t l = 0; l < levels; ++l) {
    for (int64_t b = 0; b < c.num_blocks; ++b) {
      res_block(ch, c.width(l), voxels[size_t(l)]);
      ch = c.width(l);
      if (c.attention_levels[size_t(l)]) attention(ch, voxels[size_t(l)]);
      skips.push_back(ch);
    }
    if (l + 1 < levels) {
      conv(ch, ch, 27, voxels[size_t(l + 1)]);
      skips.push_back(ch);
    }
  }
  res_block(ch, ch, voxels.back());
  attention(ch, voxels.back());
  res_block(ch, ch, voxels.back());
  for (int64_t l = levels - 1; l >= 0; --l) {
    for (int64_t b = 0; b <= c.num_blocks; ++b) {
      res_block(ch + skips.back(), c.width(l), voxels[size_t(l)]);
      skips.pop_back();
      ch = c.width(l);
      if (c.attention_levels[size_t(l)]) attention(ch, voxels[size_t(l)]);
    }
    if (l > 0) conv(ch, ch, 27, voxels[size_t(l - 1)]);  // Up: resize to the skip's size, then conv
  }
  norm(ch);
  conv(ch, c.out_channels, 27, voxels[0]);
  return cost;
}

}  // namespace ctsr::bench
