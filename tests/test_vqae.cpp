// The VQ-AE importer against an independent PyTorch model of the spec (tools/pytorch/
// make_vqae_golden.py, tests/data/vqae/ at 8x and tests/data/vqae4x/ at 4x): the architecture read off a Lightning-style checkpoint
// with foreign objects, and encode, patch_encode and decode within 1e-4 relative L2 of PyTorch on
// the reference path and on the CUDA paths; the sliding decode; the latent normalisation; and the
// errors for volumes, latents and checkpoints that do not fit.
#include <cmath>

#include "kernels/codebook.h"
#include "model/pytorch_import.h"
#include "model/vqae.h"
#include "runtime/formats/npy.h"
#include "runtime/formats/safetensors.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "model/vqae_codec_config.h"
#include "train/vqae_config.h"

namespace ctsr::test {
namespace {

const std::string kDir = std::string(CTSR_TEST_DATA_DIR) + "/vqae/";
// The same golden model at 4x (PatchVolume_4x's layout: two halvings; make_vqae_golden.py --levels 2).
const std::string kDir4x = std::string(CTSR_TEST_DATA_DIR) + "/vqae4x/";
constexpr int64_t kGroups = 2;  // the golden model's GroupNorm groups (tools/pytorch/make_vqae_golden.py)

// Golden volumes are [D, H, W]; ours [1, D, H, W, 1]. Golden latents [8, d, h, w]; ours [1, d, h, w, 8].
Tensor golden_volume(const std::string& name, const std::string& dir = kDir) {
  Tensor v = io::read_npy(dir + name);
  return v.reshape({1, v.dim(0), v.dim(1), v.dim(2), 1});
}
Tensor golden_latent(const std::string& name, const std::string& dir = kDir) {
  Tensor z = io::read_npy(dir + name);
  return move_axis_last(z, 0).reshape({1, z.dim(1), z.dim(2), z.dim(3), z.dim(0)});
}

TEST(Vqae, ArchitectureReadOffTheCheckpoint) {
  auto source = io::open_tensor_source(kDir + "tiny.ckpt");
  const VqaeConfig c = vqae_config_from(*source, kGroups);
  EXPECT_EQ(c.n_hiddens, 4);
  EXPECT_EQ(c.levels, 3);
  EXPECT_EQ(c.downsample(), 8);
  EXPECT_EQ(c.image_channels, 1);
  EXPECT_EQ(c.embedding_dim, 8);
  EXPECT_EQ(c.n_codes, 64);
  EXPECT_EQ(c.attention_heads, 4);
  EXPECT_EQ(c.widths(), (std::vector<int64_t>{4, 8, 16, 16}));
  // The released model's widths (spec): 48, 96, 192, 192.
  VqaeConfig released;
  EXPECT_EQ(released.widths(), (std::vector<int64_t>{48, 96, 192, 192}));
  // Every key the model uses is in the file; the discriminator, perceptual loss and codebook
  // training buffers are there and unused.
  Vqae model(c);
  int64_t used = 0;
  for (const auto& key : model.checkpoint_keys()) {
    EXPECT_TRUE(source->contains(key)) << key;
    ++used;
  }
  EXPECT_LT(used, static_cast<int64_t>(source->names().size()));
  for (const char* unused : {"codebook.N", "codebook.z_avg", "volume_discriminator.0.weight"})
    EXPECT_TRUE(source->contains(unused)) << unused;
  expect_error_mentions([&] { vqae_config_from(*source, 3); }, {"tiny.ckpt", "num_groups 3", "width 4", "--num-groups"});
}

TEST(Vqae, FourTimesArchitectureReadOffTheCheckpoint) {
  auto source = io::open_tensor_source(kDir4x + "tiny.ckpt");
  const VqaeConfig c = vqae_config_from(*source, kGroups);
  EXPECT_EQ(c.levels, 2);
  EXPECT_EQ(c.downsample(), 4);
  EXPECT_EQ(c.n_hiddens, 4);
  EXPECT_EQ(c.widths(), (std::vector<int64_t>{4, 8, 8}));
  Vqae model(c);
  for (const auto& key : model.checkpoint_keys()) EXPECT_TRUE(source->contains(key)) << key;
  // No third level anywhere: an 8x reading of this file would look for these.
  for (const char* absent : {"encoder.conv_blocks.3.res1.conv1.weight", "decoder.conv_blocks.3.res1.conv1.weight"})
    EXPECT_FALSE(source->contains(absent)) << absent;
  // The shapes of encode and decode at 4x: [1, D, H, W, 1] -> [1, D/4, H/4, W/4, 8] -> back.
  const Tensor x = golden_volume("input.npy", kDir4x);
  const Tensor z = model.encode(x);
  EXPECT_EQ(z.shape(), (Shape{1, 8, 4, 12, 8}));
  EXPECT_EQ(model.decode(z).shape(), x.shape());
  EXPECT_EQ(model.patch_encode(x, 16).shape(), z.shape());
  expect_error_mentions([&] { model.encode(random_tensor({1, 10, 16, 16, 1}, 3)); }, {"D = 10", "multiple of 4"});
}

// configs/vqae_4x.yaml: both readers take it (ctsr_vqae's settings, ctsr_train_vqae's schema), it
// names the 4x architecture, and a model built from it encodes a volume to 8 latent channels at a
// quarter of its size per axis.
TEST(Vqae, FourTimesConfiguration) {
  const std::string path = std::string(CTSR_TEST_DATA_DIR) + "/../../configs/vqae_4x.yaml";
  const train::VqaeTrainConfig file = train::load_vqae_train_config(path);
  EXPECT_EQ(file.model.levels, 2);
  EXPECT_EQ(file.model.n_codes, 8192);
  EXPECT_EQ(file.model.embedding_dim, 8);
  EXPECT_EQ(file.training.patch_size % file.vqae().downsample(), 0);
  EXPECT_EQ(read_vqae_codec_config(path).patch_size, 64);
  VqaeConfig small = file.vqae();
  small.n_hiddens = 4;  // the file's width, smaller, so the test stays quick
  small.num_groups = 2;
  small.n_codes = 16;
  EXPECT_EQ(small.widths(), (std::vector<int64_t>{4, 8, 8}));
  Vqae model(small);
  const Tensor z = model.patch_encode(random_tensor({1, 32, 64, 32, 1}, 9), 32);
  EXPECT_EQ(z.shape(), (Shape{1, 8, 16, 8, 8}));
  EXPECT_EQ(model.decode(z).shape(), (Shape{1, 32, 64, 32, 1}));
}

void expect_parity(Device device, const std::string& dir = kDir) {
  auto model = Vqae::load(dir + "tiny.ckpt", kGroups, device);
  const Tensor x = golden_volume("input.npy", dir);
  const double enc = relative_l2(model->encode(x.to(device)), golden_latent("encode.npy", dir));
  const double patch = relative_l2(model->patch_encode(x.to(device), 16), golden_latent("patch16.npy", dir));
  // Decode PyTorch's latent, so the comparison isolates the decoder (and quantisation).
  const Tensor z = golden_latent("encode.npy", dir);
  const std::vector<int64_t> idx = codebook_nearest(z.to(device), model->codebook()).to(Device::cpu()).to_vector<int64_t>();
  EXPECT_EQ(idx, io::read_npy(dir + "indices.npy").to_vector<int64_t>()) << device.str();
  const double dec = relative_l2(model->decode(z.to(device)), golden_volume("decode.npy", dir));
  std::printf("%s, %s: relative L2 to PyTorch: encode %.2e, patch_encode %.2e, decode %.2e\n", dir.c_str(),
              device.str().c_str(), enc, patch, dec);
  EXPECT_LT(enc, 1e-4) << device.str();
  EXPECT_LT(patch, 1e-4) << device.str();
  EXPECT_LT(dec, 1e-4) << device.str();
}

TEST(Vqae, MatchesPyTorchOnTheReferencePath) { expect_parity(Device::cpu()); }
TEST(Vqae, FourTimesMatchesPyTorchOnTheReferencePath) { expect_parity(Device::cpu(), kDir4x); }

class VqaeCuda : public CudaPathTest {};
TEST_P(VqaeCuda, MatchesPyTorch) { expect_parity(device()); }
TEST_P(VqaeCuda, FourTimesMatchesPyTorch) { expect_parity(device(), kDir4x); }
CTSR_INSTANTIATE_CUDA_PATHS(VqaeCuda);

TEST(Vqae, PatchEncodeWithOnePatchIsEncode) {
  auto model = Vqae::load(kDir + "tiny.ckpt", kGroups, Device::cpu());
  Tensor x = random_tensor({1, 16, 16, 16, 1}, 5);
  EXPECT_TRUE(tensors_equal(model->patch_encode(x, 16), model->encode(x)));
  // Patches encoded in batches of 1, 4 or all at once give the same latent, up to the rounding of
  // GEMMs whose blocking depends on the batch (the reference conv calls BLAS).
  Tensor big = random_tensor({1, 16, 32, 48, 1}, 6);
  Tensor all = model->patch_encode(big, 16, 100);
  EXPECT_LT(relative_l2(model->patch_encode(big, 16, 1), all), 1e-6);
  EXPECT_LT(relative_l2(model->patch_encode(big, 16, 4), all), 1e-6);
}

TEST(Vqae, SlidingDecode) {
  auto model = Vqae::load(kDir + "tiny.ckpt", kGroups, Device::cpu());
  const Tensor z = golden_latent("encode.npy");  // d = 4
  const Tensor whole = model->decode(z);
  // One slab covering the latent is the same computation.
  EXPECT_TRUE(tensors_equal(model->decode_sliding(z, 4, 2), whole));
  EXPECT_TRUE(tensors_equal(model->decode_sliding(z, 9, 0), whole));
  // Smaller slabs normalise each slab's activations on their own (GroupNorm statistics over the
  // slab and its halo, as the original's decode_sliding does over whole patches), so they only
  // approximate the whole decode; a wider halo brings them closer. This random tiny model on a
  // 4-slice latent exaggerates the gap (measured: slab 1 with halo 0, 1, 2: 0.94, 0.64, 0.24).
  const double halo0 = relative_l2(model->decode_sliding(z, 1, 0), whole);
  const double halo1 = relative_l2(model->decode_sliding(z, 1, 1), whole);
  const double halo2 = relative_l2(model->decode_sliding(z, 1, 2), whole);
  std::printf("sliding decode vs whole, slab 1: halo 0 %.3f, halo 1 %.3f, halo 2 %.3f\n", halo0, halo1, halo2);
  EXPECT_EQ(relative_l2(model->decode_sliding(z, 2, 2), whole), 0.0);  // slab 2 + halo 2 spans the latent
  EXPECT_GT(halo0, halo1);
  EXPECT_GT(halo1, halo2);
  EXPECT_GT(halo2, 0.0);
}

TEST(Vqae, LatentNormalisationUsesTheCodebookExtremes) {
  auto model = Vqae::load(kDir + "tiny.ckpt", kGroups, Device::cpu());
  Tensor n = model->normalize_latent(model->codebook().reshape({1, 1, 8, 8, 8}));
  const std::vector<float> v = n.to_vector<float>();
  EXPECT_FLOAT_EQ(*std::min_element(v.begin(), v.end()), -1.0f);
  EXPECT_FLOAT_EQ(*std::max_element(v.begin(), v.end()), 1.0f);
  const Tensor z = golden_latent("encode.npy");
  EXPECT_LT(relative_l2(model->denormalize_latent(model->normalize_latent(z)), z), 1e-6);
}

TEST(Vqae, BadVolumesAndLatents) {
  auto model = Vqae::load(kDir + "tiny.ckpt", kGroups, Device::cpu());
  expect_error_mentions([&] { model->encode(random_tensor({1, 16, 12, 16, 1}, 1)); }, {"H = 12", "multiple of 8"});
  expect_error_mentions([&] { model->patch_encode(random_tensor({1, 16, 24, 16, 1}, 1), 16); },
                        {"H = 24", "multiple of 16"});
  expect_error_mentions([&] { model->patch_encode(random_tensor({1, 16, 16, 16, 1}, 1), 12); },
                        {"patch size 12", "multiple of 8"});
  expect_error_mentions([&] { model->decode(random_tensor({1, 2, 2, 2, 7}, 1)); },
                        {"latent has 7 channels", "expects 8"});
}

// A weights file with a tensor missing, and one with a tensor of the wrong shape.
TEST(Vqae, CheckpointsThatDoNotFit) {
  TempDir dir("vqae");
  auto source = io::open_tensor_source(kDir + "tiny.ckpt");
  std::vector<std::pair<std::string, Tensor>> all;
  for (const auto& name : source->names()) all.emplace_back(name, source->load(name));
  auto without = all;
  std::erase_if(without, [](const auto& kv) { return kv.first == "decoder.conv_first.weight" || kv.first == "decoder.conv_first.bias"; });
  io::write_safetensors(dir / "missing.safetensors", without);
  expect_error_mentions([&] { Vqae::load((dir / "missing.safetensors").string(), kGroups, Device::cpu()); },
                        {"missing.safetensors", "2 of the", "missing", "decoder.conv_first.weight"});
  auto reshaped = all;
  for (auto& [name, t] : reshaped)
    if (name == "decoder.mid_block.res1.conv1.weight") t = random_tensor({16, 16, 3, 3, 1}, 1);
  io::write_safetensors(dir / "shape.safetensors", reshaped);
  expect_error_mentions([&] { Vqae::load((dir / "shape.safetensors").string(), kGroups, Device::cpu()); },
                        {"shape.safetensors", "decoder.mid_block.res1.conv1.weight", "[16, 16, 3, 3, 1]",
                         "expected [16, 16, 3, 3, 3]"});
}

}  // namespace
}  // namespace ctsr::test
