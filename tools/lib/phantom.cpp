// Synthetic CT phantoms and their low-dose / low-resolution degradations (see phantom.h).
#include "tools/lib/phantom.h"

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

void check_volume(const Tensor& hu, const char* op) {
  hu.check_defined(op);
  CTSR_CHECK(hu.ndim() == 3, op, ": the volume must be [D, H, W], got ", hu.shape().str());
  hu.check_dtype(DType::float32, op);
  hu.check_device(Device::cpu(), op);
}

// ---- tomography ----------------------------------------------------------------------------------
struct Views {
  std::vector<double> cos_theta, sin_theta;
  explicit Views(int64_t angles) : cos_theta(size_t(angles)), sin_theta(size_t(angles)) {
    for (int64_t a = 0; a < angles; ++a) {
      const double theta = kPi * double(a) / double(angles);
      cos_theta[size_t(a)] = std::cos(theta);
      sin_theta[size_t(a)] = std::sin(theta);
    }
  }
};

// floor(u) for u >= -1, by truncation (no libm call; the callers clamp u to [-1, n] first).
inline int64_t floor_from_minus_one(double u) { return int64_t(u + 1.0) - 1; }

// The ramp kernel at offsets -(bins - 1) .. bins - 1 (index n + bins - 1), detector spacing 1.
std::vector<double> ramp_kernel(int64_t bins, RampFilter filter) {
  // Kak & Slaney, "Principles of Computerized Tomographic Imaging", eq. 3.61: the band-limited ramp
  // sampled in space, h(0) = 1/4, h(n odd) = -1/(pi n)^2, h(n even) = 0. Convolving in space with
  // the whole kernel avoids the DC offset of a ramp sampled in frequency and any wrap-around.
  auto ram_lak = [](int64_t n) {
    if (n == 0) return 0.25;
    if (n % 2 == 0) return 0.0;
    return -1.0 / (kPi * kPi * double(n) * double(n));
  };
  std::vector<double> h(size_t(2 * bins - 1));
  for (int64_t n = -(bins - 1); n <= bins - 1; ++n) {
    double v = ram_lak(n);
    // Hann window 0.5 + 0.5 cos(2 pi f) (f in cycles per bin, zero at Nyquist) is
    // 0.5 + 0.25 e^{2 pi i f} + 0.25 e^{-2 pi i f}: in space, 0.5 h[n] + 0.25 (h[n-1] + h[n+1]).
    if (filter == RampFilter::hann) v = 0.5 * v + 0.25 * (ram_lak(n - 1) + ram_lak(n + 1));
    h[size_t(n + bins - 1)] = v;
  }
  return h;
}

// Parallel-beam projection and filtered back-projection of [H, W] slices, with its scratch
// buffers (one per thread). Interpolation reads a copy of the data with a zero border (one before,
// two after along each interpolated axis), so sample positions clamped to [-1, n] need no branch
// and contribute exactly zero outside.
class Tomograph {
 public:
  Tomograph(int64_t H, int64_t W, int64_t angles, int64_t bins, RampFilter filter)
      : H_(H), W_(W), angles_(angles), bins_(bins), views_(angles), kernel_(ramp_kernel(bins, filter)),
        padded_(size_t((H + 3) * (W + 3)), 0.0), filtered_(size_t(angles * (bins + 3)), 0.0),
        row_offset_(size_t(angles)) {}

