// DICOM CT series in and out, through GDCM (libgdcm, Debian's libgdcm-dev; DESIGN.md says why).
//
// Reading: a folder of single-frame CT files (one series, or the one --series-uid names) or one
// file (a multi-frame Enhanced CT file, or a single slice). The slices are ordered by
// ImagePositionPatient along the slice normal (ImageOrientationPatient's row x column), never by
// file name or InstanceNumber, so D ascends along the normal; the slice spacing comes from the
// positions (not SliceThickness); values are RescaleSlope * stored + RescaleIntercept (HU).
// Pixel data may be uncompressed (implicit or explicit VR little endian) or lossless
// JPEG, JPEG-LS, JPEG 2000 or RLE, which GDCM decodes; lossy syntaxes are refused.
//
// Geometry: DICOM positions are in the patient's LPS frame; ctsr's VolumeGeometry::affine is
// NIfTI's RAS frame (what NIfTI files hold and write_volume writes), so the affine is
// diag(-1, -1, 1) times the DICOM one: column x (W) = row direction * column spacing, column y
// (H) = column direction * row spacing, column z (D) = normal * slice spacing, translation the
// first slice's position. Nothing is resampled or flipped: the pixel bytes keep their order.
//
// Refused, each with one line naming the file and the tag: several series in a folder without
// a chosen SeriesInstanceUID; a missing or duplicated slice (a gap or a repeat along the normal);
// gantry tilt (slices advancing off the normal) or non-orthogonal orientation; rows, columns,
// bits, orientation or rescale differing between files; a modality other than CT; an unsupported
// transfer syntax; a truncated file. A file in the folder that is not DICOM at all (no "DICM"
// at byte 128: a README, a thumbnail) is skipped with a warning; DICOMDIR files are skipped too.
//
// Writing: a folder of single-frame CT Image Storage files (explicit VR little endian, int16 or
// the source's stored format and rescale), a new SeriesInstanceUID and SOPInstanceUIDs under the
// 2.25 UUID root, ImageType DERIVED\SECONDARY, the source's patient, study and frame of
// reference copied when the volume was read from DICOM. The folder is written beside the target
// under a temporary name and renamed into place: it appears complete or not at all.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace ctsr::io {

struct Volume;
struct VolumeGeometry;

// What a DICOM series read carries to a DICOM write of its result (VolumeGeometry::dicom).
struct DicomSource {
  struct Attribute {
    uint32_t tag = 0;  // group << 16 | element
    std::string vr;    // two letters
    std::string bytes;  // the value as stored (little endian)
  };
  std::vector<Attribute> copied;  // patient, study, frame of reference, equipment (top level)
  std::string series_uid;
  std::string series_description;
  int64_t series_number = 0;
  double rescale_slope = 1.0;
  double rescale_intercept = 0.0;
  int bits_stored = 16;
  bool is_signed = true;
};

struct DicomReadOptions {
  std::string series_uid;  // empty: the folder must hold one series
  // Non-fatal notes (a skipped non-DICOM file); default: "ctsr: warning: ..." on stderr.
  std::function<void(const std::string&)> warn;
};

// True when `path` is a folder, or a file with the DICOM "DICM" magic at byte 128 or a .dcm name.
bool is_dicom_path(const std::filesystem::path& path);
// A series folder or a single DICOM file as a volume in HU (see above).
Volume read_dicom(const std::filesystem::path& path, const DicomReadOptions& options = {});
// `hu` is [D, H, W] float32 on the host; values are rounded to the stored format (clamped, with
// the count reported in the error-free warning callback). A target that exists must be a folder
// holding only DICOM files (a previous result), which the new folder replaces atomically.
void write_dicom_series(const std::filesystem::path& folder, const Tensor& hu, const VolumeGeometry& geometry,
                        const std::function<void(const std::string&)>& warn = {});

// Refuses (before any work) a target write_dicom_series would refuse: one that exists and is not
// a folder holding only DICOM files.
void check_dicom_series_target(const std::filesystem::path& target);

// A new UID under the 2.25 root (ISO/IEC 9834-8: a random UUID as one decimal number).
std::string new_dicom_uid();

}  // namespace ctsr::io
