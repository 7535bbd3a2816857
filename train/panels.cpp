// Validation panels: each panel is a list of rows (a label and one plane per column: LD, SR, HD,
// |SR-HD|, or the columns a caller gives) cut from the volumes (a slice or a maximum projection
// along one axis), laid out by one compositor with titles, row labels and a colour bar (the layout
// is spelled out in panels.h).
// The drawing primitives (font, rectangles, colour map) are at the top of this file.
#include "train/panels.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <sstream>
#include <vector>

#include "runtime/error.h"
#include "train/data_parallel.h"
#include "train/tensorboard.h"

namespace ctsr::train {

// ---- drawing primitives --------------------------------------------------------------------------

namespace {

// 5x7 glyphs, one byte per row, top row first, bit 4 the leftmost pixel.
struct Glyph {
  char character;
  std::array<uint8_t, 7> rows;
};

constexpr Glyph kFont[] = {
    {'0', {0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110}},
    {'1', {0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110}},
    {'2', {0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111}},
    {'3', {0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110}},
    {'4', {0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010}},
    {'5', {0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110}},
    {'6', {0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110}},
    {'7', {0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000}},
    {'8', {0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110}},
    {'9', {0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100}},
    {'A', {0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001}},
    {'B', {0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110}},
    {'C', {0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110}},
    {'D', {0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100}},
    {'E', {0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111}},
    {'F', {0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000}},
    {'G', {0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111}},
    {'H', {0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001}},
    {'I', {0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110}},
    {'J', {0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100}},
    {'K', {0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001}},
    {'L', {0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111}},
    {'M', {0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001}},
    {'N', {0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001}},
    {'O', {0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110}},
    {'P', {0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000}},
    {'Q', {0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101}},
    {'R', {0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001}},
    {'S', {0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110}},
    {'T', {0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100}},
    {'U', {0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110}},
    {'V', {0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100}},
    {'W', {0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010}},
    {'X', {0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001}},
    {'Y', {0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100, 0b00100}},
    {'Z', {0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111}},
    {'|', {0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100}},
    {'-', {0b00000, 0b00000, 0b00000, 0b01110, 0b00000, 0b00000, 0b00000}},
    {'.', {0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100}},
    {' ', {0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000}},
};
constexpr int kGlyphWidth = 5, kGlyphHeight = 7, kGlyphAdvance = 6;

const Glyph& glyph_for(char c) {
  for (const Glyph& g : kFont)
    if (g.character == c) return g;
  CTSR_FAIL("draw_text: no glyph for the character '", c, "' (the font has 0-9, A-Z, '|', '-', '.' and ' ')");
}

void fill_rect(RgbImage& image, int64_t x, int64_t y, int64_t width, int64_t height, Rgb colour) {
  const int64_t x0 = std::max<int64_t>(x, 0), x1 = std::min(x + width, image.width);
  const int64_t y0 = std::max<int64_t>(y, 0), y1 = std::min(y + height, image.height);
  for (int64_t py = y0; py < y1; ++py)
    for (int64_t px = x0; px < x1; ++px) std::copy(colour.begin(), colour.end(), &image.rgb[3 * (py * image.width + px)]);
}

void set_pixel(RgbImage& image, int64_t x, int64_t y, Rgb colour) {
  std::copy(colour.begin(), colour.end(), &image.rgb[3 * (y * image.width + x)]);
}

}  // namespace

uint8_t intensity_to_grey(float value) {
  const double v = std::clamp(static_cast<double>(value), -1.0, 1.0);
  return static_cast<uint8_t>(std::lround((v + 1.0) * 127.5));
}

Rgb error_colour(double t) {
  // Control points sampled by eye from the inferno map; luminance 0.3, 38, 85, 155, 248.
  static constexpr std::array<Rgb, 5> points{{{0, 0, 4}, {87, 16, 110}, {188, 55, 84}, {249, 142, 9}, {252, 255, 164}}};
  t = std::isnan(t) ? 0.0 : std::clamp(t, 0.0, 1.0);
  const double position = t * (points.size() - 1);
  const size_t i = std::min(static_cast<size_t>(position), points.size() - 2);
  const double f = position - static_cast<double>(i);
  Rgb c;
  for (int k = 0; k < 3; ++k)
    c[k] = static_cast<uint8_t>(std::lround(points[i][k] + f * (points[i + 1][k] - points[i][k])));
  return c;
}

std::string format_tick(double value) {
  if (value == 0) return "0";
  // Decimals for three significant digits, then trailing zeros dropped: 0.5 -> "0.5", 2 -> "2".
  const int magnitude = static_cast<int>(std::floor(std::log10(std::abs(value))));
  const int decimals = std::clamp(2 - magnitude, 0, 9);
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", decimals, value);
  std::string s = buffer;
  if (s.find('.') != std::string::npos) {
    s.erase(s.find_last_not_of('0') + 1);
    if (s.back() == '.') s.pop_back();
  }
  return s;
}

int64_t text_width(const std::string& text, int scale) {
  return text.empty() ? 0 : (kGlyphAdvance * static_cast<int64_t>(text.size()) - 1) * scale;
}

void draw_text(RgbImage& image, int64_t x, int64_t y, const std::string& text, int scale, Rgb colour) {
  for (size_t i = 0; i < text.size(); ++i) {
    const Glyph& g = glyph_for(text[i]);
    const int64_t left = x + static_cast<int64_t>(i) * kGlyphAdvance * scale;
    for (int row = 0; row < kGlyphHeight; ++row)
      for (int col = 0; col < kGlyphWidth; ++col)
        if (g.rows[row] & (1 << (kGlyphWidth - 1 - col)))
          fill_rect(image, left + col * scale, y + row * scale, scale, scale, colour);
  }
}

// ---- planes cut from the volumes -----------------------------------------------------------------

namespace {

// A 2D view: `rows` x `cols` values with the physical size of one step along each.
struct Plane {
  int64_t rows = 0, cols = 0;
  double row_spacing = 1, col_spacing = 1;
  std::vector<float> values;
  float at(int64_t r, int64_t c) const { return values[static_cast<size_t>(r * cols + c)]; }
};

struct Volume {
  std::array<int64_t, 3> dims;  // D, H, W
  const float* data;
  float at(int64_t d, int64_t h, int64_t w) const { return data[(d * dims[1] + h) * dims[2] + w]; }
};

// The plane across `axis` (0 = D, 1 = H, 2 = W): the slice at `index`, or, without one, the maximum
// along the axis (NaN if any voxel on the ray is NaN, so a diverged model shows). The plane's axes
// are the two others, in order.
Plane cut_plane(const Volume& v, const std::array<double, 3>& spacing, int axis, std::optional<int64_t> index) {
  const int row_axis = axis == 0 ? 1 : 0, col_axis = axis == 2 ? 1 : 2;
  Plane p;
  p.rows = v.dims[row_axis];
  p.cols = v.dims[col_axis];
  p.row_spacing = spacing[row_axis];
  p.col_spacing = spacing[col_axis];
  p.values.resize(static_cast<size_t>(p.rows * p.cols));
  const int64_t first = index.value_or(0), last = index ? *index + 1 : v.dims[axis];
  for (int64_t r = 0; r < p.rows; ++r)
    for (int64_t c = 0; c < p.cols; ++c) {
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t k = first; k < last; ++k) {
        std::array<int64_t, 3> at{};
        at[axis] = k;
        at[row_axis] = r;
        at[col_axis] = c;
        const float x = v.at(at[0], at[1], at[2]);
        m = std::isnan(x) || std::isnan(m) ? std::numeric_limits<float>::quiet_NaN() : std::max(m, x);
      }
      p.values[static_cast<size_t>(r * p.cols + c)] = m;
    }
  return p;
}

struct PanelRow {
  std::string label;
  std::vector<Plane> tiles;  // one per column drawn
};

// A column to draw: its title, whether it is an error map (colour) or intensities (grey), and
// the volume its planes are cut from.
struct ColumnVolume {
  std::string title;
  bool error = false;
  Volume volume;
};

// The volumes of the columns drawn, and the planes cut from each of them.
struct PanelVolumes {
  std::vector<ColumnVolume> columns;
  std::vector<float> error_values;  // |SR - HD| of the four-column panels (its column points here)
  std::array<double, 3> spacing;
  std::array<int64_t, 3> dims;

