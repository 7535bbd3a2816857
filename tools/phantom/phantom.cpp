// Synthetic CT phantoms and their low-dose / low-resolution degradations (see phantom.h).
#include "tools/phantom/phantom.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <numbers>

#include "runtime/error.h"
#include "runtime/philox.h"

namespace ctsr::tools {
namespace {

constexpr double kPi = std::numbers::pi;
constexpr int64_t kMinSide = 16;    // below this the anatomy is a few pixels wide and means nothing
constexpr int64_t kMaxSide = 1024;  // a 1024^3 float volume is already 4 GiB
// In-plane supersampling: a voxel's HU is the mean over kSub x kSub points, the partial-volume
// edges of a real scan. Sharp (point-sampled) 1000 HU edges are far from band-limited: their
// projections alias on the detector, and filtered back-projection spreads that over the soft
// tissue as faint streaks even without noise, 15 HU mean absolute error with ram-lak, as large as
// the lesions' contrast; with 3 x 3 points, 8 HU (ram-lak) and 2 HU (hann). Along z a slice is
// sampled at its centre: the thick-slice degradation is where z resolution matters.
constexpr int kSub = 3;

// ---- random parameters -----------------------------------------------------------------------
// The draws of one structure of one phantom: counter (structure << 32 | call), offset
// stream_offset(kPhantomShapePurpose, index), key seed. Each structure has its own counter range, so
// turning lesions off, or a structure drawing one number more, leaves the others unchanged.
class Draws {
 public:
  Draws(uint64_t seed, uint64_t index, uint32_t structure)
      : seed_(seed), offset_(philox::stream_offset(kPhantomShapePurpose, index)),
        counter_(uint64_t(structure) << 32) {}

  // [0, 1) with 53 random bits: two Philox words per double, two doubles per call.
  double uniform() {
    if (used_ == 2) {
      words_ = philox::philox4x32_10(counter_++, offset_, seed_);
      used_ = 0;
    }
    const uint32_t hi = words_.v[2 * used_], lo = words_.v[2 * used_ + 1];
    ++used_;
    return double((uint64_t(hi) << 21) ^ (lo >> 11)) * 0x1p-53;
  }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  int integer(int lo, int hi) { return lo + std::min(int(uniform() * (hi - lo + 1)), hi - lo); }  // [lo, hi]
  double sign() { return uniform() < 0.5 ? -1.0 : 1.0; }
  double phase() { return uniform(0.0, 2.0 * kPi); }

