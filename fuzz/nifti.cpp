// Fuzz harness: NIfTI-1 and NIfTI-2 volumes, plain (.nii) and gzipped (.nii.gz), through
// read_volume (runtime/formats/volume.h, libnifti2 underneath), as every program that takes a
// volume reads them. The reader takes a path: the input goes to a scratch file named .nii.gz when
// it starts with the gzip magic, else .nii. A volume that reads must be a 3-D float32 tensor that
// a plain file can hold (a voxel takes at least one byte) and that write_volume writes and
// read_volume reads back bit for bit.
#include <string>

#include "fuzz/fuzz_support.h"
#include "runtime/formats/volume.h"

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
    fuzz::expect(fuzz::same_tensor(back.data, v.data), kName, "a volume changes when written and read again");
  });
}
