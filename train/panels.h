// Validation pictures: LD, SR and HD volumes side by side with the error |SR - HD|.
//
// Inputs are float32 cpu tensors [D, H, W] on the [-1, 1] intensity scale (-1, the lower edge of
// the HU window, is black; +1 is white), all of one shape. Views are shown in array order, no
// flips: an axial view (fixed d) has h downwards and w rightwards; coronal (fixed h) and sagittal
// (fixed w) have d downwards. NaN voxels are drawn magenta (kPanelNan).
//
// Layout, with s = scale and every length in pixels:
//   * A pixel covers min(spacing) / s mm in both directions, so an axis of n voxels with spacing
//     sp becomes a tile side of max(1, round(n * s * sp / min(spacing))) pixels, sampled nearest
//     neighbour at pixel centres: voxel = floor((p + 0.5) * n / side).
//   * gap g = 2s around and between everything; text is 7s high, a string of k characters is
//     (6k - 1)s wide (5x7 glyphs on a 6-pixel advance, each font pixel an s x s block).
//   * Left to right: g, row labels (as wide as the widest), g, then the columns (LD SR HD
//     |SR-HD|, or those given) of equal width C = max(widest tile, widest title) separated by g,
//     then g, the colour bar (4s wide), g, tick labels (as wide as the widest), g.
//     Tiles are centred in their column: x = column_x + (C - tile_width) / 2.
//   * Top to bottom: g, the caption (7s) and g when there is one, the titles (7s), g, then the
//     rows, each as high as max(its tallest tile, 7s) and separated by g, then g. If the rows add
//     up to less than 24s, the last row is stretched so that the colour bar can hold its labels.
//     Tiles sit at the top of their row.
//   * The colour bar spans the rows' height; bar row r of R (top = 0) shows
//     error_colour(1 - (r + 0.5) / R). Tick labels: error_max flush with the top, "0" flush with
//     the bottom, and error_max / 2 centred when the bar is at least 40s high; the label of value
//     v has its top at round((1 - v / error_max) * (R - 7s)) below the bar's top.
//   * The caption starts at (g, g); the picture is widened to g + its width + g if it is wider.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "runtime/communicator.h"
#include "runtime/formats/volume.h"
#include "runtime/tensor.h"
#include "train/png.h"

