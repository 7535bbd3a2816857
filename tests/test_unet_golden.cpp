// The UNet (model/unet.h) against an independent PyTorch implementation of the spec
// (tools/pytorch/unet_model.py): output, input gradient and every parameter gradient of
// L = sum(y * dy), with every parameter random and non-zero and dropout off, in float64 on the
// reference path and in float32 on the reference and the CUDA paths.
//
// The golden files (tests/data/unet/<case>/, made by tools/pytorch/make_unet_golden.py) hold
// y and dx whole and the gradients whole up to 1024 elements; larger gradients are stored as 32
// random-sign projections and their norm, from which the relative L2 error is estimated (see
// the script). Weights, x and dy are not stored: both sides compute them from the script's
// integer recipe, keyed by ctsr's parameter names and laid out in ctsr's layout, so a name or a
// layout that differs from the reference's shows up as a mismatch here.
//
// Also: the analytic parameter and FLOP count of bench/unet_cost.h (ctsr_bench's UNetTrainStep)
// against a hand count and against PyTorch's forward hooks (tests/data/unet/cost.json).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "bench/unet_cost.h"
#include "model/unet.h"
#include "runtime/formats/npy.h"
#include "runtime/formats/safetensors.h"
#include "tests/harness.h"

namespace ctsr {
namespace {

const std::string kDir = std::string(CTSR_TEST_DATA_DIR) + "/unet/";
const std::vector<std::string> kCases{"parity", "two_blocks"};

// ---- make_unet_golden.py's integer recipe ------------------------------------------------------

uint64_t fnv1a64(const std::string& text) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : text) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

// The i-th output of splitmix64 seeded with key.
uint64_t recipe_bits(uint64_t key, uint64_t i) {
  uint64_t z = key + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// In (-1, 1), never 0, 16 significant bits: exact in float32.
std::vector<double> recipe_values(const std::string& key_text, int64_t n) {
  const uint64_t key = fnv1a64(key_text);
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = double(2 * int64_t(recipe_bits(key, uint64_t(i)) >> 48) - 65535) / 65536.0;
  return v;
}

Tensor recipe_tensor(const std::string& key_text, const Shape& shape, DType dtype, Device device) {
  Tensor t = Tensor::from_vector(recipe_values(key_text, shape.numel()), shape);
  return (dtype == DType::float64 ? t : test::to_float(t)).to(device);
}

// Every parameter from the recipe: GroupNorm affines around (1, 0), convolutions and linears
// uniform at a power of two near 1/sqrt(fan_in).
void set_recipe_parameters(UNet3D& net) {
  std::map<std::string, Shape> shapes;
  for (Parameter* p : net.parameters()) shapes[p->name] = p->value.shape();
  for (Parameter* p : net.parameters()) {
    std::vector<double> v = recipe_values(p->name, p->value.numel());
    const std::string owner = p->name.substr(0, p->name.rfind('.'));
    const Shape& weight = shapes.at(owner + ".weight");
    const bool is_weight = p->name.size() > 7 && p->name.compare(p->name.size() - 7, 7, ".weight") == 0;
    for (double& x : v) {
      if (weight.ndim() == 1) {
        x = is_weight ? 1.0 + x / 4.0 : x / 4.0;
      } else {
        const int64_t fan_in = weight.numel() / weight[0];
        const int exponent = (std::bit_width(uint64_t(fan_in)) - 1) / 2;  // floor(log2(fan_in)) / 2
        x = std::ldexp(x, -exponent);
      }
    }
    Tensor host = Tensor::from_vector(v, p->value.shape());
    p->value.copy_from(p->value.dtype() == DType::float64 ? host : test::to_float(host));
  }
}

// The sketch the script stores: sum_i s_k(i) g_i, with the signs keyed by name and k.
std::vector<double> sketch(const std::string& name, const std::vector<double>& g, int projections) {
  std::vector<double> out(static_cast<size_t>(projections));
  for (int k = 0; k < projections; ++k) {
    const uint64_t key = fnv1a64(name + "#" + std::to_string(k));
    double sum = 0;
    for (size_t i = 0; i < g.size(); ++i) sum += (recipe_bits(key, i) >> 63) ? g[i] : -g[i];
    out[size_t(k)] = sum;
  }
  return out;
}

// ---- golden files --------------------------------------------------------------------------------

struct Golden {
  std::string name;
  UNetConfig config;
  std::vector<int64_t> grid;  // N, D, H, W
  std::vector<int64_t> timesteps;
  int projections = 0;
  Tensor y, dx;  // float64, channels-last
  std::unique_ptr<io::SafetensorsReader> grads;
};

// The spec's keys, as the scripts write them (unet_model.UNetConfig).
UNetConfig config_from_json(const nlohmann::json& c) {
  UNetConfig config;
  config.in_channels = c.at("in_channels");
  config.out_channels = c.at("out_channels");
  config.model_channels = c.at("model_channels");
  config.channel_mult = c.at("channel_mult").get<std::vector<int64_t>>();
  config.num_blocks = c.at("num_blocks");
  config.attention_levels = c.at("attention_levels").get<std::vector<bool>>();
  config.head_channels = c.at("head_channels");
  config.time_embed_dim = c.at("time_embed_dim");
  config.dropout = c.at("dropout");
  config.norm_groups = c.at("norm_groups");
  config.norm_eps = c.at("norm_eps");
  return config;
}

Golden load_golden(const std::string& name) {
  Golden g;
  g.name = name;
  g.grads = std::make_unique<io::SafetensorsReader>(kDir + name + "/grads.safetensors");
  const auto& meta = g.grads->metadata();
  g.config = config_from_json(nlohmann::json::parse(meta.at("config")));
  g.grid = nlohmann::json::parse(meta.at("grid")).get<std::vector<int64_t>>();
  g.timesteps = nlohmann::json::parse(meta.at("timesteps")).get<std::vector<int64_t>>();
  g.projections = std::stoi(meta.at("projections"));
  g.y = io::read_npy(kDir + name + "/y.npy");
  g.dx = io::read_npy(kDir + name + "/dx.npy");
  return g;
}

struct GoldenErrors {
  double y = 0, dx = 0;
  double worst_whole = 0, worst_sketched = 0;  // relative L2 of the parameter gradients
  std::string worst_whole_name, worst_sketched_name;
  int whole = 0, sketched = 0;
};

// Runs forward and backward of the golden case in `dtype` on `device` and measures every error.
// float_timesteps: t as float64 (the float64 model's sinusoid then stays in float64; integer t
// gives a float32 sinusoid, see timestep_embedding.h) instead of int64.
GoldenErrors run_golden(const Golden& g, DType dtype, Device device, bool float_timesteps) {
  LayerOptions o;
  o.dtype = dtype;
  o.device = device;
  UNet3D net(g.config, o);
  set_recipe_parameters(net);
  net.train(false);
  net.zero_grad();
  const Shape x_shape{g.grid[0], g.grid[1], g.grid[2], g.grid[3], g.config.in_channels};
  const Shape y_shape{g.grid[0], g.grid[1], g.grid[2], g.grid[3], g.config.out_channels};
  const Tensor x = recipe_tensor("x", x_shape, dtype, device);
  const Tensor dy = recipe_tensor("dy", y_shape, dtype, device);
  const int64_t n = int64_t(g.timesteps.size());
  const Tensor t = float_timesteps
                       ? Tensor::from_vector(std::vector<double>(g.timesteps.begin(), g.timesteps.end()), {n}, device)
                       : Tensor::from_vector(g.timesteps, {n}, device);

  GoldenErrors e;
  const Tensor y = net.forward(x, t);
  e.y = test::relative_l2(y, g.y);
  e.dx = test::relative_l2(net.backward(dy), g.dx);

  size_t entries_used = 0;
  for (Parameter* p : net.parameters()) {
    const std::vector<double> grad = test::to_double(p->grad.to(Device::cpu())).to_vector<double>();
    if (g.grads->contains("grad/" + p->name)) {
      const Tensor want = g.grads->load("grad/" + p->name);
      EXPECT_EQ(want.shape(), p->value.shape()) << p->name;
      const double err = test::relative_l2(Tensor::from_vector(grad, p->value.shape()), want);
      if (err >= e.worst_whole) e.worst_whole = err, e.worst_whole_name = p->name;
      ++e.whole, ++entries_used;
    } else {
      if (!g.grads->contains("sketch/" + p->name)) {
        ADD_FAILURE() << g.name << ": the golden file has no gradient of " << p->name;
        continue;
      }
      const std::vector<double> want = g.grads->load("sketch/" + p->name).to_vector<double>();
      const double norm = g.grads->load("norm/" + p->name).to_vector<double>().at(0);
      const std::vector<double> got = sketch(p->name, grad, g.projections);
      double sum = 0;
      for (int k = 0; k < g.projections; ++k) sum += (got[size_t(k)] - want[size_t(k)]) * (got[size_t(k)] - want[size_t(k)]);
      const double err = std::sqrt(sum / g.projections) / norm;
      if (err >= e.worst_sketched) e.worst_sketched = err, e.worst_sketched_name = p->name;
      ++e.sketched, entries_used += 2;
    }
  }
  // Every golden gradient belongs to one of our parameters (no reference parameter we lack).
  EXPECT_EQ(entries_used, g.grads->names().size()) << g.name;
  std::printf("UNet golden %-10s %s %s t %s: y %.2e, dx %.2e, parameter gradients: worst of %d whole %.2e (%s), "
              "worst of %d sketched %.2e (%s)\n",
              g.name.c_str(), dtype == DType::float64 ? "float64" : "float32", device.str().c_str(),
              float_timesteps ? "float64" : "int64", e.y, e.dx, e.whole, e.worst_whole, e.worst_whole_name.c_str(),
              e.sketched, e.worst_sketched, e.worst_sketched_name.c_str());
  return e;
}

void expect_within(const GoldenErrors& e, double tol) {
  EXPECT_LT(e.y, tol);
  EXPECT_LT(e.dx, tol);
  EXPECT_LT(e.worst_whole, tol) << e.worst_whole_name;
  EXPECT_LT(e.worst_sketched, tol) << e.worst_sketched_name;
}

TEST(UNetGolden, RecipeMatchesTheScript) {
  // Anchors of the integer recipe, printed by make_unet_golden.py's functions.
  EXPECT_EQ(fnv1a64("x"), 0xAF63F54C86021707ull);
  EXPECT_EQ(recipe_bits(fnv1a64("x"), 0), 0x338262D8F096398Full);
  const std::vector<double> v = recipe_values("x", 3);
  EXPECT_EQ(v, (std::vector<double>{-39163.0 / 65536, 40439.0 / 65536, 18785.0 / 65536}));
}

// float64: both sides compute the same function in double, so they agree to rounding.
TEST(UNetGolden, Float64MatchesPyTorch) {
  for (const std::string& name : kCases) {
    SCOPED_TRACE(name);
    const Golden g = load_golden(name);
    expect_within(run_golden(g, DType::float64, Device::cpu(), /*float_timesteps=*/true), 1e-12);
  }
}

// Integer steps, as in training: the sinusoid is float32 (timestep_embedding.h), which bounds
// the agreement of the float64 model at float32's resolution.
TEST(UNetGolden, Float64WithIntegerStepsMatchesPyTorch) {
  const Golden g = load_golden("parity");
  expect_within(run_golden(g, DType::float64, Device::cpu(), /*float_timesteps=*/false), 2e-7);
}

TEST(UNetGolden, Float32OnTheReferenceMatchesPyTorch) {
  for (const std::string& name : kCases) {
    SCOPED_TRACE(name);
    const Golden g = load_golden(name);
    expect_within(run_golden(g, DType::float32, Device::cpu(), /*float_timesteps=*/false), 2e-5);
  }
}

class UNetGoldenPaths : public test::CudaPathTest {};

TEST_P(UNetGoldenPaths, Float32MatchesPyTorch) {
  for (const std::string& name : kCases) {
    SCOPED_TRACE(name);
    const Golden g = load_golden(name);
    expect_within(run_golden(g, DType::float32, device(), /*float_timesteps=*/false), 2e-5);
  }
}

CTSR_INSTANTIATE_CUDA_PATHS(UNetGoldenPaths);

// ---- the analytic cost of bench/unet_cost.h ------------------------------------------------------

nlohmann::json load_costs() {
  std::ifstream f(kDir + "cost.json");
  EXPECT_TRUE(f.good()) << kDir << "cost.json";
  return nlohmann::json::parse(f);
}

// The "hand" network of cost.json (in 2, out 1, widths 4 and 8+attention with 2 heads of 4,
// 1 block, time_embed_dim 6) on one 3 x 2 x 2 sample: 12 voxels at level 0, 2 (2 x 1 x 1) at level 1.
TEST(UNetCost, MatchesAHandCount) {
  const UNetConfig c = config_from_json(load_costs().at("hand").at("config"));
  const int64_t v0 = 12, v1 = 2;
  auto conv = [](int64_t in, int64_t out, int64_t taps, int64_t voxels) { return voxels * out * in * taps; };
  auto res = [&](int64_t in, int64_t out, int64_t voxels) {  // conv1, time_proj, conv2, skip
    return conv(in, out, 27, voxels) + 6 * out + conv(out, out, 27, voxels) + (in != out ? conv(in, out, 1, voxels) : 0);
  };
  const int64_t attention_8 = 4 * v1 * 8 * 8 + 2 * v1 * v1 * 8;  // qkv + proj_out, q k^T + P v
  const int64_t macs = 4 * 6 + 6 * 6                              // time embedding
                       + conv(2, 4, 27, v0)                       // conv_in
                       + res(4, 4, v0) + conv(4, 4, 27, v1)       // level 0 down, Down
                       + res(4, 8, v1) + attention_8              // level 1 down
                       + res(8, 8, v1) + attention_8 + res(8, 8, v1)       // middle
                       + res(8 + 8, 8, v1) + attention_8 + res(8 + 4, 8, v1) + attention_8  // level 1 up
                       + conv(8, 8, 27, v0)                       // Up to the level-0 skip's size
                       + res(8 + 4, 4, v0) + res(4 + 4, 4, v0)    // level 0 up
                       + conv(4, 1, 27, v0);                      // conv_out
  EXPECT_EQ(macs, 114308);  // the sum of the terms above, done once more on paper
  const bench::UNetCost cost = bench::unet_cost(c, 1, 3, 2, 2);
  EXPECT_EQ(cost.forward_macs, double(macs));
  EXPECT_EQ(cost.train_step_flops(), 6.0 * double(macs));
  UNet3D net(c);
  EXPECT_EQ(cost.parameters, net.parameter_count());
}

// Parameters and multiply-adds against PyTorch's forward hooks on the PyTorch model of the spec, and the
// parameter count against our UNet's own, for every configuration that has golden data.
TEST(UNetCost, MatchesThePyTorchReference) {
  const nlohmann::json costs = load_costs();
  for (const auto& [name, entry] : costs.items()) {
    SCOPED_TRACE(name);
    const UNetConfig c = config_from_json(entry.at("config"));
    const auto grid = entry.at("grid").get<std::vector<int64_t>>();
    const bench::UNetCost one = bench::unet_cost(c, 1, grid[0], grid[1], grid[2]);
    EXPECT_EQ(one.parameters, entry.at("parameters").get<int64_t>());
    EXPECT_EQ(one.forward_macs, entry.at("forward_macs_per_sample").get<double>());
    EXPECT_EQ(bench::unet_cost(c, 3, grid[0], grid[1], grid[2]).forward_macs, 3 * one.forward_macs);
    if (name == "production") {
      const double mib = double(one.parameters) * 4 / (1 << 20);
      std::printf("production UNet: %lld parameters; float32 parameters %.0f MiB, gradients %.0f MiB, AdamW moments "
                  "%.0f MiB (%.2f GiB together); %.3g TFLOP per training step at batch 32 on 25 x 16 x 16\n",
                  static_cast<long long>(one.parameters), mib, mib, 2 * mib, 4 * mib / 1024,
                  bench::unet_cost(c, 32, 25, 16, 16).train_step_flops() / 1e12);
    } else {
      UNet3D net(c);
      EXPECT_EQ(one.parameters, net.parameter_count());
    }
  }
  for (const std::string& name : kCases) {
    const Golden g = load_golden(name);
    UNet3D net(g.config);
    EXPECT_EQ(bench::unet_cost(g.config, 1, 5, 3, 7).parameters, net.parameter_count()) << name;
  }
}

}  // namespace
}  // namespace ctsr