  PanelRow row(std::string label, int axis, std::optional<int64_t> index) const {
    PanelRow r{std::move(label), {}};
    for (const ColumnVolume& c : columns) r.tiles.push_back(cut_plane(c.volume, spacing, axis, index));
    return r;
  }
};

void check_volume(const char* panel, const std::string& name, const Tensor& t, const Tensor& first,
                  const std::string& first_name) {
  CTSR_CHECK(t.defined(), panel, ": ", name, " is undefined");
  CTSR_CHECK(t.ndim() == 3, panel, ": ", name, " has shape ", t.shape().str(), "; expected a volume [D, H, W]");
  CTSR_CHECK(t.dtype() == DType::float32, panel, ": ", name, " is ", dtype_name(t.dtype()), "; expected float32");
  CTSR_CHECK(t.device() == Device::cpu(), panel, ": ", name, " is on ", t.device().str(), "; expected cpu");
  CTSR_CHECK(t.numel() > 0, panel, ": ", name, " has shape ", t.shape().str(), ", which is empty");
  CTSR_CHECK(t.shape() == first.shape(), panel, ": ", name, " has shape ", t.shape().str(), " but ", first_name,
             " has ", first.shape().str());
}

void check_options(const char* panel, const PanelOptions& options) {
  for (int a = 0; a < 3; ++a)
    CTSR_CHECK(std::isfinite(options.spacing[a]) && options.spacing[a] > 0, panel, ": spacing[", a, "] is ",
               options.spacing[a], "; expected a positive size in mm");
  CTSR_CHECK(std::isfinite(options.error_max) && options.error_max > 0, panel, ": error_max is ", options.error_max,
             "; expected a positive value");
  CTSR_CHECK(options.slices >= 1, panel, ": slices is ", options.slices, "; expected at least 1");
  CTSR_CHECK(options.scale >= 1 && options.scale <= 64, panel, ": scale is ", options.scale, "; expected 1 to 64");
}

// The four-column panels: LD, SR, HD and |SR - HD|, those of options.columns.
PanelVolumes check_and_wrap(const char* panel, const Tensor& ld, const Tensor& sr, const Tensor& hd,
                            const PanelOptions& options) {
  for (const auto& [name, t] : {std::pair{"ld", &ld}, std::pair{"sr", &sr}, std::pair{"hd", &hd}})
    check_volume(panel, name, *t, ld, "ld");
  check_options(panel, options);
  CTSR_CHECK(std::find(options.columns.begin(), options.columns.end(), true) != options.columns.end(), panel,
             ": no column is shown (PanelOptions::columns is all false)");

  const std::array<int64_t, 3> dims{ld.dim(0), ld.dim(1), ld.dim(2)};
  PanelVolumes v{{}, {}, options.spacing, dims};
  const float *l = ld.data<float>(), *s = sr.data<float>(), *h = hd.data<float>();
  const std::array<const float*, 3> grey{l, s, h};
  for (size_t j = 0; j < 4; ++j) {
    if (!options.columns[j]) continue;
    if (j < 3) {
      v.columns.push_back({options.titles[j], false, {dims, grey[j]}});
    } else {
      v.error_values.resize(static_cast<size_t>(ld.numel()));
      for (size_t i = 0; i < v.error_values.size(); ++i) v.error_values[i] = std::abs(s[i] - h[i]);
      v.columns.push_back({options.titles[j], true, {dims, v.error_values.data()}});
    }
  }
  return v;
}

// ---- the compositor ------------------------------------------------------------------------------

constexpr int64_t kMaxPanelPixels = int64_t(1) << 28;  // 768 MiB of RGB: surely a mistaken scale or spacing

RgbImage compose(const char* panel, const PanelVolumes& volumes, const std::vector<PanelRow>& rows,
                 const PanelOptions& options) {
  const int64_t s = options.scale, gap = 2 * s, text_height = 7 * s;
  const double min_spacing = *std::min_element(options.spacing.begin(), options.spacing.end());
  auto side = [&](int64_t n, double spacing) {
    const double pixels = static_cast<double>(n) * static_cast<double>(s) * spacing / min_spacing;
    CTSR_CHECK(pixels <= double(kMaxPanelPixels), panel, ": an axis of ", n, " voxels at spacing ", spacing,
               " mm would be ", pixels, " pixels (finest spacing ", min_spacing, " mm, scale ", s, ")");
    return std::max<int64_t>(1, std::llround(pixels));
  };
  const std::vector<ColumnVolume>& columns = volumes.columns;
  const int64_t column_count = static_cast<int64_t>(columns.size());

  int64_t label_width = 0, column_width = 0, rows_height = 0;
  for (const ColumnVolume& c : columns) column_width = std::max(column_width, text_width(c.title, options.scale));
  std::vector<int64_t> row_heights;
  for (const PanelRow& row : rows) {
    label_width = std::max(label_width, text_width(row.label, options.scale));
    int64_t height = text_height;
    for (const Plane& p : row.tiles) {
      column_width = std::max(column_width, side(p.cols, p.col_spacing));
      height = std::max(height, side(p.rows, p.row_spacing));
    }
    row_heights.push_back(height);
    rows_height += height + (row_heights.size() > 1 ? gap : 0);
  }
  if (rows_height < 24 * s) {
    row_heights.back() += 24 * s - rows_height;
    rows_height = 24 * s;
  }

  std::vector<double> tick_values{0.0, options.error_max};
  if (rows_height >= 40 * s) tick_values.push_back(options.error_max / 2);
  int64_t tick_label_width = 0;
  for (double v : tick_values) tick_label_width = std::max(tick_label_width, text_width(format_tick(v), options.scale));

  const int64_t columns_x = gap + label_width + gap;
  const int64_t bar_x = columns_x + column_count * column_width + (column_count - 1) * gap + gap, bar_width = 4 * s;
  const int64_t tick_label_x = bar_x + bar_width + gap;
  // The caption, when there is one, takes a line of its own above the titles.
  const int64_t titles_y = options.caption.empty() ? gap : gap + text_height + gap;
  const int64_t rows_y = titles_y + text_height + gap;

  RgbImage image;
  image.width = std::max(tick_label_x + tick_label_width + gap, gap + text_width(options.caption, options.scale) + gap);
  image.height = rows_y + rows_height + gap;
  CTSR_CHECK(image.width * image.height <= kMaxPanelPixels, panel, ": the panel would be ", image.width, " x ",
             image.height, " pixels; lower the scale");
  image.rgb.resize(static_cast<size_t>(image.width * image.height * 3));
  fill_rect(image, 0, 0, image.width, image.height, kPanelBackground);

  draw_text(image, gap, gap, options.caption, options.scale, kPanelText);
  for (size_t k = 0; k < columns.size(); ++k) {
    const std::string& title = columns[k].title;
    const int64_t x = columns_x + static_cast<int64_t>(k) * (column_width + gap);
    draw_text(image, x + (column_width - text_width(title, options.scale)) / 2, titles_y, title, options.scale,
              kPanelText);
  }
  int64_t y = rows_y;
  for (size_t i = 0; i < rows.size(); ++i) {
    draw_text(image, gap, y, rows[i].label, options.scale, kPanelText);
    for (size_t k = 0; k < columns.size(); ++k) {
      const Plane& p = rows[i].tiles[k];
      const int64_t height = side(p.rows, p.row_spacing), width = side(p.cols, p.col_spacing);
      const int64_t x0 = columns_x + static_cast<int64_t>(k) * (column_width + gap) + (column_width - width) / 2;
      for (int64_t py = 0; py < height; ++py)
        for (int64_t px = 0; px < width; ++px) {
          // Nearest neighbour at the pixel centre, in integers: floor((p + 0.5) * n / side).
          const float v = p.at((2 * py + 1) * p.rows / (2 * height), (2 * px + 1) * p.cols / (2 * width));
          const uint8_t grey = intensity_to_grey(v);
          const Rgb colour = std::isnan(v) ? kPanelNan
                             : columns[k].error ? error_colour(v / options.error_max)
                                                : Rgb{grey, grey, grey};
          set_pixel(image, x0 + px, y + py, colour);
        }
    }
    y += row_heights[i] + gap;
  }

  for (int64_t r = 0; r < rows_height; ++r)
    fill_rect(image, bar_x, rows_y + r, bar_width, 1,
              error_colour(1.0 - (static_cast<double>(r) + 0.5) / static_cast<double>(rows_height)));
  // No tick marks: beside a label they read as a minus sign. Each label's vertical position along
  // the bar is its value's, so the top and bottom labels end flush with the bar.
  for (double v : tick_values) {
    const double from_top = 1.0 - v / options.error_max;
    const int64_t label_y = rows_y + std::llround(from_top * static_cast<double>(rows_height - text_height));
    draw_text(image, tick_label_x, label_y, format_tick(v), options.scale, kPanelText);
  }
  return image;
}

}  // namespace