namespace ctsr::train {

struct PanelOptions {
  std::array<double, 3> spacing{1, 1, 1};  // voxel size {sd, sh, sw} in mm
  double error_max = 0.5;                  // |SR - HD| shown at full colour (the [-1, 1] scale); above saturates
  int slices = 4;                          // rows of render_slices_panel
  int scale = 2;                           // pixels per voxel along the finest axis, and text size
  // The columns drawn, of LD, SR, HD and |SR - HD| (in that order; at least one), and their
  // titles. The layout above counts the columns drawn.
  std::array<bool, 4> columns{true, true, true, true};
  std::array<std::string, 4> titles{"LD", "SR", "HD", "|SR-HD|"};
  std::string caption;  // a line above the titles (none when empty), in the characters of draw_text
};

// A column of the many-column slices panel: its title, and the volume drawn in grey, or with the
// error colour map when `error` (a volume of |X - reference| on the [-1, 1] scale's units).
struct PanelColumn {
  std::string title;
  Tensor volume;  // [D, H, W], float32, cpu; every column the same shape
  bool error = false;
};

// `base` set up for an autoencoder's reconstruction: call a renderer with ld = hd = the input and
// sr = the reconstruction; the columns are INPUT, RECON and |RECON-INPUT| (no second input).
PanelOptions reconstruction_panel_options(PanelOptions base = {});

// Rows: n = min(slices, D) axial slices, evenly spread and never repeated: d = (i + 1) * D / (n + 1)
// (integer division), i = 0 ... n - 1, labelled "Z <d>". Columns: LD, SR, HD in grey, |SR - HD| in colour, a colour bar on the right.
RgbImage render_slices_panel(const Tensor& ld, const Tensor& sr, const Tensor& hd, const PanelOptions& options);

// The same rows with the given columns, left to right (options.columns and titles are not used).
RgbImage render_slices_panel(const std::vector<PanelColumn>& columns, const PanelOptions& options);

// Rows: the axial, coronal and sagittal planes through the centre voxel (D/2, H/2, W/2), labelled
// "AXIAL Z <d>", "CORONAL Y <h>", "SAGITTAL X <w>".
RgbImage render_orthogonal_panel(const Tensor& ld, const Tensor& sr, const Tensor& hd, const PanelOptions& options);

// Rows: maximum-intensity projections along D, H and W ("MIP D", "MIP H", "MIP W"); the error
// column is the maximum of |SR - HD| along the same rays (so no error along a ray is hidden).
RgbImage render_mip_panel(const Tensor& ld, const Tensor& sr, const Tensor& hd, const PanelOptions& options);

// ---- drawing primitives (shared by the panels, usable for other pictures) -------------------------

using Rgb = std::array<uint8_t, 3>;

inline constexpr Rgb kPanelBackground{40, 40, 40};  // not black, so that a tile's black edge shows
inline constexpr Rgb kPanelText{235, 235, 235};
inline constexpr Rgb kPanelNan{255, 0, 255};

// Grey level of an intensity on the [-1, 1] scale: round((clamp(v, -1, 1) + 1) * 127.5).
uint8_t intensity_to_grey(float value);

// The error colour map, t in [0, 1] (clamped): piecewise linear through five inferno-like
// points, black-violet to pale yellow, luminance strictly increasing.
Rgb error_colour(double t);

// Tick label text: at most three significant digits, no exponent ("0.5", "0.25", "0.005", "2").
std::string format_tick(double value);

// The comparison an evaluation shows for one pair (ctsr_evaluate --panels, and the diffusion
// trainer's full validation): on the same axial slices, LD, the best classical baseline, RED-CNN
// (when given), the first stage's round trip of HD (when given), SR and HD in grey, then the errors
// |X - HD| of LD, the baseline, RED-CNN and SR in colour (the bar on the [-1, 1] scale). The
// caption names the pair, the HU window the grey levels span and what the bar's top is in HU.
// Every volume [D, H, W] float32 cpu on the window's [-1, 1] scale, all of one shape.
struct ComparisonVolumes {
  std::string id;
  io::HuWindow window;
  std::array<double, 3> spacing{1, 1, 1};  // mm along D, H, W
  Tensor ld, hd, sr;
  std::string baseline_name;  // "gaussian", drawn as GAUSSIAN
  Tensor baseline;
  Tensor redcnn, roundtrip;   // undefined: the column is left out
};
RgbImage render_comparison_panel(const ComparisonVolumes& v, PanelOptions options = {});

// Width in pixels of `text` at `scale`: (6 * length - 1) * scale (0 for "").
int64_t text_width(const std::string& text, int scale);

// Draws `text` with its top-left corner at (x, y), clipped to the image. Characters: 0-9, A-Z,
// '|', '-', '.', ' '; anything else is an error.
void draw_text(RgbImage& image, int64_t x, int64_t y, const std::string& text, int scale, Rgb colour);

// The three panels of a validated sample: slices, orthogonal planes, maximum-intensity projections.
using SamplePanels = std::array<RgbImage, 3>;
class TensorBoardWriter;

// A validation tier's panels of its first `shown` samples of `count`, each drawn by the rank that
// scored it (rank_share of `count` over the ranks; `drawn` holds this rank's, by sample index),
// written by rank 0 alone: out_dir/images/step_<8 digits>_<id>_<kind>.png and the TensorBoard
// image val/<id>/<kind>, kind slices | orthogonal | mip. Collective: every rank calls it.
void write_validation_panels(Communicator& comm, int64_t count, int64_t shown, int64_t step,
                             const std::map<int64_t, SamplePanels>& drawn,
                             const std::function<std::string(int64_t)>& id_of, const std::filesystem::path& out_dir,
                             TensorBoardWriter* tensorboard);

}  // namespace ctsr::train