 private:
  uint64_t seed_, offset_, counter_;
  philox::Words words_{};
  int used_ = 2;
};

enum Structure : uint32_t { kCounts = 0, kBody = 1, kSpine = 2, kRibs = 3, kOrgan = 16, kAirOrgan = 32, kLesion = 64 };

// Coordinates: each axis mapped to [-1, 1] over the field of view (voxel centres at (i + 0.5) / n *
// 2 - 1); y grows towards the posterior (the image's row order), z along the slices.
struct Body {
  double semi_x, semi_y;       // at z = 0
  double length_z;             // ellipsoid semi-axis along z, longer than the volume: every slice has body
  double wobble_amplitude[4];  // centre x, centre y, semi x, semi y vary smoothly with z
  double wobble_frequency[4], wobble_phase[4];
  double fat_thickness, fat_variation, fat_frequency, fat_phase;
  double soft_hu, fat_hu;
};

struct Spine {
  double radius_x, radius_y;  // vertebral body
  double drift_amplitude, drift_frequency, drift_phase;
  double disc_period, disc_phase, disc_fraction;
  double cancellous_hu, cortical_hu, disc_hu;
};

struct Ribs {
  bool present;
  double period, phase, threshold;  // ribs show in slices where cos(2 pi z / period + phase) > threshold
  double radius, thickness;         // band, as a fraction of the inner body ellipse
  double hu;
};

// An ellipsoid whose centre drifts along z (linearly and along a sine), rotated in plane.
struct Blob {
  double center_x, center_y, center_z;
  double semi_x, semi_y, semi_z, angle;
  double drift_x, drift_y;                        // per unit z
  double meander_amplitude, meander_frequency, meander_phase;
  double hu;
};

struct Model {
  Body body;
  Spine spine;
  Ribs ribs;
  std::vector<Blob> organs, air_organs, lesions;
};

// The body's outer ellipse in slice z.
struct Ellipse {
  double cx, cy, ax, ay;
  double radius2(double x, double y) const {  // (elliptic radius)^2: <= 1 inside
    const double ex = (x - cx) / ax, ey = (y - cy) / ay;
    return ex * ex + ey * ey;
  }
};

Ellipse body_outer(const Body& b, double z) {
  const double taper = std::sqrt(std::max(0.05, 1.0 - (z / b.length_z) * (z / b.length_z)));
  double w[4];
  for (int k = 0; k < 4; ++k) w[k] = b.wobble_amplitude[k] * std::sin(b.wobble_frequency[k] * z + b.wobble_phase[k]);
  return {w[0], w[1], b.semi_x * taper * (1.0 + w[2]), b.semi_y * taper * (1.0 + w[3])};
}

Ellipse body_inner(const Body& b, double z) {
  Ellipse e = body_outer(b, z);
  const double t = b.fat_thickness * (1.0 + b.fat_variation * std::sin(b.fat_frequency * z + b.fat_phase));
  e.ax -= t;
  e.ay -= 0.8 * t;  // the anterior-posterior layer is a little thinner
  return e;
}

// A random point well inside the inner body of slice z (uniform over 0.7 of its area-ish).
void point_in_body(Draws& d, const Body& body, double z, double reach, double* x, double* y) {
  const Ellipse e = body_inner(body, z);
  const double r = reach * std::sqrt(d.uniform()), a = d.phase();
  *x = e.cx + r * std::cos(a) * e.ax;
  *y = e.cy + r * std::sin(a) * e.ay;
}

Model draw_model(const PhantomOptions& options) {
  const uint64_t seed = options.seed, index = options.index;
  Model m;
  {
    Draws d(seed, index, kBody);
    Body& b = m.body;
    b.semi_x = d.uniform(0.80, 0.92);
    b.semi_y = d.uniform(0.58, 0.74);
    b.length_z = d.uniform(1.6, 2.6);
    const double amplitude[4] = {0.03, 0.03, 0.04, 0.04};
    for (int k = 0; k < 4; ++k) {
      b.wobble_amplitude[k] = amplitude[k] * d.uniform();
      b.wobble_frequency[k] = d.uniform(1.0, 4.0);
      b.wobble_phase[k] = d.phase();
    }
    b.fat_thickness = d.uniform(0.05, 0.11);
    b.fat_variation = d.uniform(0.1, 0.35);
    b.fat_frequency = d.uniform(1.0, 5.0);
    b.fat_phase = d.phase();
    b.soft_hu = d.uniform(30.0, 50.0);
    b.fat_hu = d.uniform(-120.0, -80.0);
  }
  {
    Draws d(seed, index, kSpine);
    Spine& s = m.spine;
    s.radius_x = d.uniform(0.10, 0.14);
    s.radius_y = s.radius_x * d.uniform(0.75, 0.9);
    s.drift_amplitude = d.uniform(0.0, 0.04);
    s.drift_frequency = d.uniform(1.0, 3.0);
    s.drift_phase = d.phase();
    s.disc_period = d.uniform(0.3, 0.5);  // 6..10 vertebrae over the volume's length
    s.disc_phase = d.uniform();
    s.disc_fraction = d.uniform(0.12, 0.22);
    s.cancellous_hu = d.uniform(250.0, 400.0);
    s.cortical_hu = d.uniform(700.0, 1000.0);
    s.disc_hu = d.uniform(70.0, 100.0);
  }
  {
    Draws d(seed, index, kRibs);
    Ribs& r = m.ribs;
    r.present = d.uniform() < 0.7;
    r.period = d.uniform(0.25, 0.45);
    r.phase = d.phase();
    r.threshold = d.uniform(0.2, 0.5);
    r.radius = d.uniform(0.86, 0.92);
    r.thickness = d.uniform(0.05, 0.08);
    r.hu = d.uniform(500.0, 900.0);
  }
  Draws counts(seed, index, kCounts);
  const int organ_count = counts.integer(2, 3), air_count = counts.integer(1, 2), lesion_count = counts.integer(2, 5);
  for (int k = 0; k < organ_count; ++k) {
    Draws d(seed, index, kOrgan + uint32_t(k));
    Blob o{};
    o.center_z = d.uniform(-0.7, 0.7);
    point_in_body(d, m.body, o.center_z, 0.55, &o.center_x, &o.center_y);
    o.semi_x = d.uniform(0.15, 0.32);
    o.semi_y = d.uniform(0.12, 0.28);
    o.semi_z = d.uniform(0.35, 1.0);
    o.angle = d.uniform(0.0, kPi);
    o.drift_x = d.uniform(-0.15, 0.15);
    o.drift_y = d.uniform(-0.15, 0.15);
    // Liver, spleen, kidney, muscle: a few tens of HU apart, so organs are subtle as in real CT.
    o.hu = m.body.soft_hu + d.sign() * d.uniform(8.0, 25.0);
    m.organs.push_back(o);
  }
  for (int k = 0; k < air_count; ++k) {
    Draws d(seed, index, kAirOrgan + uint32_t(k));
    Blob a{};
    const bool lung = d.uniform() < 0.5;
    a.center_z = d.uniform(-0.5, 0.5);
    if (lung) {  // a lung-like lobe beside the midline, long along z
      a.center_x = d.sign() * d.uniform(0.30, 0.45) * m.body.semi_x;
      a.center_y = d.uniform(-0.25, 0.1) * m.body.semi_y;
      a.semi_x = d.uniform(0.18, 0.28);
      a.semi_y = d.uniform(0.22, 0.36);
      a.semi_z = d.uniform(0.6, 1.4);
      a.angle = d.uniform(-0.3, 0.3);
      a.hu = d.uniform(-900.0, -800.0);
    } else {  // a gas-filled bowel loop: thin, meandering along z
      point_in_body(d, m.body, a.center_z, 0.5, &a.center_x, &a.center_y);
      a.semi_x = d.uniform(0.06, 0.13);
      a.semi_y = d.uniform(0.06, 0.13);
      a.semi_z = d.uniform(0.4, 1.2);
      a.angle = d.uniform(0.0, kPi);
      a.meander_amplitude = d.uniform(0.05, 0.15);
      a.meander_frequency = d.uniform(3.0, 8.0);
      a.meander_phase = d.phase();
      a.hu = d.uniform(-1000.0, -950.0);
    }
    m.air_organs.push_back(a);
  }
  if (options.lesions) {
    for (int k = 0; k < lesion_count; ++k) {
      Draws d(seed, index, kLesion + uint32_t(k));
      Blob l{};
      l.center_z = d.uniform(-0.85, 0.85);
      point_in_body(d, m.body, l.center_z, 0.75, &l.center_x, &l.center_y);
      const double radius = d.uniform(0.05, 0.12);  // 1.6 to 3.8 voxels on a 64 grid
      l.semi_x = radius;
      l.semi_y = radius * d.uniform(0.8, 1.25);
      l.semi_z = radius * d.uniform(0.8, 1.25);
      // Low contrast: what makes lesions hard to see in noisy low-dose images.
      l.hu = d.sign() * d.uniform(10.0, 30.0);
      m.lesions.push_back(l);
    }
  }
  return m;
}

// A blob's in-plane cross-section in slice z: centre, and the squared scale of its ellipse
// (<= 0: the blob does not reach this slice).
struct Section {
  double cx, cy, cos_a, sin_a, ax, ay, scale2;
  bool contains(double x, double y) const {
    if (scale2 <= 0.0) return false;
    const double dx = x - cx, dy = y - cy;
    const double u = (cos_a * dx + sin_a * dy) / ax, v = (-sin_a * dx + cos_a * dy) / ay;
    return u * u + v * v <= scale2;
  }
};

Section section(const Blob& b, double z) {
  const double dz = z - b.center_z, meander = b.meander_amplitude * std::sin(b.meander_frequency * z + b.meander_phase);
  return {b.center_x + b.drift_x * dz + meander,
          b.center_y + b.drift_y * dz + 0.8 * b.meander_amplitude * std::cos(b.meander_frequency * z + b.meander_phase),
          std::cos(b.angle), std::sin(b.angle), b.semi_x, b.semi_y, 1.0 - (dz / b.semi_z) * (dz / b.semi_z)};
}

// One axial slice of a phantom: the model's structures cut at height z, and the tissue at any
// in-plane point.
class SliceModel {
 public:
  SliceModel(const Model& m, double z) : m_(m), outer_(body_outer(m.body, z)), inner_(body_inner(m.body, z)) {
    for (const Blob& b : m.organs) organs_.push_back(section(b, z));
    for (const Blob& b : m.air_organs) airs_.push_back(section(b, z));
    for (const Blob& b : m.lesions) lesions_.push_back(section(b, z));
    // Vertebra: placed from the posterior inner boundary so that it and its spinous process
    // (reaching 2.1 radius_y behind the vertebral centre) stay inside the soft tissue.
    const Spine& sp = m.spine;
    spine_x_ = inner_.cx + sp.drift_amplitude * std::sin(sp.drift_frequency * z + sp.drift_phase);
    spine_y_ = inner_.cy + inner_.ay - 2.1 * sp.radius_y - 0.05;
    const double disc_position = z / sp.disc_period + sp.disc_phase;
    disc_ = disc_position - std::floor(disc_position) < sp.disc_fraction;
    ribs_ = m.ribs.present && std::cos(2.0 * kPi * z / m.ribs.period + m.ribs.phase) > m.ribs.threshold;
  }

