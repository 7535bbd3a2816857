// ctsr_phantom: synthetic low-/high-quality CT pairs for users without data, the demo and the tests
// (tools/phantom/phantom.h says what the phantoms hold, tools/phantom/tomograph.h how they are degraded).
//
//   ctsr_phantom --out DIR [--count 1] [--size 64 | DxHxW] [--seed 0] [--degrade dose|resolution]
//                [--i0 1e4] [--filter hann|ram-lak] [--slab 4] [--spacing 0.7,0.7,2.5] [--format nifti|dicom]
//
// Writes, for i = 0 .. count-1 and id = phantom_<i, 4 digits>:
//   DIR/hd/<id>.nii.gz   the clean phantom, HU (the target)
//   DIR/ld/<id>.nii.gz   its degraded version, HU (the input): a low-dose scan at --i0 photons per
//                        ray, or thick slices of --slab slices resampled back to the same grid
//   DIR/pairs.csv        "id,ld,hd" and one line per pair, paths relative to DIR
// Compressed NIfTI because the clean phantoms (piecewise constant) shrink about 25-fold (the noisy
// low-dose volumes hardly); both volumes carry --spacing (mm along x, y, z; x = y for the dose
// simulation, whose pixels are square). Pair i depends only on (--seed, i) and the options, not on
// --count or the thread count. Every file is written atomically and pairs.csv last, so a
// pairs.csv always lists complete pairs; every argument is checked before anything is written.
// --format dicom writes DIR/hd/<id>/ and DIR/ld/<id>/ instead, each a CT series folder (one file
// per slice, written atomically as a whole), and pairs.csv names the folders. DICOM stores whole
// HU in int16, so its values are the NIfTI ones rounded (within 0.5 HU; the phantoms' range fits);
// the voxels are the same per (--seed, i), the UIDs new on every run.
#include <CLI/CLI.hpp>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "runtime/error.h"
#include "runtime/formats/atomic_file.h"
#include "runtime/formats/volume.h"
#include "tools/common/cli.h"
#include "train/run_support.h"
#include "tools/phantom/phantom.h"
#include "tools/phantom/tomograph.h"

