// CT volumes on disk and in memory. A volume is a [D, H, W] float32 tensor on the CPU plus the
// geometry that must travel with it. NIfTI dims (nx, ny, nz) map to [D = nz, H = ny, W = nx],
// x fastest, so the bytes need no transpose (DESIGN.md, Conventions).
#pragma once

#include <array>
#include <filesystem>
#include <memory>
#include <string>

#include "runtime/formats/dicom.h"
#include "runtime/tensor.h"

namespace ctsr::io {

struct VolumeGeometry {
  // Voxel size in mm along x, y, z (NIfTI pixdim[1..3]); for a tensor [D, H, W] that is W, H, D.
  std::array<double, 3> spacing_xyz{1.0, 1.0, 1.0};
  // Voxel (i = x, j = y, k = z, 1) -> world mm. From the sform when set, else the qform, else
  // diag(spacing). Written back as both sform and qform.
  std::array<std::array<double, 4>, 4> affine{{{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}}};
  // Set when the volume was read from a DICOM series: its patient, study and stored format, which
  // a DICOM write of anything with this geometry (a result) copies (runtime/formats/dicom.h).
  std::shared_ptr<const DicomSource> dicom;
};

struct Volume {
  Tensor data;  // [D, H, W] float32, cpu; NIfTI values after scl_slope / scl_inter (HU for CT)
  VolumeGeometry geometry;
};

enum class VolumeFormat { nifti, nifti_gz, npy, dicom };
// From the name: .nii, .nii.gz, .npy; a DICOM series for an existing folder, a name ending in a
// separator or without an extension, and for .dcm (or any file with the DICOM magic) a DICOM
// file. Anything else is an error naming the path.
VolumeFormat volume_format(const std::filesystem::path& path);

struct VolumeReadOptions {
  std::string series_uid;  // DICOM: the series to take from a folder holding several
};

// .nii / .nii.gz through libnifti2 (NIfTI-1 and NIfTI-2), .npy (any float or integer dtype,
// converted to float32; must be 3-D), DICOM series and files (runtime/formats/dicom.h, in HU).
// Errors name the file and the expectation (a 4-D NIfTI, a 2-D .npy, a missing file).
Volume read_volume(const std::filesystem::path& path, const VolumeReadOptions& options = {});
// Writes float32 NIfTI-1 (or .npy, geometry dropped) through an AtomicFile, or a DICOM series
// folder (write_dicom_series). The data may be of any dtype and on any device (a float32 host
// copy is written); it must be [D, H, W], the spacing positive and the affine finite with last
// row [0, 0, 0, 1], else nothing is written.
void write_volume(const std::filesystem::path& path, const Volume& volume);

// HU windowing: clip to [lo, hi] and map linearly to [-1, 1]; the inverse maps back (no clipping).
struct HuWindow {
  float lo = -200.0f;
  float hi = 200.0f;
};
HuWindow parse_hu_window(const std::string& text);  // "-200,200"; lo < hi, else an error naming the text
Tensor hu_to_unit(const Tensor& hu, const HuWindow& window);
Tensor unit_to_hu(const Tensor& unit, const HuWindow& window);
// The same two in place (a float32 host tensor keeps its memory; others are replaced).
void hu_to_unit_inplace(Tensor& hu, const HuWindow& window);
void unit_to_hu_inplace(Tensor& unit, const HuWindow& window);

// A volume on the [-1, 1] scale from a file: NIfTI and DICOM are read as HU and windowed; .npy is
// taken as already on the [-1, 1] scale (DESIGN.md). The geometry comes along.
Volume read_volume_unit(const std::filesystem::path& path, const HuWindow& window,
                        const VolumeReadOptions& options = {});

}  // namespace ctsr::io