  // Structures are painted in order, later ones over earlier ones: body, fat, organs, air organs,
  // lesions (on soft tissue and organs only), ribs, vertebra.
  Tissue classify(double x, double y, double* hu) const {
    if (outer_.radius2(x, y) > 1.0) {
      *hu = -1000.0;
      return Tissue::outside_air;
    }
    const double e2 = inner_.radius2(x, y);
    if (e2 > 1.0) {
      *hu = m_.body.fat_hu;
      return Tissue::fat;
    }
    double v = m_.body.soft_hu;
    Tissue label = Tissue::soft_tissue;
    for (size_t n = 0; n < organs_.size(); ++n)
      if (organs_[n].contains(x, y)) {
        v = m_.organs[n].hu;
        label = Tissue::organ;
      }
    for (size_t n = 0; n < airs_.size(); ++n)
      if (airs_[n].contains(x, y)) {
        v = m_.air_organs[n].hu;
        label = Tissue::air_organ;
      }
    // The first lesion that covers a point decides it: overlapping lesions do not add up.
    if (label == Tissue::soft_tissue || label == Tissue::organ)
      for (size_t n = 0; n < lesions_.size(); ++n)
        if (lesions_[n].contains(x, y)) {
          v += m_.lesions[n].hu;
          label = Tissue::lesion;
          break;
        }
    if (ribs_) {
      const Ribs& r = m_.ribs;
      const double e = std::sqrt(e2);
      if (e >= r.radius && e <= r.radius + r.thickness) {
        // Lateral and postero-lateral arcs: none in front (costal cartilage) nor at the spine.
        const double angle = std::atan2((y - inner_.cy) / inner_.ay, (x - inner_.cx) / inner_.ax);  // +pi/2: back
        const bool front = angle < -0.3 * kPi && angle > -0.7 * kPi;
        const bool back = angle > 0.4 * kPi && angle < 0.6 * kPi;
        if (!front && !back) {
          v = r.hu;
          label = Tissue::bone;
        }
      }
    }
    const Spine& sp = m_.spine;
    const double vx = (x - spine_x_) / sp.radius_x, vy = (y - spine_y_) / sp.radius_y;
    const double vertebra_r2 = vx * vx + vy * vy;
    const double px = (x - spine_x_) / (0.35 * sp.radius_x), py = (y - spine_y_ - 1.55 * sp.radius_y) / (0.55 * sp.radius_y);
    const bool process = px * px + py * py <= 1.0;
    if (vertebra_r2 <= 1.0 || process) {
      if (disc_) {
        v = sp.disc_hu;
        label = Tissue::soft_tissue;
      } else {
        constexpr double kMarrow = 0.75;  // cortical shell: the outer quarter of the vertebral radius
        v = process || vertebra_r2 >= kMarrow * kMarrow ? sp.cortical_hu : sp.cancellous_hu;
        label = Tissue::bone;
      }
    }
    *hu = v;
    return label;
  }