// ---- the panels ----------------------------------------------------------------------------------

PanelOptions reconstruction_panel_options(PanelOptions base) {
  base.columns = {true, true, false, true};
  base.titles = {"INPUT", "RECON", "INPUT", "|RECON-INPUT|"};
  return base;
}

namespace {

// Axial slices evenly spread, never repeated (panels.h).
RgbImage compose_slices(const char* panel, const PanelVolumes& v, const PanelOptions& options) {
  const int64_t depth = v.dims[0], count = std::min<int64_t>(options.slices, depth);
  std::vector<PanelRow> rows;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t d = (i + 1) * depth / (count + 1);
    rows.push_back(v.row("Z " + std::to_string(d), 0, d));
  }
  return compose(panel, v, rows, options);
}

}  // namespace

RgbImage render_slices_panel(const Tensor& ld, const Tensor& sr, const Tensor& hd, const PanelOptions& options) {
  return compose_slices("render_slices_panel", check_and_wrap("render_slices_panel", ld, sr, hd, options), options);
}

RgbImage render_slices_panel(const std::vector<PanelColumn>& columns, const PanelOptions& options) {
  const char* panel = "render_slices_panel";
  CTSR_CHECK(!columns.empty(), panel, ": no columns");
  check_options(panel, options);
  const Tensor& first = columns.front().volume;
  for (const PanelColumn& c : columns)
    check_volume(panel, "column '" + c.title + "'", c.volume, first, "column '" + columns.front().title + "'");
  PanelVolumes v{{}, {}, options.spacing, {first.dim(0), first.dim(1), first.dim(2)}};
  for (const PanelColumn& c : columns) v.columns.push_back({c.title, c.error, {v.dims, c.volume.data<float>()}});
  return compose_slices(panel, v, options);
}

