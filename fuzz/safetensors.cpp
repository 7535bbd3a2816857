// Fuzz harness: safetensors files (runtime/formats/safetensors.h), the format of every checkpoint,
// cache entry and weight file. As ctsr_train --resume and the weight loaders do: open (the whole
// header is checked), read the metadata, load every tensor. A file that opens must then hold to
// what the reader promises: each tensor loads with the dtype and shape of its record and bytes
// within the file, open_tensor_source would recognise it, and writing the tensors and metadata back
// gives a file that reads the same.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "fuzz/fuzz_support.h"
#include "runtime/formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ctsr;
  static const char* const kName = "safetensors";
  return fuzz::run(kName, [&] {
    const std::filesystem::path path = fuzz::Scratch::get().write("input.safetensors", data, size);
    const io::SafetensorsReader reader(path);
    std::map<std::string, std::string> metadata = reader.metadata();
    std::vector<std::pair<std::string, Tensor>> tensors;
    uint64_t total_bytes = 0;
    for (const std::string& name : reader.names()) {
      const io::TensorRecord& record = reader.record(name);
      const Tensor t = reader.load(name);
      fuzz::expect(t.dtype() == record.dtype && t.shape().vec() == record.shape, kName,
                   "tensor '" + name + "' loads as " + t.shape().str() + " but its record says otherwise");
      fuzz::touch(t, kName);
      total_bytes += t.nbytes();
      tensors.emplace_back(name, t);
    }
    // open_tensor_source picks this reader for such a file (a header starting with '{').
    fuzz::expect(size < 9 || data[8] != '{' || io::looks_like_safetensors(data, size, size), kName,
                 "a file the reader opens is not recognised by looks_like_safetensors");
    fuzz::expect(total_bytes <= size, kName,
                 "the tensors hold " + std::to_string(total_bytes) + " bytes, more than the file's " +
                     std::to_string(size));
    // Written back and read again: the same names in the same order, the same tensors and metadata.
    fuzz::must_succeed(kName, "what read cannot be written and read back", [&] {
      const std::filesystem::path again = fuzz::Scratch::get().dir() / "rewritten.safetensors";
      io::write_safetensors(again, tensors, metadata);
      const io::SafetensorsReader reread(again);
      fuzz::expect(reread.names() == reader.names() && reread.metadata() == metadata, kName,
                   "a rewritten file does not read back to the same names and metadata");
      for (const auto& [name, t] : tensors)
        fuzz::expect(fuzz::same_tensor(reread.load(name), t), kName, "tensor '" + name + "' changes when rewritten");
    });
  });
}