 private:
  const Model& m_;
  Ellipse outer_, inner_;
  std::vector<Section> organs_, airs_, lesions_;
  double spine_x_, spine_y_;
  bool disc_, ribs_;
};

}  // namespace

PhantomSize parse_phantom_size(const std::string& text) {
  std::vector<int64_t> sides;
  size_t pos = 0;
  bool ok = !text.empty();
  while (ok && pos <= text.size()) {
    size_t end = text.find('x', pos);
    if (end == std::string::npos) end = text.size();
    const std::string part = text.substr(pos, end - pos);
    ok = !part.empty() && part.size() <= 6 &&
         std::all_of(part.begin(), part.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
    if (ok) sides.push_back(std::stoll(part));
    pos = end + 1;
  }
  CTSR_CHECK(ok && (sides.size() == 1 || sides.size() == 3), "--size '", text,
             "' is not a size: expected one number for a cube (64) or DxHxW (48x64x64)");
  for (int64_t side : sides)
    CTSR_CHECK(side >= kMinSide && side <= kMaxSide, "--size '", text, "': every side must be in [", kMinSide, ", ",
               kMaxSide, "], got ", side);
  if (sides.size() == 1) return {sides[0], sides[0], sides[0]};
  return {sides[0], sides[1], sides[2]};
}

Phantom make_phantom(const PhantomOptions& options) {
  const int64_t D = options.size.depth, H = options.size.height, W = options.size.width;
  CTSR_CHECK(D >= kMinSide && H >= kMinSide && W >= kMinSide && D <= kMaxSide && H <= kMaxSide && W <= kMaxSide,
             "make_phantom: size ", D, "x", H, "x", W, " has a side outside [", kMinSide, ", ", kMaxSide, "]");
  const Model m = draw_model(options);
  Phantom out;
  out.hu = Tensor::empty({D, H, W}, DType::float32);
  out.tissue = Tensor::empty({D, H, W}, DType::uint8);
  out.edge = Tensor::empty({D, H, W}, DType::uint8);
  float* hu = out.hu.data<float>();
  uint8_t* tissue = out.tissue.data<uint8_t>();
  uint8_t* edge = out.edge.data<uint8_t>();
  // Voxel centres on [-1, 1]; in plane, kSub x kSub points per pixel at offsets (-1/3, 0, 1/3).
  auto axis = [](double i, int64_t n) { return (i + 0.5) / double(n) * 2.0 - 1.0; };
  static_assert(kSub % 2 == 1, "the middle subsample is the voxel centre, whose tissue labels the voxel");

  // Slices are independent and every value is a pure function of the model: any thread count gives
  // the same bits.
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < D; ++k) {
    const SliceModel slice(m, axis(double(k), D));
    for (int64_t j = 0; j < H; ++j)
      for (int64_t i = 0; i < W; ++i) {
        double sum = 0.0;
        Tissue centre = Tissue::outside_air, first = Tissue::outside_air;
        bool mixed = false;
        for (int b = 0; b < kSub; ++b)
          for (int a = 0; a < kSub; ++a) {
            double v;
            const Tissue t = slice.classify(axis(double(i) + double(2 * a - kSub + 1) / double(2 * kSub), W),
                                            axis(double(j) + double(2 * b - kSub + 1) / double(2 * kSub), H), &v);
            sum += v;
            if (a == 0 && b == 0) first = t;
            if (a == kSub / 2 && b == kSub / 2) centre = t;
            mixed = mixed || t != first;
          }
        const int64_t at = (k * H + j) * W + i;
        hu[at] = float(sum / double(kSub * kSub));
        tissue[at] = uint8_t(centre);
        edge[at] = uint8_t(mixed);
      }
  }

  for (const Blob& b : m.lesions) {
    Lesion l;
    const double n[3] = {double(D), double(H), double(W)}, c[3] = {b.center_z, b.center_y, b.center_x},
                 r[3] = {b.semi_z, b.semi_y, b.semi_x};
    for (int a = 0; a < 3; ++a) {
      l.center_zyx[a] = (c[a] + 1.0) * 0.5 * n[a] - 0.5;
      l.radius_zyx[a] = r[a] * 0.5 * n[a];
    }
    l.contrast_hu = b.hu;
    out.lesions.push_back(l);
  }
  return out;
}

Tensor make_phantom_hu(const PhantomOptions& options) { return make_phantom(options).hu; }

}  // namespace ctsr::tools
