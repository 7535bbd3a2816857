// Validation panels (train/panels.h): sizes follow the documented layout from shape, spacing and
// scale (one case worked by hand); every pixel of every tile is the grey of the voxel under it, or
// the colour map of |SR - HD| (slices, orthogonal planes, maximum projections), at odd sizes and
// anisotropic spacing; titles and row labels are drawn where the layout says; the colour bar is
// the map, bright at the top, monotone in luminance; NaN shows; bad inputs are refused by name.
// The font, grey scale, colour map and tick labels are checked on their own.
// With CTSR_TEST_KEEP_DIR set, the panels of a synthetic phantom are written there as PNGs.
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>

#include "tests/harness.h"
#include "train/panels.h"

namespace ctsr::test {
namespace {

using train::PanelOptions;
using train::Rgb;
using train::RgbImage;

Rgb pixel(const RgbImage& image, int64_t x, int64_t y) {
  const size_t i = static_cast<size_t>(3 * (y * image.width + x));
  return {image.rgb[i], image.rgb[i + 1], image.rgb[i + 2]};
}

double luminance(const Rgb& c) { return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]; }

Rgb grey(float v) {
  const uint8_t g = train::intensity_to_grey(v);
  return {g, g, g};
}

std::string show(const Rgb& c) {
  return detail::concat("(", int(c[0]), ", ", int(c[1]), ", ", int(c[2]), ")");
}

// ---- the layout of panels.h, restated ------------------------------------------------------------

struct TileSize {
  int64_t height, width;
};

int64_t expected_side(int64_t n, double spacing, const PanelOptions& o) {
  const double finest = std::min({o.spacing[0], o.spacing[1], o.spacing[2]});
  return std::max<int64_t>(1, std::llround(double(n) * o.scale * spacing / finest));
}

int64_t expected_text_width(const std::string& text, int scale) { return (6 * int64_t(text.size()) - 1) * scale; }

struct Geometry {
  int64_t gap, columns_x, column_width, bar_x, rows_y, rows_height, width, height;
  std::vector<int64_t> row_y;
  std::vector<TileSize> tiles;  // one per row: the four tiles of a row are the same plane
  std::vector<double> ticks;
  int64_t column_x(int j) const { return columns_x + j * (column_width + gap); }
  int64_t tile_x(size_t row, int j) const { return column_x(j) + (column_width - tiles[row].width) / 2; }
};

// `columns` drawn, the widest title among them `widest_title` (the default: all four).
Geometry expected_geometry(const PanelOptions& o, const std::vector<std::string>& labels,
                           const std::vector<TileSize>& tiles, int64_t columns = 4,
                           const std::string& widest_title = "|SR-HD|") {
  const int64_t s = o.scale;
  Geometry g;
  g.gap = 2 * s;
  g.tiles = tiles;
  int64_t label_width = 0;
  for (const auto& l : labels) label_width = std::max(label_width, expected_text_width(l, o.scale));
  g.column_width = expected_text_width(widest_title, o.scale);
  for (const auto& t : tiles) g.column_width = std::max(g.column_width, t.width);
  g.rows_y = g.gap + 7 * s + g.gap;
  std::vector<int64_t> heights;
  for (const auto& t : tiles) heights.push_back(std::max(t.height, 7 * s));
  g.rows_height = 0;
  for (int64_t h : heights) g.rows_height += h;
  g.rows_height += g.gap * int64_t(heights.size() - 1);
  if (g.rows_height < 24 * s) {
    heights.back() += 24 * s - g.rows_height;
    g.rows_height = 24 * s;
  }
  for (size_t i = 0, y = g.rows_y; i < heights.size(); y += heights[i] + g.gap, ++i) g.row_y.push_back(int64_t(y));
  g.ticks = {0.0, o.error_max};
  if (g.rows_height >= 40 * s) g.ticks.push_back(o.error_max / 2);
  int64_t tick_width = 0;
  for (double v : g.ticks) tick_width = std::max(tick_width, expected_text_width(train::format_tick(v), o.scale));
  g.columns_x = g.gap + label_width + g.gap;
  g.bar_x = g.columns_x + columns * g.column_width + columns * g.gap;
  g.width = g.bar_x + 4 * s + g.gap + tick_width + g.gap;
  g.height = g.rows_y + g.rows_height + g.gap;
  return g;
}

// Every pixel of a tile of `n_rows` x `n_cols` values shown at `size`: nearest neighbour at pixel centres.
void expect_tile(const RgbImage& image, int64_t x0, int64_t y0, TileSize size, int64_t n_rows, int64_t n_cols,
                 const std::function<Rgb(int64_t, int64_t)>& expected, const std::string& what) {
  int64_t wrong = 0;
  for (int64_t py = 0; py < size.height; ++py)
    for (int64_t px = 0; px < size.width; ++px) {
      const auto r = static_cast<int64_t>(std::floor((py + 0.5) * double(n_rows) / double(size.height)));
      const auto c = static_cast<int64_t>(std::floor((px + 0.5) * double(n_cols) / double(size.width)));
      const Rgb want = expected(r, c), got = pixel(image, x0 + px, y0 + py);
      if (got != want && wrong++ == 0)
        ADD_FAILURE() << what << ": pixel (" << px << ", " << py << ") of the tile, value (" << r << ", " << c
                      << "), is " << show(got) << ", expected " << show(want);
    }
  EXPECT_EQ(wrong, 0) << what;
}

// Text in the panel where the layout puts it: exactly what draw_text makes on the background.
void expect_text(const RgbImage& image, int64_t x, int64_t y, const std::string& text, int scale) {
  RgbImage reference{expected_text_width(text, scale), 7 * int64_t(scale), {}};
  for (int64_t i = 0; i < reference.width * reference.height; ++i)
    reference.rgb.insert(reference.rgb.end(), train::kPanelBackground.begin(), train::kPanelBackground.end());
  train::draw_text(reference, 0, 0, text, scale, train::kPanelText);
  expect_tile(image, x, y, {reference.height, reference.width}, reference.height, reference.width,
              [&](int64_t r, int64_t c) { return pixel(reference, c, r); }, "text '" + text + "'");
}

struct Volumes {
  Tensor ld, sr, hd;
  int64_t D, H, W;
  float at(const Tensor& t, int64_t d, int64_t h, int64_t w) const { return t.data<float>()[(d * H + h) * W + w]; }
  float error(int64_t d, int64_t h, int64_t w) const { return std::abs(at(sr, d, h, w) - at(hd, d, h, w)); }
};

Volumes random_volumes(int64_t D, int64_t H, int64_t W, uint64_t seed) {
  // Intensities a little beyond [-1, 1], so clamping is exercised too.
  return {random_tensor(Shape{D, H, W}, seed, DType::float32, -1.2, 1.2),
          random_tensor(Shape{D, H, W}, seed + 1, DType::float32, -1.2, 1.2),
          random_tensor(Shape{D, H, W}, seed + 2, DType::float32, -1.2, 1.2), D, H, W};
}

// The slices panel's rows (depths and labels) and layout, as panels.h specifies them.
struct SlicesLayout {
  std::vector<int64_t> depths;
  std::vector<std::string> labels;
  Geometry geometry;
};

SlicesLayout expected_slices_layout(const Volumes& v, const PanelOptions& o) {
  SlicesLayout layout;
  const int64_t rows = std::min<int64_t>(o.slices, v.D);
  for (int64_t i = 0; i < rows; ++i) {
    layout.depths.push_back((i + 1) * v.D / (rows + 1));
    layout.labels.push_back("Z " + std::to_string(layout.depths.back()));
  }
  const TileSize tile{expected_side(v.H, o.spacing[1], o), expected_side(v.W, o.spacing[2], o)};
  layout.geometry = expected_geometry(o, layout.labels, std::vector<TileSize>(rows, tile));
  return layout;
}

// Rows across D ([H, W] planes), across H ([D, W]) and across W ([D, H]): orthogonal and MIP panels.
Geometry expected_three_view_geometry(const Volumes& v, const PanelOptions& o, const std::vector<std::string>& labels) {
  return expected_geometry(o, labels,
                           {{expected_side(v.H, o.spacing[1], o), expected_side(v.W, o.spacing[2], o)},
                            {expected_side(v.D, o.spacing[0], o), expected_side(v.W, o.spacing[2], o)},
                            {expected_side(v.D, o.spacing[0], o), expected_side(v.H, o.spacing[1], o)}});
}

// Default options, and anisotropic spacing with a different scale, error_max and slice count.
std::vector<PanelOptions> option_sets() {
  PanelOptions anisotropic;
  anisotropic.spacing = {2.5, 0.7, 1.0};
  anisotropic.scale = 3;
  anisotropic.error_max = 0.3;
  anisotropic.slices = 5;
  PanelOptions fine;
  fine.scale = 1;
  fine.spacing = {1.0, 3.0, 0.9};
  return {PanelOptions{}, anisotropic, fine};
}

// The four columns of one row: LD, SR, HD grey and the error colour, value(r, c) -> voxel.
void expect_row(const RgbImage& image, const Geometry& g, size_t row, const Volumes& v, const PanelOptions& o,
                int64_t n_rows, int64_t n_cols, const std::function<float(const Tensor&, int64_t, int64_t)>& value,
                const std::function<float(int64_t, int64_t)>& error, const std::string& what) {
  const Tensor* grey_volumes[3] = {&v.ld, &v.sr, &v.hd};
  for (int j = 0; j < 3; ++j)
    expect_tile(image, g.tile_x(row, j), g.row_y[row], g.tiles[row], n_rows, n_cols,
                [&](int64_t r, int64_t c) { return grey(value(*grey_volumes[j], r, c)); },
                what + " column " + std::to_string(j));
  expect_tile(image, g.tile_x(row, 3), g.row_y[row], g.tiles[row], n_rows, n_cols,
              [&](int64_t r, int64_t c) { return train::error_colour(double(error(r, c)) / o.error_max); },
              what + " error column");
}

// ---- panels --------------------------------------------------------------------------------------

TEST(Panels, SlicesPanelSizeWorkedByHand) {
  // D, H, W = 13, 11, 7 at scale 2: s = 2, gap 4, tiles 22 high and 14 wide. Rows at d = 2, 5, 7, 10;
  // widest label "Z 10" is (24 - 1) * 2 = 46; "|SR-HD|" (82) is wider than a tile, so columns are 82.
  // Width: 4 + 46 + 4 + 4 * 82 + 3 * 4 + 4 + bar 8 + 4 + "0.25" 46 + 4 = 460.
  // Height: 4 + 14 + 4 + (4 * 22 + 3 * 4 = 100) + 4 = 126.
  const Volumes v = random_volumes(13, 11, 7, 1);
  const RgbImage image = train::render_slices_panel(v.ld, v.sr, v.hd, PanelOptions{});
  EXPECT_EQ(image.width, 460);
  EXPECT_EQ(image.height, 126);
  EXPECT_EQ(image.rgb.size(), size_t(460 * 126 * 3));
  const Geometry g = expected_geometry(PanelOptions{}, {"Z 2", "Z 5", "Z 7", "Z 10"}, std::vector<TileSize>(4, {22, 14}));
  EXPECT_EQ(g.width, 460);
  EXPECT_EQ(g.height, 126);
}

TEST(Panels, SlicesPanelShowsEveryVoxelOfItsSlices) {
  const Volumes v = random_volumes(13, 11, 7, 2);
  for (const PanelOptions& o : option_sets()) {
    const RgbImage image = train::render_slices_panel(v.ld, v.sr, v.hd, o);
    const auto [depths, labels, g] = expected_slices_layout(v, o);
    ASSERT_EQ(image.width, g.width);
    ASSERT_EQ(image.height, g.height);
    for (size_t i = 0; i < depths.size(); ++i) {
      const int64_t d = depths[i];
      expect_row(image, g, i, v, o, v.H, v.W, [&](const Tensor& t, int64_t r, int64_t c) { return v.at(t, d, r, c); },
                 [&](int64_t r, int64_t c) { return v.error(d, r, c); }, "slice " + labels[i]);
      expect_text(image, g.gap, g.row_y[i], labels[i], o.scale);
    }
    const std::vector<std::string> titles{"LD", "SR", "HD", "|SR-HD|"};
    for (int j = 0; j < 4; ++j)
      expect_text(image, g.column_x(j) + (g.column_width - expected_text_width(titles[j], o.scale)) / 2, g.gap,
                  titles[j], o.scale);
  }
}

// An autoencoder's reconstruction: INPUT (passed as LD and HD), RECON and |RECON-INPUT| in three
// columns, laid out as four are with the HD column left out.
TEST(Panels, ReconstructionPanelShowsInputReconstructionAndError) {
  const Volumes v = random_volumes(13, 11, 7, 12);
  const Tensor& input = v.hd;
  const Tensor& recon = v.sr;
  for (const PanelOptions& base : option_sets()) {
    const PanelOptions o = train::reconstruction_panel_options(base);
    const RgbImage image = train::render_slices_panel(input, recon, input, o);
    SlicesLayout layout = expected_slices_layout(v, base);
    const Geometry g = expected_geometry(o, layout.labels, layout.geometry.tiles, 3, "|RECON-INPUT|");
    ASSERT_EQ(image.width, g.width);
    ASSERT_EQ(image.height, g.height);
    for (size_t i = 0; i < layout.depths.size(); ++i) {
      const int64_t d = layout.depths[i];
      int column = 0;
      for (const Tensor* t : {&input, &recon})
        expect_tile(image, g.tile_x(i, column++), g.row_y[i], g.tiles[i], v.H, v.W,
                    [&](int64_t r, int64_t c) { return grey(v.at(*t, d, r, c)); }, layout.labels[i] + " grey column");
      expect_tile(image, g.tile_x(i, 2), g.row_y[i], g.tiles[i], v.H, v.W,
                  [&](int64_t r, int64_t c) { return train::error_colour(double(v.error(d, r, c)) / o.error_max); },
                  layout.labels[i] + " error column");
    }
    const std::vector<std::string> titles{"INPUT", "RECON", "|RECON-INPUT|"};
    for (int j = 0; j < 3; ++j)
      expect_text(image, g.column_x(j) + (g.column_width - expected_text_width(titles[size_t(j)], o.scale)) / 2, g.gap,
                  titles[size_t(j)], o.scale);
  }
  PanelOptions none;
  none.columns = {false, false, false, false};
  expect_error_mentions([&] { train::render_mip_panel(input, recon, input, none); }, {"render_mip_panel", "no column"});
}

// The many-column slices panel (ctsr_evaluate's): the given columns, grey or in the error colours,
// laid out as the four are; a caption takes a line above the titles (everything below moves down
// by 7s + g) and widens the picture when it is wider.
TEST(Panels, ColumnsPanelDrawsTheGivenColumnsUnderACaption) {
  const Volumes v = random_volumes(13, 11, 7, 21);
  Tensor error = Tensor::empty(v.hd.shape());
  for (int64_t i = 0; i < error.numel(); ++i)
    error.data<float>()[i] = std::abs(v.ld.data<float>()[i] - v.hd.data<float>()[i]);
  const std::vector<train::PanelColumn> columns{
      {"LD", v.ld}, {"BASELINE", v.sr}, {"HD", v.hd}, {"|BASELINE-HD|", error, true}, {"SR", v.sr}};
  for (const PanelOptions& base : option_sets()) {
    PanelOptions o = base;
    o.caption = "WINDOW -200 TO 200 HU";
    const RgbImage image = train::render_slices_panel(columns, o);
    const SlicesLayout layout = expected_slices_layout(v, base);
    Geometry g = expected_geometry(o, layout.labels, layout.geometry.tiles, 5, "|BASELINE-HD|");
    const int64_t caption_line = 7 * o.scale + g.gap;
    g.rows_y += caption_line;
    for (int64_t& y : g.row_y) y += caption_line;
    g.height += caption_line;
    ASSERT_EQ(image.width, g.width);
    ASSERT_EQ(image.height, g.height);
    expect_text(image, g.gap, g.gap, o.caption, o.scale);
    for (size_t i = 0; i < layout.depths.size(); ++i) {
      const int64_t d = layout.depths[i];
      for (int j = 0; j < 5; ++j) {
        const train::PanelColumn& c = columns[size_t(j)];
        expect_tile(
            image, g.tile_x(i, j), g.row_y[i], g.tiles[i], v.H, v.W,
            [&](int64_t r, int64_t col) {
              const float value = v.at(c.volume, d, r, col);
              return c.error ? train::error_colour(double(value) / o.error_max) : grey(value);
            },
            layout.labels[i] + " " + c.title);
      }
      expect_text(image, g.gap, g.row_y[i], layout.labels[i], o.scale);
    }
    for (int j = 0; j < 5; ++j) {
      const std::string& title = columns[size_t(j)].title;
      expect_text(image, g.column_x(j) + (g.column_width - expected_text_width(title, o.scale)) / 2,
                  g.gap + caption_line, title, o.scale);
    }
    o.caption = std::string(200, 'W');
    EXPECT_EQ(train::render_slices_panel(columns, o).width, 2 * g.gap + expected_text_width(o.caption, o.scale));
  }
  expect_error_mentions([&] { train::render_slices_panel({}, PanelOptions{}); }, {"render_slices_panel", "no columns"});
  expect_error_mentions(
      [&] { train::render_slices_panel({{"LD", v.ld}, {"SMALL", random_tensor(Shape{13, 11, 6}, 1)}}, PanelOptions{}); },
      {"render_slices_panel", "column 'SMALL'", "[13, 11, 6]", "column 'LD'"});
}

TEST(Panels, OrthogonalPanelShowsThePlanesThroughTheCentre) {
  const Volumes v = random_volumes(13, 11, 7, 3);
  for (const PanelOptions& o : option_sets()) {
    const RgbImage image = train::render_orthogonal_panel(v.ld, v.sr, v.hd, o);
    const int64_t d = v.D / 2, h = v.H / 2, w = v.W / 2;
    const std::vector<std::string> labels{"AXIAL Z 6", "CORONAL Y 5", "SAGITTAL X 3"};
    const Geometry g = expected_three_view_geometry(v, o, labels);
    ASSERT_EQ(image.width, g.width);
    ASSERT_EQ(image.height, g.height);
    expect_row(image, g, 0, v, o, v.H, v.W, [&](const Tensor& t, int64_t r, int64_t c) { return v.at(t, d, r, c); },
               [&](int64_t r, int64_t c) { return v.error(d, r, c); }, "axial");
    expect_row(image, g, 1, v, o, v.D, v.W, [&](const Tensor& t, int64_t r, int64_t c) { return v.at(t, r, h, c); },
               [&](int64_t r, int64_t c) { return v.error(r, h, c); }, "coronal");
    expect_row(image, g, 2, v, o, v.D, v.H, [&](const Tensor& t, int64_t r, int64_t c) { return v.at(t, r, c, w); },
               [&](int64_t r, int64_t c) { return v.error(r, c, w); }, "sagittal");
    for (size_t i = 0; i < labels.size(); ++i) expect_text(image, g.gap, g.row_y[i], labels[i], o.scale);
  }
}

TEST(Panels, MipPanelShowsMaximaAlongEachAxis) {
  const Volumes v = random_volumes(13, 11, 7, 4);
  // The maximum of f over the axis `axis` at plane position (r, c).
  auto ray_max = [&](int axis, int64_t r, int64_t c, const std::function<float(int64_t, int64_t, int64_t)>& f) {
    float m = -std::numeric_limits<float>::infinity();
    const int64_t n = axis == 0 ? v.D : axis == 1 ? v.H : v.W;
    for (int64_t k = 0; k < n; ++k)
      m = std::max(m, axis == 0 ? f(k, r, c) : axis == 1 ? f(r, k, c) : f(r, c, k));
    return m;
  };
  for (const PanelOptions& o : option_sets()) {
    const RgbImage image = train::render_mip_panel(v.ld, v.sr, v.hd, o);
    const Geometry g = expected_three_view_geometry(v, o, {"MIP D", "MIP H", "MIP W"});
    ASSERT_EQ(image.width, g.width);
    ASSERT_EQ(image.height, g.height);
    const int64_t plane_rows[3] = {v.H, v.D, v.D}, plane_cols[3] = {v.W, v.W, v.H};
    for (int axis = 0; axis < 3; ++axis) {
      expect_row(
          image, g, axis, v, o, plane_rows[axis], plane_cols[axis],
          [&](const Tensor& t, int64_t r, int64_t c) {
            return ray_max(axis, r, c, [&](int64_t d, int64_t h, int64_t w) { return v.at(t, d, h, w); });
          },
          [&](int64_t r, int64_t c) {
            return ray_max(axis, r, c, [&](int64_t d, int64_t h, int64_t w) { return v.error(d, h, w); });
          },
          "MIP along axis " + std::to_string(axis));
    }
  }
}

TEST(Panels, ColourBarIsTheMapBrightAtTheTopWithTicks) {
  const Volumes v = random_volumes(13, 11, 7, 5);
  for (const PanelOptions& o : option_sets()) {
    const RgbImage image = train::render_slices_panel(v.ld, v.sr, v.hd, o);
    const Geometry g = expected_slices_layout(v, o).geometry;
    double previous = std::numeric_limits<double>::infinity();
    for (int64_t r = 0; r < g.rows_height; ++r) {
      const double t = 1.0 - (r + 0.5) / double(g.rows_height);
      for (int64_t x = g.bar_x; x < g.bar_x + 4 * o.scale; ++x)
        ASSERT_EQ(pixel(image, x, g.rows_y + r), train::error_colour(t)) << "bar row " << r << " x " << x;
      // Non-increasing downwards; 1.0 allows for rounding each channel to a byte (0.5 per colour).
      const double l = luminance(pixel(image, g.bar_x, g.rows_y + r));
      EXPECT_LE(l, previous + 1.0) << "bar row " << r;
      previous = std::min(previous, l);
    }
    EXPECT_GT(luminance(pixel(image, g.bar_x, g.rows_y)), 240);
    EXPECT_LT(luminance(pixel(image, g.bar_x, g.rows_y + g.rows_height - 1)), 5);
    // Tick labels: error_max at the top, 0 at the bottom, error_max / 2 centred when there is room.
    const int64_t label_x = g.bar_x + 4 * o.scale + g.gap, label_travel = g.rows_height - 7 * o.scale;
    expect_text(image, label_x, g.rows_y, train::format_tick(o.error_max), o.scale);
    expect_text(image, label_x, g.rows_y + label_travel, "0", o.scale);
    if (g.ticks.size() == 3) {
      expect_text(image, label_x, g.rows_y + std::llround(0.5 * double(label_travel)),
                  train::format_tick(o.error_max / 2), o.scale);
    }
  }
}

TEST(Panels, MoreSlicesThanTheVolumeHasShowsEachOnce) {
  const Volumes v = random_volumes(3, 5, 4, 6);
  PanelOptions o;
  o.slices = 6;
  const RgbImage image = train::render_slices_panel(v.ld, v.sr, v.hd, o);
  const Geometry g = expected_geometry(o, {"Z 0", "Z 1", "Z 2"}, std::vector<TileSize>(3, {10, 8}));
  ASSERT_EQ(image.width, g.width);
  ASSERT_EQ(image.height, g.height);
  for (int64_t d = 0; d < 3; ++d) {
    expect_text(image, g.gap, g.row_y[d], "Z " + std::to_string(d), o.scale);
    expect_row(image, g, d, v, o, v.H, v.W, [&](const Tensor& t, int64_t r, int64_t c) { return v.at(t, d, r, c); },
               [&](int64_t r, int64_t c) { return v.error(d, r, c); }, "slice " + std::to_string(d));
  }
}

TEST(Panels, OneVoxelVolumeStillFitsTheColourBar) {
  const Volumes v = random_volumes(1, 1, 1, 7);
  PanelOptions o;
  o.scale = 1;
  const RgbImage image = train::render_orthogonal_panel(v.ld, v.sr, v.hd, o);
  const Geometry g = expected_geometry(o, {"AXIAL Z 0", "CORONAL Y 0", "SAGITTAL X 0"},
                                       std::vector<TileSize>(3, {1, 1}));
  EXPECT_EQ(g.rows_height, 3 * 7 + 2 * 2);  // three text-high rows are more than the 24s minimum
  ASSERT_EQ(image.width, g.width);
  ASSERT_EQ(image.height, g.height);
  EXPECT_EQ(pixel(image, g.tile_x(1, 0), g.row_y[1]), grey(v.at(v.ld, 0, 0, 0)));
  const RgbImage single = train::render_slices_panel(v.ld, v.sr, v.hd, o);
  const Geometry gs = expected_geometry(o, {"Z 0"}, {{1, 1}});
  EXPECT_EQ(gs.rows_height, 24);  // one 7-pixel row, stretched
  EXPECT_EQ(single.height, gs.height);
  EXPECT_EQ(pixel(single, gs.tile_x(0, 3), gs.row_y[0]), train::error_colour(v.error(0, 0, 0) / o.error_max));
}

TEST(Panels, NanVoxelsShowMagenta) {
  Volumes v = random_volumes(5, 6, 7, 8);
  v.ld.data<float>()[(2 * 6 + 3) * 7 + 4] = std::numeric_limits<float>::quiet_NaN();
  v.sr.data<float>()[(2 * 6 + 1) * 7 + 1] = std::numeric_limits<float>::quiet_NaN();
  PanelOptions o;
  o.slices = 1;  // d = 5 / 2 = 2
  const RgbImage image = train::render_slices_panel(v.ld, v.sr, v.hd, o);
  const Geometry g = expected_geometry(o, {"Z 2"}, {{12, 14}});
  const Rgb magenta{255, 0, 255};
  EXPECT_EQ(pixel(image, g.tile_x(0, 0) + 4 * 2, g.row_y[0] + 3 * 2), magenta);  // LD at (h 3, w 4)
  EXPECT_EQ(pixel(image, g.tile_x(0, 1) + 1 * 2, g.row_y[0] + 1 * 2), magenta);  // SR at (h 1, w 1)
  EXPECT_EQ(pixel(image, g.tile_x(0, 3) + 1 * 2, g.row_y[0] + 1 * 2), magenta);  // and its error
  EXPECT_NE(pixel(image, g.tile_x(0, 2) + 1 * 2, g.row_y[0] + 1 * 2), magenta);  // HD is fine there
  const RgbImage mip = train::render_mip_panel(v.ld, v.sr, v.hd, o);
  const Geometry gm = expected_geometry(
      o, {"MIP D", "MIP H", "MIP W"}, {{12, 14}, {10, 14}, {10, 12}});
  EXPECT_EQ(pixel(mip, gm.tile_x(0, 0) + 4 * 2, gm.row_y[0] + 3 * 2), magenta);  // the ray through the NaN
}

TEST(Panels, RefusesBadInputsByName) {
  const Volumes v = random_volumes(4, 5, 6, 9);
  const Tensor other = random_tensor(Shape{4, 5, 7}, 10);
  expect_error_mentions([&] { train::render_slices_panel(v.ld, other, v.hd, {}); },
                        {"render_slices_panel", "sr", "[4, 5, 7]", "[4, 5, 6]"});
  expect_error_mentions([&] { train::render_mip_panel(v.ld, v.sr, to_double(v.hd), {}); },
                        {"render_mip_panel", "hd", "float64", "float32"});
  expect_error_mentions([&] { train::render_orthogonal_panel(v.ld.reshape(Shape{20, 6}), v.sr, v.hd, {}); },
                        {"ld", "[20, 6]", "[D, H, W]"});
  expect_error_mentions([&] { train::render_slices_panel(Tensor(), v.sr, v.hd, {}); }, {"ld", "undefined"});
  PanelOptions o;
  o.spacing = {1, 0, 1};
  expect_error_mentions([&] { train::render_slices_panel(v.ld, v.sr, v.hd, o); }, {"spacing[1]", "0"});
  o = {};
  o.error_max = -0.5;
  expect_error_mentions([&] { train::render_slices_panel(v.ld, v.sr, v.hd, o); }, {"error_max", "-0.5"});
  o = {};
  o.slices = 0;
  expect_error_mentions([&] { train::render_slices_panel(v.ld, v.sr, v.hd, o); }, {"slices", "0"});
  o = {};
  o.spacing = {1e9, 1, 1};
  expect_error_mentions([&] { train::render_orthogonal_panel(v.ld, v.sr, v.hd, o); },
                        {"render_orthogonal_panel", "4 voxels at spacing 1e+09", "pixels"});
  o = {};
  o.scale = 0;
  expect_error_mentions([&] { train::render_slices_panel(v.ld, v.sr, v.hd, o); }, {"scale", "0"});
}

// ---- primitives ----------------------------------------------------------------------------------

TEST(Panels, GreyScaleMapsTheIntensityWindow) {
  EXPECT_EQ(train::intensity_to_grey(-1.0f), 0);
  EXPECT_EQ(train::intensity_to_grey(1.0f), 255);
  EXPECT_EQ(train::intensity_to_grey(0.0f), 128);  // 127.5 rounds up
  EXPECT_EQ(train::intensity_to_grey(-0.5f), 64);   // 63.75
  EXPECT_EQ(train::intensity_to_grey(-7.0f), 0);
  EXPECT_EQ(train::intensity_to_grey(3.0f), 255);
  for (int i = 0; i < 200; ++i) EXPECT_LE(train::intensity_to_grey(-1 + i / 100.0f), train::intensity_to_grey(-1 + (i + 1) / 100.0f));
}

TEST(Panels, ErrorColourMapIsDarkToBrightAndSaturates) {
  EXPECT_EQ(train::error_colour(0.0), (Rgb{0, 0, 4}));
  EXPECT_EQ(train::error_colour(0.5), (Rgb{188, 55, 84}));
  EXPECT_EQ(train::error_colour(1.0), (Rgb{252, 255, 164}));
  EXPECT_EQ(train::error_colour(0.125), (Rgb{44, 8, 57}));  // halfway between the first two points
  EXPECT_EQ(train::error_colour(1.7), train::error_colour(1.0));
  EXPECT_EQ(train::error_colour(-0.2), train::error_colour(0.0));
  // Luminance rises along the map: at the control points strictly, between them within the
  // rounding of three channels to bytes (0.5 each, weights summing to 1, for each of two samples).
  double previous = -1;
  for (int i = 0; i <= 1000; ++i) {
    const double l = luminance(train::error_colour(i / 1000.0));
    EXPECT_GE(l, previous - 1.0) << "t = " << i / 1000.0;
    previous = std::max(previous, l);
  }
  for (int i = 0; i < 4; ++i)
    EXPECT_LT(luminance(train::error_colour(i / 4.0)) + 30, luminance(train::error_colour((i + 1) / 4.0)));
}

TEST(Panels, TickLabelsHaveThreeSignificantDigits) {
  EXPECT_EQ(train::format_tick(0), "0");
  EXPECT_EQ(train::format_tick(0.5), "0.5");
  EXPECT_EQ(train::format_tick(0.25), "0.25");
  EXPECT_EQ(train::format_tick(0.15), "0.15");
  EXPECT_EQ(train::format_tick(0.005), "0.005");
  EXPECT_EQ(train::format_tick(0.123456), "0.123");
  EXPECT_EQ(train::format_tick(2), "2");
  EXPECT_EQ(train::format_tick(1000), "1000");
  EXPECT_EQ(train::format_tick(12.345), "12.3");
}

TEST(Panels, FontDrawsEveryCharacterDistinctly) {
  const std::string characters = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ|-. ";
  std::vector<std::vector<uint8_t>> drawn;  // at scale 1, in the order of `characters`
  for (char c : characters) {
    for (int scale : {1, 3}) {
      RgbImage image{6 * scale, 7 * scale, std::vector<uint8_t>(size_t(6 * 7 * 3 * scale * scale), 0)};
      train::draw_text(image, 0, 0, std::string(1, c), scale, {255, 255, 255});
      int64_t lit = 0;
      for (int64_t y = 0; y < image.height; ++y)
        for (int64_t x = 0; x < image.width; ++x) {
          if (pixel(image, x, y)[0] == 0) continue;
          ++lit;
          EXPECT_LT(x, 5 * scale) << "'" << c << "' touches the spacing column";
          // Font pixels are scale x scale blocks: a lit pixel's whole block is lit.
          EXPECT_EQ(pixel(image, x / scale * scale, y / scale * scale)[0], 255) << "'" << c << "'";
        }
      if (c == ' ') {
        EXPECT_EQ(lit, 0);
      } else {
        EXPECT_GE(lit, 2 * scale * scale) << "'" << c << "'";
      }
      if (scale == 1) {
        for (size_t k = 0; k < drawn.size(); ++k)
          EXPECT_FALSE(drawn[k] == image.rgb) << "'" << c << "' looks like '" << characters[k] << "'";
        drawn.push_back(image.rgb);
      }
    }
  }
  EXPECT_EQ(train::text_width("", 2), 0);
  EXPECT_EQ(train::text_width("SR", 1), 11);
  EXPECT_EQ(train::text_width("|SR-HD|", 3), 123);
  RgbImage image{4, 4, std::vector<uint8_t>(48, 0)};
  train::draw_text(image, -3, 2, "W", 2, {9, 9, 9});  // clipped, not out of bounds
  expect_error_mentions([&] { train::draw_text(image, 0, 0, "Sr", 1, {1, 1, 1}); }, {"'r'", "no glyph"});
}

// A smooth phantom (a body ellipse with organs and bone), HD as truth, LD with noise, SR closer:
// for looking at the panels (CTSR_TEST_KEEP_DIR) and for checking they encode.
TEST(Panels, PhantomPanelsEncode) {
  const int64_t D = 40, H = 96, W = 80;
  const Tensor noise = random_tensor(Shape{D, H, W}, 77, DType::float32, -0.35, 0.35);
  const Tensor wobble = random_tensor(Shape{D, H, W}, 78, DType::float32, -0.08, 0.08);
  Tensor hd = Tensor::empty(Shape{D, H, W}), ld = Tensor::empty(Shape{D, H, W}), sr = Tensor::empty(Shape{D, H, W});
  for (int64_t d = 0; d < D; ++d)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w) {
        const double z = (d - D / 2.0) / (D / 2.0), y = (h - H / 2.0) / (H / 2.2), x = (w - W / 2.0) / (W / 2.2);
        double v = -1.0;                                                    // air
        if (x * x + y * y * 1.3 + z * z * 0.3 < 0.8) v = -0.1;             // soft tissue
        if ((x - 0.3) * (x - 0.3) + y * y + z * z < 0.08) v = 0.3;          // an organ
        if ((x + 0.35) * (x + 0.35) + (y - 0.2) * (y - 0.2) < 0.02) v = 1.0;  // a bone column
        // A low-contrast lesion that SR misses: the error map should show it.
        const double lesion = (x + 0.1) * (x + 0.1) + (y + 0.35) * (y + 0.35) + z * z * 0.05 < 0.02 ? 0.3 : 0.0;
        const int64_t i = (d * H + h) * W + w;
        hd.data<float>()[i] = static_cast<float>(v + lesion);
        ld.data<float>()[i] = static_cast<float>(v + lesion) + noise.data<float>()[i];
        sr.data<float>()[i] = static_cast<float>(v) + wobble.data<float>()[i];
      }
  PanelOptions o;
  o.spacing = {2.5, 0.8, 0.8};
  const Volumes tiny = random_volumes(13, 11, 7, 79);  // tiles narrower than the titles
  const std::vector<std::pair<std::string, RgbImage>> panels{
      {"slices", train::render_slices_panel(ld, sr, hd, o)},
      {"orthogonal", train::render_orthogonal_panel(ld, sr, hd, o)},
      {"mip", train::render_mip_panel(ld, sr, hd, o)},
      {"tiny_orthogonal", train::render_orthogonal_panel(tiny.ld, tiny.sr, tiny.hd, option_sets()[1])}};
  for (const auto& [name, image] : panels) {
    const std::vector<uint8_t> png = train::encode_png(image);
    EXPECT_TRUE(train::decode_png(png, name).rgb == image.rgb) << name;
    if (const char* keep = std::getenv("CTSR_TEST_KEEP_DIR"))
      train::write_png(std::filesystem::path(keep) / ("panel_" + name + ".png"), image);
  }
}

}  // namespace
}  // namespace ctsr::test
