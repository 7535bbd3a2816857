// Synthetic CT: 3-D CT-like phantoms in HU, for users without data, the demo and the tests
// (ctsr_phantom writes them as NIfTI LD/HD pairs; the degradations are in tomograph.h).
//
// A phantom is a [D, H, W] float32 volume in HU, axial slices along D, rows (H) running anterior to
// posterior. Its shapes are defined in fractions of the field of view (each axis mapped to [-1, 1]),
// not in mm, so a phantom looks the same at every grid size and the voxel spacing is metadata
// (it enters only the dose simulation, through the pixel size). Everything random comes from Philox
// keyed by (seed, purpose, sample index): a phantom is a pure function of its options, identical for
// any thread count, and sample i of a data set does not depend on how many samples come before it.
//
// The high-dose target of a pair is the clean phantom itself, not its noiseless reconstruction: the
// model is then asked for the truth, which is learnable (the same truth for every noise draw), and
// the small blur and ringing of filtered back-projection count as part of the degradation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace ctsr::tools {

// Philox purposes (the high 16 bits of the stream offset, runtime/philox.h) used here.
inline constexpr uint32_t kPhantomShapePurpose = 0x5048;  // "PH": the shapes and HU of phantom i

struct PhantomSize {
  int64_t depth = 64, height = 64, width = 64;
};
// "64" (a cube) or "DxHxW" ("48x64x64"); every side in [16, 1024]. Anything else is an error that
// quotes the text and says what is expected.
PhantomSize parse_phantom_size(const std::string& text);

struct PhantomOptions {
  PhantomSize size;
  uint64_t seed = 0;
  uint64_t index = 0;   // sample number within a data set: phantoms of one seed differ by index
  bool lesions = true;  // false: the same phantom without its lesions (tests compare the two)
};

// Tissue labels of a phantom's voxels.
enum class Tissue : uint8_t {
  outside_air = 0,  // -1000
  fat = 1,          // subcutaneous layer, -120..-80
  soft_tissue = 2,  // muscle-like background 30..50, and intervertebral discs 70..100
  organ = 3,        // ellipsoids 8..25 HU above or below the soft tissue
  air_organ = 4,    // lung-like -900..-800 or bowel gas -1000..-950
  bone = 5,         // vertebrae (cancellous 250..400, cortical 700..1000) and ribs (500..900)
  lesion = 6,       // soft tissue or organ voxels changed by a lesion's contrast
};

struct Lesion {
  double center_zyx[3];  // voxel coordinates (fractional)
  double radius_zyx[3];  // voxels
  double contrast_hu;    // added to the soft tissue or organ it lies in; |contrast| in [10, 30]
};

struct Phantom {
  // [D, H, W] float32: the mean HU over 3 x 3 points in each voxel's plane (partial volume at
  // edges, as a scanner sees them; see phantom.cpp), at the slice's centre along z.
  Tensor hu;
  Tensor tissue;                // [D, H, W] uint8: the Tissue at the voxel's centre
  Tensor edge;                  // [D, H, W] uint8: 1 where the voxel's points hold more than one tissue
  std::vector<Lesion> lesions;  // as drawn (a lesion may fall on no soft tissue and leave no voxel)
};

Phantom make_phantom(const PhantomOptions& options);
Tensor make_phantom_hu(const PhantomOptions& options);  // make_phantom(options).hu

}  // namespace ctsr::tools