namespace {

// "0.7,0.7,2.5": three finite positive millimetre values.
std::array<double, 3> parse_spacing(const std::string& text) {
  std::array<double, 3> spacing{};
  std::stringstream in(text);
  std::string part;
  int n = 0;
  bool ok = true;
  while (ok && std::getline(in, part, ',')) {
    size_t used = 0;
    double v = 0.0;
    try {
      v = std::stod(part, &used);
    } catch (const std::exception&) {
      ok = false;
    }
    ok = ok && used == part.size() && n < 3 && std::isfinite(v) && v > 0.0;
    if (ok) spacing[size_t(n++)] = v;
  }
  CTSR_CHECK(ok && n == 3 && text.back() != ',', "--spacing '", text,
             "': expected three positive millimetre values x,y,z (e.g. 0.7,0.7,2.5)");
  return spacing;
}

std::string pair_id(int64_t index) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "phantom_%04lld", static_cast<long long>(index));
  return buffer;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Synthetic CT phantoms as low-/high-quality NIfTI (or DICOM) pairs with DIR/pairs.csv", "ctsr_phantom"};
  std::string out_text, size_text = "64", degrade = "dose", filter_text = "hann", spacing_text = "0.7,0.7,2.5";
  std::string format = "nifti";
  int64_t count = 1, slab = 4;
  uint64_t seed = 0;
  double i0 = 1e4;
  app.add_option("--out", out_text, "output directory (created if missing)")->required();
  app.add_option("--count", count, "number of pairs")->capture_default_str();
  app.add_option("--size", size_text, "volume size: N for N^3, or DxHxW; every side in [16, 1024]")->capture_default_str();
  app.add_option("--seed", seed, "random seed: the same seed gives the same files")->capture_default_str();
  app.add_option("--degrade", degrade, "dose (noisy low-dose scan) or resolution (thick slices)")->capture_default_str();
  app.add_option("--i0", i0, "dose: incident photons per ray; noise grows as 1/sqrt(i0)")->capture_default_str();
  app.add_option("--filter", filter_text, "dose: reconstruction filter, hann or ram-lak (sharper, noisier)")->capture_default_str();
  app.add_option("--slab", slab, "resolution: slices averaged into one thick slice")->capture_default_str();
  app.add_option("--spacing", spacing_text, "voxel size in mm, x,y,z; x is the pixel size of the dose simulation")
      ->capture_default_str();
  app.add_option("--format", format, "nifti (hd/<id>.nii.gz, float32 HU) or dicom (hd/<id>/ and ld/<id>/, CT series "
                                     "folders: HU rounded to int16, within 0.5 HU of the NIfTI values)")
      ->capture_default_str();

  return ctsr::tools::run_program(app, argc, argv, [&] {
    using namespace ctsr;
    const auto start = std::chrono::steady_clock::now();
    // Everything is checked before the first directory is made.
    const tools::PhantomSize size = tools::parse_phantom_size(size_text);
    CTSR_CHECK(count >= 1 && count <= 1000000, "--count ", count, ": expected a number of pairs in [1, 1000000]");
    CTSR_CHECK(degrade == "dose" || degrade == "resolution", "--degrade '", degrade,
               "' is not known: expected dose or resolution");
    const bool dose = degrade == "dose";
    CTSR_CHECK(format == "nifti" || format == "dicom", "--format '", format,
               "' is not known: expected nifti or dicom");
    const bool dicom = format == "dicom";
    const std::array<double, 3> spacing = parse_spacing(spacing_text);
    tools::LowDoseOptions dose_options;
    if (dose) {
      CTSR_CHECK(std::isfinite(i0) && i0 >= 1.0, "--i0 ", i0, ": expected a number of photons per ray >= 1");
      // The projector works in square pixels of side x.
      CTSR_CHECK(spacing[0] == spacing[1], "--spacing '", spacing_text,
                 "': the dose simulation needs square pixels (x = y)");
      dose_options.i0 = i0;
      dose_options.pixel_mm = spacing[0];
      dose_options.filter = tools::parse_ramp_filter(filter_text);
    } else {
      CTSR_CHECK(slab >= 2 && slab <= size.depth, "--slab ", slab, ": expected 2 .. ", size.depth,
                 " (the depth of --size ", size_text, ")");
    }
    const std::filesystem::path out(out_text);
    std::error_code ec;
    CTSR_CHECK(!std::filesystem::exists(out, ec) || std::filesystem::is_directory(out, ec), "--out '", out_text,
               "' exists and is not a directory");

    std::filesystem::create_directories(out / "hd");
    std::filesystem::create_directories(out / "ld");
    io::Volume volume;
    volume.geometry.spacing_xyz = spacing;
    for (int a = 0; a < 3; ++a) volume.geometry.affine[size_t(a)][size_t(a)] = spacing[size_t(a)];
    std::string csv = "id,ld,hd\n";
    const bool progress = count > 1 && ::isatty(STDERR_FILENO);  // a rewritten line is for terminals only
    for (int64_t i = 0; i < count; ++i) {
      tools::PhantomOptions options;
      options.size = size;
      options.seed = seed;
      options.index = uint64_t(i);
      const Tensor hd = tools::make_phantom_hu(options);
      const Tensor ld = dose ? tools::degrade_low_dose(hd, dose_options, seed, uint64_t(i))
                             : tools::degrade_low_resolution(hd, slab);
      // A DICOM series is a folder; its name ends in a separator so that it is written as one.
      const std::string id = pair_id(i), name = dicom ? id + "/" : id + ".nii.gz";
      volume.data = hd;
      io::write_volume(out / "hd" / name, volume);
      volume.data = ld;
      io::write_volume(out / "ld" / name, volume);
      csv += id + ",ld/" + name + ",hd/" + name + "\n";
      if (progress) std::cerr << "\rctsr_phantom: " << (i + 1) << "/" << count << " pairs" << std::flush;
    }
    if (progress) std::cerr << "\n";
    io::write_file_atomically(out / "pairs.csv", [&](std::ostream& s) { s << csv; });

    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::ostringstream what;
    if (dose)
      what << "low dose, I0 " << i0 << ", " << filter_text;
    else
      what << "thick slices of " << slab;
    std::cout << "ctsr_phantom: wrote " << count << (count == 1 ? " pair" : " pairs") << " of " << size.depth << "x"
              << size.height << "x" << size.width << " (" << what.str() << ") to " << (out / "pairs.csv").string()
              << ", " << (out / "hd").string() << "/, " << (out / "ld").string() << "/ in "
              << train::format_seconds(seconds) << std::endl;
  });
}