  // Joseph's projector. f: [H, W] row-major; sinogram: [angles, bins].
  void project(const double* f, double* sinogram) {
    const int64_t pw = W_ + 3;
    // The copy with its zero border, and the rows and columns where the slice is not zero: rays
    // and steps outside them add nothing (most of a CT slice's corners are air).
    int64_t j0 = H_, j1 = -1, i0 = W_, i1 = -1;
    for (int64_t j = 0; j < H_; ++j)
      for (int64_t i = 0; i < W_; ++i) {
        const double v = f[j * W_ + i];
        padded_[size_t((j + 1) * pw + i + 1)] = v;
        if (v != 0.0) {
          j0 = std::min(j0, j), j1 = std::max(j1, j);
          i0 = std::min(i0, i), i1 = std::max(i1, i);
        }
      }
    std::fill(sinogram, sinogram + angles_ * bins_, 0.0);
    if (j1 < 0) return;
    const double* p = padded_.data();
    const double half_w = 0.5 * double(W_ - 1), half_h = 0.5 * double(H_ - 1), half_b = 0.5 * double(bins_ - 1);
    for (int64_t a = 0; a < angles_; ++a) {
      const double c = views_.cos_theta[size_t(a)], s = views_.sin_theta[size_t(a)];
      double* out = sinogram + a * bins_;
      // Closer to horizontal (|s| >= |c|): one sample per column at y = (t - x c) / s, each
      // standing for a path of 1/|s|; otherwise one per row at x = (t - y s) / c.
      const bool by_column = std::abs(s) >= std::abs(c);
      const int64_t across = by_column ? H_ : W_;
      const int64_t first_step = by_column ? i0 : j0, last_step = by_column ? i1 : j1;
      const double support_lo = double(by_column ? j0 : i0) - 1.0, support_hi = double(by_column ? j1 : i1) + 1.0;
      const double inv = 1.0 / (by_column ? s : c), along = by_column ? c : s;
      const double half_steps = by_column ? half_w : half_h, half_across = by_column ? half_h : half_w;
      const double length = std::abs(inv);
      // Position across at step n: start + n * slope (pixels of the slice).
      const double slope = -along * inv;
      // Bins whose rays can meet the support (its corners' t, one pixel of margin).
      double t_lo = 1e300, t_hi = -1e300;
      for (double x : {double(i0) - half_w - 1.0, double(i1) - half_w + 1.0})
        for (double y : {double(j0) - half_h - 1.0, double(j1) - half_h + 1.0}) {
          t_lo = std::min(t_lo, x * c + y * s);
          t_hi = std::max(t_hi, x * c + y * s);
        }
      const int64_t b0 = std::max<int64_t>(0, int64_t(std::floor(t_lo + half_b)));
      const int64_t b1 = std::min<int64_t>(bins_ - 1, int64_t(std::ceil(t_hi + half_b)));
      for (int64_t b = b0; b <= b1; ++b) {
        const double t = double(b) - half_b;
        const double start = (t + half_steps * along) * inv + half_across;
        // Steps whose sample lies within the support; elsewhere the interpolation reads zeros.
        int64_t lo = first_step, hi = last_step;
        if (slope != 0.0) {
          const double n0 = (support_lo - start) / slope, n1 = (support_hi - start) / slope;
          lo = std::max<int64_t>(lo, int64_t(std::floor(std::min(n0, n1))) - 1);
          hi = std::min<int64_t>(hi, int64_t(std::ceil(std::max(n0, n1))) + 1);
        } else if (start < support_lo || start > support_hi) {
          hi = lo - 1;
        }
        double sum = 0.0;
        if (by_column) {
          for (int64_t n = lo; n <= hi; ++n) {
            const double r = std::clamp(start + double(n) * slope, -1.0, double(across));
            const int64_t j = floor_from_minus_one(r);
            const double w = r - double(j);
            sum += (1.0 - w) * p[(j + 1) * pw + n + 1] + w * p[(j + 2) * pw + n + 1];
          }
        } else {
          for (int64_t n = lo; n <= hi; ++n) {
            const double q = std::clamp(start + double(n) * slope, -1.0, double(across));
            const int64_t i = floor_from_minus_one(q);
            const double w = q - double(i);
            const double* row = p + (n + 1) * pw;
            sum += (1.0 - w) * row[i + 1] + w * row[i + 2];
          }
        }
        out[b] = sum * length;
      }
    }
  }

  // sinogram [angles, bins] -> f [H, W] in the sinogram's units per pixel (Kak & Slaney eq. 3.62:
  // f = pi / K sum_k Q_k(x cos theta_k + y sin theta_k)).
  void reconstruct(const double* sinogram, double* f) {
    const int64_t fw = bins_ + 3;
    for (int64_t a = 0; a < angles_; ++a) {
      const double* p = sinogram + a * bins_;
      double* q = filtered_.data() + a * fw + 1;
      std::fill(q, q + bins_, 0.0);
      // Q[b] = sum_k p[k] h[b - k], accumulated k by k so the loop over b vectorises; rays that
      // miss the object (p = 0) cost nothing.
      for (int64_t k = 0; k < bins_; ++k) {
        const double pk = p[k];
        if (pk == 0.0) continue;
        const double* h = kernel_.data() + (bins_ - 1 - k);  // h[b - k] at index b - k + bins - 1
        for (int64_t b = 0; b < bins_; ++b) q[b] += pk * h[b];
      }
    }
    // Back-projection pixel by pixel, the sum over views in a register; per row, the part of each
    // view's bin position that does not depend on the column.
    const double half_w = 0.5 * double(W_ - 1), half_h = 0.5 * double(H_ - 1), half_b = 0.5 * double(bins_ - 1);
    const double* cos_theta = views_.cos_theta.data();
    for (int64_t j = 0; j < H_; ++j) {
      for (int64_t a = 0; a < angles_; ++a)
        row_offset_[size_t(a)] = (double(j) - half_h) * views_.sin_theta[size_t(a)] + half_b;
      for (int64_t i = 0; i < W_; ++i) {
        const double x = double(i) - half_w;
        double sum = 0.0;
        const double* q = filtered_.data();  // q[b + 1] is bin b of view a
        for (int64_t a = 0; a < angles_; ++a, q += fw) {
          const double u = std::clamp(x * cos_theta[a] + row_offset_[size_t(a)], -1.0, double(bins_));
          const int64_t b = floor_from_minus_one(u);
          const double w = u - double(b);
          sum += (1.0 - w) * q[b + 1] + w * q[b + 2];
        }
        f[j * W_ + i] = sum;
      }
    }
    const double scale = kPi / double(angles_);
    for (int64_t n = 0; n < H_ * W_; ++n) f[n] *= scale;
  }

