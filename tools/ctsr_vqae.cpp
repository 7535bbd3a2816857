// ctsr_vqae: the frozen PatchVolume VQ-AE from its PyTorch checkpoint.
//   info CKPT                     the architecture found, the parameter count, the tensors ignored
//   convert CKPT OUT.safetensors  the tensors the model uses, float32, PyTorch names and layouts
//   encode / decode               one volume <-> one latent
//   cache                         every LD/HD pair of a pairs.csv into a latent cache
// Settings the checkpoint lacks come from configs/vqae_8x.yaml (--config), flags override them.
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "model/pytorch_import.h"
#include "model/vqae.h"
#include "runtime/error.h"
#include "runtime/formats/safetensors.h"
#include "runtime/formats/torch_checkpoint.h"
#include "runtime/formats/volume.h"
#include "tools/lib/cli.h"
#include "tools/lib/latent_cache.h"
#include "tools/lib/latent_io.h"
#include "tools/lib/vqae_settings.h"

using namespace ctsr;

namespace {

struct Common {
  std::string config;
  std::optional<int64_t> num_groups;
  std::string device = "auto";

  void add_to(CLI::App* app, bool with_device = true) {
    app->add_option("--config", config, "settings file (default: configs/vqae_8x.yaml when present)");
    app->add_option("--num-groups", num_groups, "GroupNorm groups of the checkpoint's model (default 24)");
    if (with_device) app->add_option("--device", device, "auto | cpu | cuda | cuda:N | cuda_on_cpu");
  }
  tools::VqaeSettings settings() const {
    const std::filesystem::path path = config.empty() ? tools::default_vqae_settings_path() : std::filesystem::path(config);
    tools::VqaeSettings s = path.empty() ? tools::VqaeSettings{} : tools::read_vqae_settings(path);
    if (num_groups) s.num_groups = *num_groups;
    return s;
  }
  Device resolve_device() const { return tools::resolve_device(device); }
};

std::unique_ptr<Vqae> load_model(const std::string& weights, const Common& common, const tools::VqaeSettings& s) {
  return Vqae::load(weights, s.num_groups, common.resolve_device());
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
  const VqaeConfig config = vqae_config_from(*source, s.num_groups);
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
  const VqaeConfig config = vqae_config_from(*source, s.num_groups);
  Vqae model(config, LayerOptions{});
  model.load_from(*source);  // validates every tensor before anything is written
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (Parameter* p : model.parameters()) {
    const std::string key = vqae_checkpoint_key(p->name);
    tensors.emplace_back(key, to_pytorch_layout(p->value, static_cast<int>(source->record(key).shape.size())));
  }
  tensors.emplace_back("codebook.embeddings", model.codebook().to(Device::cpu()));
  io::write_safetensors(out, tensors,
                        {{"format", "ctsr-vqae/1"},
                         {"source", std::filesystem::path(ckpt).filename().string()},
                         {"architecture", config.str()},
                         {"layout", "PyTorch (conv [out, in, k, k, k]; conv_trans [in, out, k, k, k])"}});
  std::cout << "wrote " << out << ": " << tensors.size() << " tensors, " << model.parameter_count()
            << " parameters (" << config.str() << ")\n";
}

void command_encode(const std::string& weights, const std::string& input, const std::string& output,
                    std::optional<int64_t> patch, bool normalize, const std::string& window_text, const Common& common) {
  auto s = common.settings();
  if (patch) s.patch_size = *patch;
  if (!window_text.empty()) s.window = io::parse_hu_window(window_text);
  io::Volume volume = io::read_volume_unit(input, s.window);
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
  tools::write_latent(output, z,
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

std::vector<double> parse_numbers(const std::string& text) {
  std::vector<double> v;
  std::istringstream s(text);
  std::string cell;
  while (std::getline(s, cell, ',')) v.push_back(std::stod(cell));
  return v;
}

void command_decode(const std::string& weights, const std::string& input, const std::string& output, bool denormalize,
                    const std::string& key, std::optional<int64_t> slab, const std::string& window_text,
                    const Common& common) {
  auto s = common.settings();
  if (slab) s.decode_slab = *slab;
  if (!window_text.empty()) s.window = io::parse_hu_window(window_text);
  io::volume_format(output);  // an unsupported output name fails before any work
  tools::LatentFile lat = tools::read_latent(input, key);
  auto model = load_model(weights, common, s);
  const int64_t channels = lat.latent.dim(4);
  CTSR_CHECK(channels == model->config().embedding_dim, input, ": latent has ", channels,
             " channels, the checkpoint expects ", model->config().embedding_dim);
  Tensor z = denormalize ? model->denormalize_latent(lat.latent) : lat.latent;
  Tensor y = s.decode_slab > 0 ? model->decode_sliding(z, s.decode_slab) : model->decode(z);
  io::Volume volume;
  volume.data = y.to(Device::cpu()).reshape({y.dim(1), y.dim(2), y.dim(3)});
  if (lat.metadata.count("spacing_xyz")) {
    const auto v = parse_numbers(lat.metadata["spacing_xyz"]);
    if (v.size() == 3) volume.geometry.spacing_xyz = {v[0], v[1], v[2]};
  }
  if (lat.metadata.count("affine")) {
    const auto v = parse_numbers(lat.metadata["affine"]);
    if (v.size() == 16)
      for (int i = 0; i < 16; ++i) volume.geometry.affine[i / 4][i % 4] = v[size_t(i)];
  }
  // NIfTI holds HU; .npy keeps the [-1, 1] scale (the conventions of DESIGN.md).
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

  std::string ckpt, out, weights, input, output, window, pairs, key = "latent";
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

  auto* encode = app.add_subcommand("encode", "encode a volume (.nii, .nii.gz, .npy on [-1, 1]) to a latent");
  encode->add_option("--weights", weights, ".ckpt or .safetensors")->required();
  encode->add_option("--input", input, "volume")->required();
  encode->add_option("--output", output, "latent .npy ([8, d, h, w]) or .safetensors")->required();
  encode->add_option("--patch-size", patch, "encode p^3 patches on their own (default 64; 0: whole volume)");
  encode->add_flag("--normalize", normalize, "map the latent to [-1, 1] by the codebook's extremes");
  encode->add_option("--window", window, "HU window for NIfTI input, e.g. -200,200");
  common.add_to(encode);

  auto* decode = app.add_subcommand("decode", "decode a latent to a volume");
  decode->add_option("--weights", weights)->required();
  decode->add_option("--input", input, "latent .npy or .safetensors")->required();
  decode->add_option("--output", output, "volume .nii, .nii.gz (HU) or .npy ([-1, 1])")->required();
  decode->add_flag("--denormalize", denormalize, "the latent was normalised: undo it first");
  decode->add_option("--key", key, "tensor to decode in a .safetensors latent (a cache file: hd_latent or ld_latent)");
  decode->add_option("--slab", slab, "decode in slabs of this many latent slices (bounded memory; 0: all at once)");
  decode->add_option("--window", window, "HU window for NIfTI output, e.g. -200,200");
  common.add_to(decode);

  auto* cache = app.add_subcommand("cache", "encode every LD/HD pair of a CSV into a latent cache");
  cache->add_option("--weights", weights)->required();
  cache->add_option("--pairs", pairs, "CSV with columns ld,hd[,id][,split]")->required();
  cache->add_option("--out", out, "cache directory (train/ and val/ are made in it)")->required();
  cache->add_option("--val-fraction", val_fraction, "share of pairs without a split column value that go to val");
  cache->add_option("--split-seed", split_seed, "seed of the train/val assignment");
  cache->add_option("--patch-size", patch, "as for encode");
  cache->add_option("--window", window, "HU window for NIfTI input");
  common.add_to(cache);

  return tools::run_program(app, argc, argv, [&] {
    if (*info) command_info(ckpt, common);
    if (*convert) command_convert(ckpt, out, common);
    if (*encode) command_encode(weights, input, output, patch, normalize, window, common);
    if (*decode) command_decode(weights, input, output, denormalize, key, slab, window, common);
    if (*cache) {
      auto s = common.settings();
      if (patch) s.patch_size = *patch;
      if (!window.empty()) s.window = io::parse_hu_window(window);
      std::vector<tools::PairRow> rows = tools::read_pairs_csv(pairs);
      tools::assign_splits(rows, val_fraction, split_seed);
      auto model = load_model(weights, common, s);
      tools::CacheOptions options;
      options.patch_size = s.patch_size;
      options.window = s.window;
      options.weights = std::filesystem::path(weights).filename().string();
      const auto report = tools::build_latent_cache(*model, rows, out, options);
      std::cout << "cache " << out << ": " << report.encoded << " pairs encoded, " << report.skipped
                << " already there; " << report.train << " train, " << report.val << " val\n";
    }
  });
}
