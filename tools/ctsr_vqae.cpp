// ctsr_vqae: the frozen PatchVolume VQ-AE from its PyTorch checkpoint.
//   info CKPT                     the architecture found, the parameter count, the tensors ignored
//   convert CKPT OUT.safetensors  the tensors the model uses, float32, PyTorch names and layouts
//   init --out W --seed S         a seeded random model in that same format (a stand-in for the
//                                 trained model until one ships)
//   encode / decode               one volume <-> one latent
//   cache                         every LD/HD pair of a pairs.csv into a latent cache
// Settings the checkpoint lacks come from configs/vqae_8x.yaml (--config), flags override them.
// num_groups: our safetensors files record it; an explicit --num-groups (or a --config value)
// overrides the record with a warning, and the settings' value serves files without one.
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "kernels/random.h"
#include "model/vqae.h"
#include "runtime/error.h"
#include "runtime/philox.h"
#include "runtime/formats/torch_checkpoint.h"
#include "runtime/formats/volume.h"
#include "tools/common/cli.h"
#include "train/data/latent_cache.h"
#include "train/data/latent_io.h"
#include "model/vqae_codec_config.h"
#include "model/vqae_weights.h"

using namespace ctsr;

namespace {

struct Common {
  std::string config;
  std::optional<int64_t> num_groups;
  std::string device = "auto";