RgbImage render_orthogonal_panel(const Tensor& ld, const Tensor& sr, const Tensor& hd, const PanelOptions& options) {
  const PanelVolumes v = check_and_wrap("render_orthogonal_panel", ld, sr, hd, options);
  const auto& dims = v.dims;
  return compose("render_orthogonal_panel", v,
                 {v.row("AXIAL Z " + std::to_string(dims[0] / 2), 0, dims[0] / 2),
                  v.row("CORONAL Y " + std::to_string(dims[1] / 2), 1, dims[1] / 2),
                  v.row("SAGITTAL X " + std::to_string(dims[2] / 2), 2, dims[2] / 2)},
                 options);
}

RgbImage render_mip_panel(const Tensor& ld, const Tensor& sr, const Tensor& hd, const PanelOptions& options) {
  const PanelVolumes v = check_and_wrap("render_mip_panel", ld, sr, hd, options);
  return compose("render_mip_panel", v,
                 {v.row("MIP D", 0, std::nullopt), v.row("MIP H", 1, std::nullopt), v.row("MIP W", 2, std::nullopt)},
                 options);
}

RgbImage render_comparison_panel(const ComparisonVolumes& v, PanelOptions options) {
  auto upper = [](std::string text) {
    for (char& c : text) c = char(std::toupper(static_cast<unsigned char>(c)));
    return text;
  };
  auto error = [&](const Tensor& x) {
    CTSR_CHECK(x.shape() == v.hd.shape(), "render_comparison_panel: a volume is ", x.shape().str(), " but HD is ",
               v.hd.shape().str());
    Tensor e = Tensor::empty(v.hd.shape());
    const float *a = x.data<float>(), *b = v.hd.data<float>();
    for (int64_t i = 0; i < e.numel(); ++i) e.data<float>()[i] = std::abs(a[i] - b[i]);
    return e;
  };
  const std::string name = upper(v.baseline_name);
  options.spacing = v.spacing;
  const double hu_per_unit = (double(v.window.hi) - double(v.window.lo)) / 2.0;
  // The font has capitals, digits, '|', '-', '.' and ' ': the id is shown in those.
  std::string id = upper(v.id);
  for (char& c : id)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') c = '-';
  options.caption = "PAIR " + id + "  WINDOW " + format_tick(v.window.lo) + " TO " + format_tick(v.window.hi) +
                    " HU  ERROR BAR " + format_tick(options.error_max) + " IS " +
                    format_tick(options.error_max * hu_per_unit) + " HU";
  std::vector<PanelColumn> columns{{"LD", v.ld}, {name, v.baseline}};
  if (v.redcnn.defined()) columns.push_back({"REDCNN", v.redcnn});
  if (v.roundtrip.defined()) columns.push_back({"ROUNDTRIP", v.roundtrip});
  columns.push_back({"SR", v.sr});
  columns.push_back({"HD", v.hd});
  columns.push_back({"|LD-HD|", error(v.ld), true});
  columns.push_back({"|" + name + "-HD|", error(v.baseline), true});
  if (v.redcnn.defined()) columns.push_back({"|REDCNN-HD|", error(v.redcnn), true});
  columns.push_back({"|SR-HD|", error(v.sr), true});
  return render_slices_panel(columns, options);
}

