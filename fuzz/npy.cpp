// Fuzz harness: NumPy .npy files (runtime/formats/npy.h), read as latents (ctsr_vqae decode) and as
// volumes (ctsr_metrics, ctsr_infer: read_volume converts any dtype to float32 and wants 3-D).
// An array that reads must fit in the file (its data section is exactly the shape's bytes) and read
// back the same after write_npy.
#include <string>

#include "fuzz/fuzz_support.h"
#include "runtime/formats/npy.h"
#include "runtime/formats/volume.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ctsr;
  static const char* const kName = "npy";
  const std::filesystem::path path = fuzz::Scratch::get().write("input.npy", data, size);
  fuzz::run(kName, [&] {
    const Tensor t = io::read_npy(path);
    fuzz::touch(t, kName);
    fuzz::expect(t.nbytes() <= size, kName,
                 "an array of " + std::to_string(t.nbytes()) + " bytes " + t.shape().str() + " read from a file of " +
                     std::to_string(size) + " bytes");
    const Tensor back = fuzz::must_succeed(kName, "an array that read cannot be written and read back", [&] {
      const std::filesystem::path again = fuzz::Scratch::get().dir() / "rewritten.npy";
      io::write_npy(again, t);
      return io::read_npy(again);
    });
    fuzz::expect(fuzz::same_tensor(back, t), kName, "an array changes when written and read again");
  });
  // The same bytes as a volume, on their own: read_volume may refuse what read_npy reads (not 3-D).
  return fuzz::run(kName, [&] {
    const io::Volume v = io::read_volume(path);
    fuzz::expect(v.data.ndim() == 3 && v.data.dtype() == DType::float32, kName,
                 "read_volume gave " + v.data.shape().str() + ", not a 3-D float32 volume");
    fuzz::touch(v.data, kName);
  });
}