 private:
  int64_t H_, W_, angles_, bins_;
  Views views_;
  std::vector<double> kernel_, padded_, filtered_, row_offset_;
};

int64_t default_angles(int64_t H, int64_t W) { return std::max<int64_t>(8, std::llround(1.5 * double(std::max(H, W)))); }
// Rays through the slice reach |t| <= half the diagonal plus one pixel of interpolation support.
int64_t default_bins(int64_t H, int64_t W) { return int64_t(std::ceil(std::hypot(double(H), double(W)))) + 4; }

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

// Poisson(lambda) from one Philox block: inverse transform sampling (exact up to rounding) below
// 30, where one 53-bit uniform suffices and the loop is short; above, the normal approximation
// lambda + sqrt(lambda) z, whose error in distribution is O(1 / sqrt(lambda)) and invisible after
// the log (energy-integrating detectors do not count integers anyway).
double sample_photon_count(double lambda, const philox::Words& w) {
  if (lambda < 30.0) {
    const double u = double((uint64_t(w.v[0]) << 21) ^ (w.v[1] >> 11)) * 0x1p-53;
    double p = std::exp(-lambda), cdf = p;
    int k = 0;
    // The cap only matters when rounding leaves the summed cdf below a u within 1e-15 of 1.
    const int cap = int(lambda + 12.0 * std::sqrt(lambda) + 40.0);
    while (u >= cdf && k < cap) {
      ++k;
      p *= lambda / double(k);
      cdf += p;
    }
    return double(k);
  }
  float z0, z1;
  philox::normal_pair(w.v[2], w.v[3], &z0, &z1);
  return lambda + std::sqrt(lambda) * double(z0);
}

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