void write_validation_panels(Communicator& comm, int64_t count, int64_t shown, int64_t step,
                             const std::map<int64_t, SamplePanels>& drawn,
                             const std::function<std::string(int64_t)>& id_of, const std::filesystem::path& out_dir,
                             TensorBoardWriter* tensorboard) {
  const char* kinds[] = {"slices", "orthogonal", "mip"};
  char prefix[64];
  std::snprintf(prefix, sizeof prefix, "step_%08lld_", static_cast<long long>(step));
  const std::filesystem::path images = out_dir / "images";
  for (int64_t k = 0; k < std::min(shown, count); ++k) {
    int owner = 0;
    while (rank_share(count, owner, comm.size()).second <= k) ++owner;
    for (int kind = 0; kind < 3; ++kind) {
      RgbImage image;
      std::string bytes;
      if (comm.rank() == owner) {
        image = drawn.at(k)[size_t(kind)];
        bytes = std::to_string(image.width) + " " + std::to_string(image.height) + " ";
        bytes.append(reinterpret_cast<const char*>(image.rgb.data()), image.rgb.size());
      }
      if (owner != 0) comm.broadcast_string(bytes, owner);
      if (comm.rank() != 0) continue;
      if (owner != 0) {
        std::istringstream header(bytes);
        header >> image.width >> image.height;
        const size_t at = bytes.size() - size_t(image.width * image.height * 3);
        image.rgb.assign(bytes.begin() + std::ptrdiff_t(at), bytes.end());
      }
      const std::string id = id_of(k);
      std::filesystem::create_directories(images);
      write_png(images / (prefix + id + "_" + kinds[kind] + ".png"), image);
      if (tensorboard) tensorboard->add_image("val/" + id + "/" + kinds[kind], image, step);
    }
  }
}

}  // namespace ctsr::train
