// The two degradations ctsr learns to undo, applied to a phantom (tools/phantom/phantom.h) or any
// [D, H, W] HU volume: a low-dose scan (parallel-beam projection, Poisson photon noise, filtered
// back-projection, slice by slice) and thick slices (low resolution along z).
#pragma once

#include <cstdint>
#include <string>

#include "runtime/philox.h"
#include "runtime/tensor.h"

namespace ctsr::tools {

// Philox purpose (the high 16 bits of the stream offset, runtime/philox.h) of the dose noise.
inline constexpr uint32_t kPhantomDosePurpose = 0x444f;  // "DO": the photon counts of pair i

// ---- low dose ------------------------------------------------------------------------------------
// Per axial slice: HU -> linear attenuation, parallel-beam projection over 180 degrees, Poisson
// photon counts at I0 photons per ray, back to line integrals, filtered back-projection, -> HU.
enum class RampFilter {
  ram_lak,  // the discrete ramp of Kak & Slaney (sharpest, most noise)
  hann,     // the ramp times a Hann window reaching zero at the detector's Nyquist frequency
};
RampFilter parse_ramp_filter(const std::string& text);  // "ram-lak" or "hann"

struct LowDoseOptions {
  double i0 = 1e4;  // incident photons per ray (one detector bin of one view); noise ~ 1 / sqrt(i0)
  // In-plane pixel size: the projector works in pixels, so mu per pixel = mu [1/mm] * pixel_mm.
  // 0.7 mm is a typical abdominal CT pixel; a 64-pixel phantom is then a 45 mm object, whose
  // line integrals (<= ~0.9) are those of a small animal, hence the modest noise at 1e4 photons.
  double pixel_mm = 0.7;
  // Linear attenuation of water, 1/mm, at an effective energy of about 70 keV (NIST XCOM gives
  // 0.193 cm^-1 for water at 70 keV). HU = 1000 (mu / mu_water - 1), so air (-1000) has mu = 0.
  double mu_water_per_mm = 0.0192;
  // Hann by default: like a clinical "standard" kernel, it keeps the noise texture of a low-dose
  // scan (24 HU at 1e4 photons and 0.7 mm; ram-lak 63 HU) without ram-lak's aliasing of partial-volume edges
  // (8 HU of faint streaks even without noise, against 2 HU; tests/test_phantom.cpp).
  RampFilter filter = RampFilter::hann;
  // Views over [0, 180) degrees and detector bins (one pixel wide); 0 picks the defaults:
  // round(1.5 max(H, W)) views (about the pi/2 N a slice of N pixels needs) and ceil(diagonal) + 4
  // bins, so every ray that meets the slice, and every back-projected pixel, is on the detector.
  int64_t angles = 0;
  int64_t bins = 0;
};

// hu: [D, H, W] float32 cpu. Noise from Philox (seed, kPhantomDosePurpose, index), one counter
// per ray, so the result is the same for any thread count.
Tensor degrade_low_dose(const Tensor& hu, const LowDoseOptions& options, uint64_t seed, uint64_t index);

// The pieces, for tests. Slices are [H, W] float64 in attenuation per pixel; sinograms are
// [angles, bins] float64 of line integrals in pixel units. View a is at angle pi a / angles; bin b
// is centred at t = b - (bins - 1) / 2 pixels from the slice centre.
// Joseph's ray-driven projector: along each ray, one linear interpolation per row (or column, for
// rays closer to horizontal), zero outside the slice.
Tensor radon_transform(const Tensor& slice, int64_t angles, int64_t bins);
// Ramp filtering by direct convolution with the (windowed) discrete ramp kernel over the whole
// detector (exact linear convolution: no wrap-around), then pixel-driven back-projection with
// linear interpolation between bins.
Tensor filtered_back_projection(const Tensor& sinogram, int64_t height, int64_t width, RampFilter filter);

// A Poisson(lambda) photon count from one Philox block: inverse transform sampling of one 53-bit
// uniform (words 0, 1) below lambda = 30, the normal approximation lambda + sqrt(lambda) z (words
// 2, 3) above. Not clamped: degrade_low_dose clamps counts to >= 1 before the log.
double sample_photon_count(double lambda, const philox::Words& words);

// ---- low resolution ----------------------------------------------------------------------------
// Thick slices: averages every `slab` consecutive slices along z (the last slab takes what is left),
// then linear interpolation back to D slices between slab centres (constant beyond the first and
// last centre). hu: [D, H, W] float32 cpu; 1 <= slab <= D.
Tensor degrade_low_resolution(const Tensor& hu, int64_t slab);

}  // namespace ctsr::tools
