// Fuzz harness: NIfTI-1 and NIfTI-2 volumes, plain (.nii) and gzipped (.nii.gz), through
// read_volume (runtime/formats/volume.h, libnifti2 underneath), as every program that takes a
// volume reads them. The reader takes a path: the input goes to a scratch file named .nii.gz when
// it starts with the gzip magic, else .nii. A volume that reads must be a 3-D float32 tensor that
// a plain file can hold (a voxel takes at least one byte) and whose values write_volume writes
// and read_volume reads back (a non-finite value as 0, as libnifti reads it).
#include <cmath>
#include <string>

#include "fuzz/fuzz_support.h"
#include "runtime/formats/volume.h"

namespace {

// The voxel values `read` reads back from what write_volume wrote of `original`: the same values
// (write_volume stores scl_slope 1, so the read back computes 1 * x + 0 in double, turning -0 into
// +0), except that libnifti reads non-finite float32 voxels as 0 (nifti_read_buffer).
bool same_values(const ctsr::Tensor& original, const ctsr::Tensor& read) {
  if (!(original.shape() == read.shape())) return false;
  const float* x = original.data<float>();
  const float* y = read.data<float>();
  for (int64_t i = 0; i < original.numel(); ++i)
    if (!(std::isfinite(x[i]) ? x[i] == y[i] : y[i] == 0.0f)) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ctsr;
  static const char* const kName = "nifti";
  const bool gzipped = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  const std::filesystem::path path =
      fuzz::Scratch::get().write(gzipped ? "input.nii.gz" : "input.nii", data, size);
  return fuzz::run(kName, [&] {
    const io::Volume v = io::read_volume(path);
    fuzz::expect(v.data.ndim() == 3 && v.data.dtype() == DType::float32, kName,
                 "read_volume gave " + v.data.shape().str() + ", not a 3-D float32 volume");
    fuzz::touch(v.data, kName);
    if (!gzipped)
      fuzz::expect(static_cast<uint64_t>(v.data.numel()) <= size, kName,
                   std::to_string(v.data.numel()) + " voxels " + v.data.shape().str() + " read from a file of " +
                       std::to_string(size) + " bytes");
    // write_volume refuses geometry it cannot write (a zero spacing, say): that is an Error, fine.
    const std::filesystem::path again = fuzz::Scratch::get().dir() / "rewritten.nii";
    io::write_volume(again, v);
    const io::Volume back =
        fuzz::must_succeed(kName, "a volume write_volume wrote does not read", [&] { return io::read_volume(again); });
    fuzz::expect(back.data.dtype() == DType::float32 && same_values(v.data, back.data), kName,
                 "a volume changes when written and read again");
  });
}