  void add_to(CLI::App* app, bool with_device = true) {
    app->add_option("--config", config, "settings file (default: configs/vqae_8x.yaml when present)");
    app->add_option("--num-groups", num_groups,
                    "GroupNorm groups of the model (default: the file's record, else the settings' 24)");
    if (with_device) app->add_option("--device", device, "auto | cpu | cuda | cuda:N | cuda_on_cpu");
  }
  VqaeCodecConfig settings() const {
    const std::filesystem::path path = config.empty() ? default_vqae_codec_config_path() : std::filesystem::path(config);
    VqaeCodecConfig s = path.empty() ? VqaeCodecConfig{} : read_vqae_codec_config(path);
    if (num_groups) s.num_groups = *num_groups;
    return s;
  }
  Device resolve_device() const { return tools::resolve_device(device); }
  // num_groups chosen by the user: --num-groups, else model.num_groups of a --config file (the
  // settings file found by default only supplies the fallback).
  std::optional<int64_t> explicit_num_groups(const VqaeCodecConfig& s) const {
    if (num_groups) return num_groups;
    if (!config.empty() && s.num_groups_set) return s.num_groups;
    return std::nullopt;
  }
  // The architecture of the weights in `source`, num_groups explicit, else the file's record,
  // else the settings'. An override of the record is reported once the value is known to fit
  // (a value that does not fit is an error, on its own line).
  VqaeConfig config_for(const io::TensorSource& source, const VqaeCodecConfig& s) const {
    std::string warning;
    const VqaeConfig config =
        vqae_config_from(source, choose_num_groups(source, explicit_num_groups(s), s.num_groups, &warning));
    if (!warning.empty()) std::cerr << "ctsr_vqae: warning: " << warning << "\n";
    return config;
  }
};

std::unique_ptr<Vqae> load_model(const std::string& weights, const Common& common, const VqaeCodecConfig& s) {
  auto source = io::open_tensor_source(weights);
  return Vqae::load(*source, common.config_for(*source, s).num_groups, common.resolve_device());
}

// Writes our weight file (model/vqae_weights.h) and says what it holds.
void write_weights(const std::string& out, Vqae& model, const VqaeWeightsOptions& options) {
  const size_t count = write_vqae_weights(out, model, options);
  std::cout << "wrote " << out << ": " << count << " tensors, " << model.parameter_count() << " parameters ("
            << model.config().str() << ")\n";
}

// Keys of the file the model does not use, grouped by their first two name parts.
std::map<std::string, int64_t> ignored_groups(const io::TensorSource& source, Vqae& model) {
  std::set<std::string> used;
  for (const auto& k : model.checkpoint_keys()) used.insert(k);
  std::map<std::string, int64_t> groups;
  for (const auto& name : source.names()) {
    if (used.count(name)) continue;
    const size_t dot = name.find('.');
    const size_t second = dot == std::string::npos ? std::string::npos : name.find('.', dot + 1);
    groups[second == std::string::npos ? name : name.substr(0, second) + ".*"]++;
  }
  return groups;
}

void command_info(const std::string& ckpt, const Common& common) {
  const auto s = common.settings();
  auto source = io::open_tensor_source(ckpt);
  const VqaeConfig config = common.config_for(*source, s);
  Vqae model(config, LayerOptions{});
  model.load_from(*source);
  std::cout << "file:       " << ckpt << "\n";
  std::cout << "model:      PatchVolume VQ-AE, " << config.str() << "\n";
  std::cout << "parameters: " << model.parameter_count() << " (plus a codebook of " << config.n_codes << " x "
            << config.embedding_dim << ")\n";
  std::cout << "codebook:   elements in [" << model.code_min() << ", " << model.code_max()
            << "] (the latent normalisation bounds)\n";
  const auto groups = ignored_groups(*source, model);
  int64_t ignored = 0;
  for (const auto& [g, n] : groups) ignored += n;
  std::cout << "ignored:    " << ignored << " tensors" << (groups.empty() ? "" : ":") << "\n";
  for (const auto& [g, n] : groups) std::cout << "  " << g << " (" << n << ")\n";
  if (auto* torch = dynamic_cast<const io::TorchCheckpoint*>(source.get())) {
    if (!torch->skipped_entries().empty()) {
      std::cout << "skipped:    ";
      for (size_t i = 0; i < torch->skipped_entries().size(); ++i)
        std::cout << (i ? ", " : "") << torch->skipped_entries()[i];
      std::cout << " (not the state_dict)\n";
    }
  }
}

void command_convert(const std::string& ckpt, const std::string& out, const Common& common) {
  const auto s = common.settings();
  auto source = io::open_tensor_source(ckpt);
  const VqaeConfig config = common.config_for(*source, s);
  Vqae model(config, LayerOptions{});
  model.load_from(*source);  // validates every tensor before anything is written
  // Each tensor keeps the rank it has in the checkpoint.
  VqaeWeightsOptions options;
  options.pytorch_rank = [&](const std::string& key, const Tensor&) { return int(source->record(key).shape.size()); };
  options.metadata = {{"source", std::filesystem::path(ckpt).filename().string()}};
  write_weights(out, model, options);
}

struct InitOptions {
  std::string out;
  uint64_t seed = 0;
  int64_t n_hiddens = 8, num_groups = 4, n_codes = 512;
};

// The Philox purpose of the random codebook (runtime/philox.h); the layers draw from streams
// below 2^48 (model/layers.h), so this one is apart from all of them.
constexpr uint32_t kCodebookPurpose = 0x4342;  // "CB"

// A seeded, randomly initialised VQ-AE of the released model's architecture at a chosen width:
// PyTorch's default initialisation for every layer (model/layers.h), GroupNorm 1 and 0, and a
// codebook of N(0, 1) draws (as nn.Embedding and the original's randn).
void command_init(const InitOptions& o) {
  CTSR_CHECK(o.n_hiddens > 0, "init: --n-hiddens is ", o.n_hiddens, ", expected a positive width");
  CTSR_CHECK(o.n_codes > 0, "init: --n-codes is ", o.n_codes, ", expected a positive number of codes");
  CTSR_CHECK(o.num_groups > 0, "init: --num-groups is ", o.num_groups, ", expected a positive number of groups");
  VqaeConfig config;
  config.n_hiddens = o.n_hiddens;
  config.n_codes = o.n_codes;
  config.num_groups = o.num_groups;
  const std::string problem = config.num_groups_problem();
  CTSR_CHECK(problem.empty(), "init: ", problem, "; choose --num-groups dividing --n-hiddens ", o.n_hiddens,
             " (then it divides every width)");
  LayerOptions layers;
  layers.seed = o.seed;
  Vqae model(config, layers);
  Tensor codebook = Tensor::empty({config.n_codes, config.embedding_dim}, DType::float32, Device::cpu());
  fill_normal(codebook, o.seed, philox::stream_offset(kCodebookPurpose, 0));
  model.set_codebook(codebook);
  VqaeWeightsOptions options;
  options.metadata = {{"source", "ctsr_vqae init (random initialisation, untrained)"}, {"seed", std::to_string(o.seed)}};
  write_weights(o.out, model, options);
}

void command_encode(const std::string& weights, const std::string& input, const std::string& output,
                    std::optional<int64_t> patch, bool normalize, const std::string& window_text,
                    const std::string& series_uid, const Common& common) {
  auto s = common.settings();
  if (patch) s.patch_size = *patch;
  if (!window_text.empty()) s.window = io::parse_hu_window(window_text);
  io::Volume volume = io::read_volume_unit(input, s.window, io::VolumeReadOptions{series_uid});
  auto model = load_model(weights, common, s);
  const Tensor x = volume.data.reshape({1, volume.data.dim(0), volume.data.dim(1), volume.data.dim(2), 1});
  Tensor z;
  try {
    z = s.patch_size > 0 ? model->patch_encode(x, s.patch_size) : model->encode(x);
  } catch (const Error& e) {
    CTSR_FAIL(input, ": ", e.what());
  }
  if (normalize) z = model->normalize_latent(z);
  const auto& g = volume.geometry;
  std::ostringstream spacing, affine;
  spacing.precision(17);
  affine.precision(17);
  for (int i = 0; i < 3; ++i) spacing << (i ? "," : "") << g.spacing_xyz[i];
  for (int i = 0; i < 16; ++i) affine << (i ? "," : "") << g.affine[i / 4][i % 4];
  train::write_latent(output, z,
                      {{"source", input},
                       {"spacing_xyz", spacing.str()},
                       {"affine", affine.str()},
                       {"normalized", normalize ? "true" : "false"},
                       {"latent_min", std::to_string(model->code_min())},
                       {"latent_max", std::to_string(model->code_max())},
                       {"patch_size", std::to_string(s.patch_size)}});
  std::cerr << "encoded " << input << " " << volume.data.shape().str() << " -> " << output << " ["
            << z.dim(4) << ", " << z.dim(1) << ", " << z.dim(2) << ", " << z.dim(3) << "]\n";
}

void command_decode(const std::string& weights, const std::string& input, const std::string& output, bool denormalize,
                    const std::string& key, std::optional<int64_t> slab, const std::string& window_text,
                    const Common& common) {
  auto s = common.settings();
  if (slab) s.decode_slab = *slab;
  if (!window_text.empty()) s.window = io::parse_hu_window(window_text);
  tools::check_volume_output(output, "--output");  // an unsupported output name fails before any work
  train::LatentFile lat = train::read_latent(input, key);
  auto model = load_model(weights, common, s);
  const int64_t channels = lat.latent.dim(4);
  CTSR_CHECK(channels == model->config().embedding_dim, input, ": latent has ", channels,
             " channels, the checkpoint expects ", model->config().embedding_dim);
  Tensor z = denormalize ? model->denormalize_latent(lat.latent) : lat.latent;
  Tensor y = s.decode_slab > 0 ? model->decode_sliding(z, s.decode_slab) : model->decode(z);
  io::Volume volume;
  volume.data = y.to(Device::cpu()).reshape({y.dim(1), y.dim(2), y.dim(3)});
  if (lat.metadata.count("spacing_xyz")) {
    const auto v = train::parse_number_list(lat.metadata["spacing_xyz"], input + " spacing_xyz");
    if (v.size() == 3) volume.geometry.spacing_xyz = {v[0], v[1], v[2]};
  }
  if (lat.metadata.count("affine")) {
    const auto v = train::parse_number_list(lat.metadata["affine"], input + " affine");
    if (v.size() == 16)
      for (int i = 0; i < 16; ++i) volume.geometry.affine[i / 4][i % 4] = v[size_t(i)];
  }
  // NIfTI and DICOM hold HU; .npy keeps the [-1, 1] scale (the conventions of DESIGN.md).
  if (io::volume_format(output) != io::VolumeFormat::npy) volume.data = io::unit_to_hu(volume.data, s.window);
  io::write_volume(output, volume);
  std::cerr << "decoded " << input << " -> " << output << " " << volume.data.shape().str() << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ctsr_vqae: the frozen PatchVolume VQ-AE (3D-MedDiffusion) imported from its PyTorch checkpoint"};
  app.name("ctsr_vqae");
  app.require_subcommand(1);
  Common common;

  std::string ckpt, out, weights, input, output, window, pairs, key = "latent", series_uid;
  std::optional<int64_t> patch, slab;
  bool normalize = false, denormalize = false;
  double val_fraction = 0.1;
  uint64_t split_seed = 0;

  auto* info = app.add_subcommand("info", "print the architecture found in a checkpoint");
  info->add_option("CKPT", ckpt, "a .ckpt (torch.save) or our .safetensors")->required();
  common.add_to(info, false);

  auto* convert = app.add_subcommand("convert", "write the weights the model uses as safetensors");
  convert->add_option("CKPT", ckpt)->required();
  convert->add_option("OUT", out, "output .safetensors")->required();
  common.add_to(convert, false);

  InitOptions init_options;
  auto* init = app.add_subcommand(
      "init",
      "write a seeded, randomly initialised VQ-AE (untrained: a stand-in for the trained model until one ships) "
      "in convert's format");
  init->add_option("--out", init_options.out, "output .safetensors (replaced atomically)")->required();
  init->add_option("--seed", init_options.seed, "initialisation seed (the same seed gives the same file)")->required();
  init->add_option("--n-hiddens", init_options.n_hiddens, "width of the first level (levels: n, 2n, 4n, 4n)")
      ->capture_default_str();
  init->add_option("--num-groups", init_options.num_groups, "GroupNorm groups; must divide --n-hiddens")
      ->capture_default_str();
  init->add_option("--n-codes", init_options.n_codes, "codebook size")->capture_default_str();

  auto* encode = app.add_subcommand(
      "encode", "encode a volume (.nii, .nii.gz, a DICOM series folder or .dcm file; .npy on [-1, 1]) to a latent");
  encode->add_option("--weights", weights, ".ckpt or .safetensors")->required();
  encode->add_option("--input", input, "volume")->required();
  encode->add_option("--series-uid", series_uid, "DICOM: the SeriesInstanceUID to read from a folder holding several series");
  encode->add_option("--output", output, "latent .npy ([8, d, h, w]) or .safetensors")->required();
  encode->add_option("--patch-size", patch, "encode p^3 patches on their own (default 64; 0: whole volume)");
  encode->add_flag("--normalize", normalize, "map the latent to [-1, 1] by the codebook's extremes");
  encode->add_option("--window", window, "HU window for NIfTI and DICOM input, e.g. -200,200");
  common.add_to(encode);

  auto* decode = app.add_subcommand("decode", "decode a latent to a volume");
  decode->add_option("--weights", weights)->required();
  decode->add_option("--input", input, "latent .npy or .safetensors")->required();
  decode->add_option("--output", output, "volume .nii, .nii.gz (HU), a DICOM series folder (a name without an "
                                         "extension or ending in /; HU) or .npy ([-1, 1])")->required();
  decode->add_flag("--denormalize", denormalize, "the latent was normalised: undo it first");
  decode->add_option("--key", key, "tensor to decode in a .safetensors latent (a cache file: hd_latent or ld_latent)");
  decode->add_option("--slab", slab, "decode in slabs of this many latent slices (bounded memory; 0: all at once)");
  decode->add_option("--window", window, "HU window for NIfTI and DICOM output, e.g. -200,200");
  common.add_to(decode);

  auto* cache = app.add_subcommand("cache", "encode every LD/HD pair of a CSV into a latent cache");
  cache->add_option("--weights", weights)->required();
  cache->add_option("--pairs", pairs, "CSV with columns ld,hd[,id][,split]; paths name volume files or DICOM "
                                      "series folders")->required();
  cache->add_option("--out", out, "cache directory (train/ and val/ are made in it)")->required();
  cache->add_option("--val-fraction", val_fraction, "share of pairs without a split column value that go to val");
  cache->add_option("--split-seed", split_seed, "seed of the train/val assignment");
  cache->add_option("--patch-size", patch, "as for encode");
  cache->add_option("--window", window, "HU window for NIfTI and DICOM input");
  common.add_to(cache);

  return tools::run_program(app, argc, argv, [&] {
    if (*info) command_info(ckpt, common);
    if (*convert) command_convert(ckpt, out, common);
    if (*init) command_init(init_options);
    if (*encode) command_encode(weights, input, output, patch, normalize, window, series_uid, common);
    if (*decode) command_decode(weights, input, output, denormalize, key, slab, window, common);
    if (*cache) {
      auto s = common.settings();
      if (patch) s.patch_size = *patch;
      if (!window.empty()) s.window = io::parse_hu_window(window);
      std::vector<train::PairRow> rows = train::read_pairs_csv(pairs);
      train::assign_splits(rows, val_fraction, split_seed);
      auto model = load_model(weights, common, s);
      train::CacheOptions options;
      options.patch_size = s.patch_size;
      options.window = s.window;
      options.weights = std::filesystem::path(weights).filename().string();
      options.weights_digest = train::file_digest(weights);
      const auto report = train::build_latent_cache(*model, rows, out, options);
      std::cout << "cache " << out << ": " << report.encoded << " pairs encoded, " << report.skipped
                << " already there; " << report.train << " train, " << report.val << " val\n";
    }
  });
}