RampFilter parse_ramp_filter(const std::string& text) {
  if (text == "ram-lak") return RampFilter::ram_lak;
  if (text == "hann") return RampFilter::hann;
  CTSR_FAIL("filter '", text, "' is not known: expected ram-lak or hann");
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

Tensor radon_transform(const Tensor& slice, int64_t angles, int64_t bins) {
  slice.check_defined("radon_transform");
  CTSR_CHECK(slice.ndim() == 2, "radon_transform: slice must be [H, W], got ", slice.shape().str());
  slice.check_dtype(DType::float64, "radon_transform");
  slice.check_device(Device::cpu(), "radon_transform");
  CTSR_CHECK(angles >= 1 && bins >= 1, "radon_transform: angles ", angles, " and bins ", bins, " must be >= 1");
  Tensor out = Tensor::empty({angles, bins}, DType::float64);
  Tomograph(slice.dim(0), slice.dim(1), angles, bins, RampFilter::ram_lak).project(slice.data<double>(), out.data<double>());
  return out;
}

Tensor filtered_back_projection(const Tensor& sinogram, int64_t height, int64_t width, RampFilter filter) {
  sinogram.check_defined("filtered_back_projection");
  CTSR_CHECK(sinogram.ndim() == 2, "filtered_back_projection: sinogram must be [angles, bins], got ",
             sinogram.shape().str());
  sinogram.check_dtype(DType::float64, "filtered_back_projection");
  sinogram.check_device(Device::cpu(), "filtered_back_projection");
  CTSR_CHECK(height >= 1 && width >= 1, "filtered_back_projection: size ", height, "x", width, " must be positive");
  const int64_t angles = sinogram.dim(0), bins = sinogram.dim(1);
  Tensor out = Tensor::empty({height, width}, DType::float64);
  Tomograph(height, width, angles, bins, filter).reconstruct(sinogram.data<double>(), out.data<double>());
  return out;
}

Tensor degrade_low_dose(const Tensor& hu, const LowDoseOptions& options, uint64_t seed, uint64_t index) {
  check_volume(hu, "degrade_low_dose");
  CTSR_CHECK(options.i0 > 0.0 && std::isfinite(options.i0), "degrade_low_dose: i0 must be a positive number of photons, got ",
             options.i0);
  CTSR_CHECK(options.pixel_mm > 0.0 && options.mu_water_per_mm > 0.0, "degrade_low_dose: pixel_mm ", options.pixel_mm,
             " and mu_water_per_mm ", options.mu_water_per_mm, " must be positive");
  CTSR_CHECK(options.angles >= 0 && options.bins >= 0, "degrade_low_dose: angles ", options.angles, " and bins ",
             options.bins, " must be >= 0 (0: the default)");
  const int64_t D = hu.dim(0), H = hu.dim(1), W = hu.dim(2);
  const int64_t angles = options.angles ? options.angles : default_angles(H, W);
  const int64_t bins = options.bins ? options.bins : default_bins(H, W);
  const double mu_pixel = options.mu_water_per_mm * options.pixel_mm;  // water, per pixel
  const double log_i0 = std::log(options.i0);
  const uint64_t offset = philox::stream_offset(kPhantomDosePurpose, index);
  const float* in = hu.data<float>();
  Tensor out = Tensor::empty(hu.shape(), DType::float32);
  float* result = out.data<float>();

#pragma omp parallel
  {
    Tomograph tomograph(H, W, angles, bins, options.filter);
    std::vector<double> mu(size_t(H * W)), sinogram(size_t(angles * bins)), f(size_t(H * W));
#pragma omp for schedule(static)
    for (int64_t k = 0; k < D; ++k) {
      const float* slice = in + k * H * W;
      // HU below -1000 (scanner padding, -1024) would be negative attenuation: clamp to air.
      for (int64_t p = 0; p < H * W; ++p) mu[size_t(p)] = mu_pixel * std::max(0.0, 1.0 + double(slice[p]) / 1000.0);
      tomograph.project(mu.data(), sinogram.data());
      for (int64_t r = 0; r < angles * bins; ++r) {
        // One Philox block per ray, counted over the whole volume: independent of threads.
        const philox::Words w = philox::philox4x32_10(uint64_t(k * angles * bins + r), offset, seed);
        const double expected = options.i0 * std::exp(-sinogram[size_t(r)]);
        const double counts = std::max(1.0, sample_photon_count(expected, w));  // a ray with no photon has no log
        sinogram[size_t(r)] = log_i0 - std::log(counts);
      }
      tomograph.reconstruct(sinogram.data(), f.data());
      float* dst = result + k * H * W;
      for (int64_t p = 0; p < H * W; ++p) dst[p] = float(1000.0 * (f[size_t(p)] / mu_pixel - 1.0));
    }
  }
  return out;
}

Tensor degrade_low_resolution(const Tensor& hu, int64_t slab) {
  check_volume(hu, "degrade_low_resolution");
  const int64_t D = hu.dim(0), plane = hu.dim(1) * hu.dim(2);
  CTSR_CHECK(slab >= 1 && slab <= D, "degrade_low_resolution: slab ", slab, " must be in [1, D = ", D, "]");
  const int64_t slabs = (D + slab - 1) / slab;
  std::vector<double> centers(static_cast<size_t>(slabs));
  std::vector<float> means(static_cast<size_t>(slabs * plane));
  const float* in = hu.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < slabs; ++s) {
    const int64_t begin = s * slab, end = std::min(D, begin + slab);
    centers[size_t(s)] = 0.5 * double(begin + end - 1);
    for (int64_t p = 0; p < plane; ++p) {
      double sum = 0.0;
      for (int64_t k = begin; k < end; ++k) sum += in[k * plane + p];
      means[size_t(s * plane + p)] = float(sum / double(end - begin));
    }
  }
  Tensor out = Tensor::empty(hu.shape(), DType::float32);
  float* result = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < D; ++k) {
    // Slab s0 and s0 + 1 around slice k (clamped at the ends), and the weight of s0 + 1.
    int64_t s0 = 0;
    while (s0 + 1 < slabs && centers[size_t(s0 + 1)] <= double(k)) ++s0;
    const int64_t s1 = std::min(s0 + 1, slabs - 1);
    double w = 0.0;
    if (s1 != s0) w = std::clamp((double(k) - centers[size_t(s0)]) / (centers[size_t(s1)] - centers[size_t(s0)]), 0.0, 1.0);
    const float* a = means.data() + s0 * plane;
    const float* b = means.data() + s1 * plane;
    for (int64_t p = 0; p < plane; ++p) result[k * plane + p] = float((1.0 - w) * a[p] + w * b[p]);
  }
  return out;
}

}  // namespace ctsr::tools
