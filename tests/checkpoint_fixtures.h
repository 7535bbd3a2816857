// Helpers shared by the weight-file format tests (test_zip_archive, test_pickle,
// test_torch_checkpoint, test_safetensors): the fixtures in tests/data/checkpoints/ and their
// expected contents (written by tools/pytorch/make_checkpoint_fixtures.py), file byte helpers,
// and small independent writers for hand-made pickles and zip archives.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <type_traits>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace ctsr::test {

inline std::filesystem::path checkpoint_fixture(const std::string& name) {
  return std::filesystem::path(CTSR_TEST_DATA_DIR) / "checkpoints" / name;
}

inline std::vector<uint8_t> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const std::filesystem::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

// Overwrites bytes of an existing file in place. Tests that try many variants of one file patch
// it rather than rewrite it: truncating and rewriting a file makes some file systems (ext4's
// auto_da_alloc) flush it, which costs milliseconds each time.
inline void patch_bytes(const std::filesystem::path& path, uint64_t offset, const std::vector<uint8_t>& bytes) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << "cannot patch " << path;
}

inline uint32_t le32(const std::vector<uint8_t>& b, size_t at) {
  return static_cast<uint32_t>(b[at]) | (static_cast<uint32_t>(b[at + 1]) << 8) |
         (static_cast<uint32_t>(b[at + 2]) << 16) | (static_cast<uint32_t>(b[at + 3]) << 24);
}
inline void put_le(std::vector<uint8_t>& b, size_t at, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) b[at + static_cast<size_t>(i)] = static_cast<uint8_t>(v >> (8 * i));
}
inline void append_le(std::vector<uint8_t>& b, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// ---- expected.txt ----

struct ExpectedTensor {
  std::string name;
  DType dtype = DType::float32;
  std::vector<int64_t> shape;
  std::vector<std::string> values;  // as printed: exact decimals (floats) or integers
};

struct ExpectedFile {
  std::vector<ExpectedTensor> tensors;
  std::vector<std::string> skipped;
  std::map<std::string, std::string> metadata;
  struct Entry {
    std::string name;
    uint64_t size;
    uint32_t crc;
  };
  std::vector<Entry> entries;
};

inline std::map<std::string, ExpectedFile> expected_fixtures() {
  std::ifstream in(checkpoint_fixture("expected.txt"));
  EXPECT_TRUE(in.good()) << "cannot read expected.txt";
  std::map<std::string, ExpectedFile> files;
  ExpectedFile* current = nullptr;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    std::string tag;
    s >> tag;
    if (tag == "file") {
      std::string name;
      s >> name;
      current = &files[name];
    } else if (tag == "tensor") {
      ExpectedTensor t;
      std::string dtype;
      int ndim = 0;
      s >> t.name >> dtype >> ndim;
      t.dtype = dtype_from_name(dtype);
      t.shape.resize(static_cast<size_t>(ndim));
      for (auto& d : t.shape) s >> d;
      std::string v;
      while (s >> v) t.values.push_back(v);
      current->tensors.push_back(t);
    } else if (tag == "skipped") {
      std::string key;
      s >> key;
      current->skipped.push_back(key);
    } else if (tag == "metadata") {
      std::string key, value;
      s >> key >> value;
      current->metadata[key] = value;
    } else if (tag == "entry") {
      ExpectedFile::Entry e;
      s >> e.name >> e.size >> e.crc;
      current->entries.push_back(e);
    } else {
      ADD_FAILURE() << "expected.txt: unknown line: " << line;
    }
  }
  return files;
}

// Exact comparison: every stored value widens to float64 (or int64) exactly, and the fixture
// prints each as the shortest decimal that reads back as that float64.
inline ::testing::AssertionResult tensor_matches(const Tensor& t, const ExpectedTensor& e) {
  if (t.dtype() != e.dtype)
    return ::testing::AssertionFailure() << e.name << ": dtype " << dtype_name(t.dtype()) << ", expected "
                                         << dtype_name(e.dtype);
  if (!(t.shape() == Shape(e.shape)))
    return ::testing::AssertionFailure() << e.name << ": shape " << t.shape().str() << ", expected "
                                         << Shape(e.shape).str();
  if (static_cast<size_t>(t.numel()) != e.values.size())
    return ::testing::AssertionFailure() << e.name << ": " << t.numel() << " elements, expected.txt has "
                                         << e.values.size();
  Tensor host = t.to(Device::cpu());
  for (size_t i = 0; i < e.values.size(); ++i) {
    bool ok = visit_dtype(t.dtype(), [&](auto tag) {
      using T = decltype(tag);
      T v = static_cast<const T*>(host.raw_data())[i];
      if constexpr (std::is_integral_v<T>) return static_cast<int64_t>(v) == std::stoll(e.values[i]);
      else return static_cast<double>(v) == std::strtod(e.values[i].c_str(), nullptr);
    });
    if (!ok) return ::testing::AssertionFailure() << e.name << ": element " << i << " differs from " << e.values[i];
  }
  return ::testing::AssertionSuccess();
}

// ---- an independent zip writer (stored entries only) for hand-made archives ----

inline uint32_t crc32_of(const std::vector<uint8_t>& data) {
  uint32_t table[256];
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  uint32_t crc = 0xffffffffu;
  for (uint8_t b : data) crc = table[(crc ^ b) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

inline std::vector<uint8_t> make_stored_zip(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& entries) {
  std::vector<uint8_t> out, directory;
  for (const auto& [name, data] : entries) {
    const uint32_t crc = crc32_of(data);
    const uint64_t offset = out.size();
    auto header = [&](std::vector<uint8_t>& b, bool central) {
      append_le(b, central ? 0x02014b50 : 0x04034b50, 4);
      if (central) append_le(b, 20, 2);  // version made by
      append_le(b, 20, 2);               // version needed
      append_le(b, 0, 2);                // flags
      append_le(b, 0, 2);                // method: stored
      append_le(b, 0, 4);                // time, date
      append_le(b, crc, 4);
      append_le(b, data.size(), 4);
      append_le(b, data.size(), 4);
      append_le(b, name.size(), 2);
      append_le(b, 0, 2);  // extra
      if (central) {
        append_le(b, 0, 2);  // comment
        append_le(b, 0, 2);  // disk
        append_le(b, 0, 2);  // internal attributes
        append_le(b, 0, 4);  // external attributes
        append_le(b, offset, 4);
      }
      b.insert(b.end(), name.begin(), name.end());
    };
    header(out, false);
    out.insert(out.end(), data.begin(), data.end());
    header(directory, true);
  }
  const uint64_t directory_offset = out.size();
  out.insert(out.end(), directory.begin(), directory.end());
  append_le(out, 0x06054b50, 4);
  append_le(out, 0, 4);
  append_le(out, entries.size(), 2);
  append_le(out, entries.size(), 2);
  append_le(out, directory.size(), 4);
  append_le(out, directory_offset, 4);
  append_le(out, 0, 2);
  return out;
}

// ---- hand-made pickles ----

class PickleBuilder {
 public:
  PickleBuilder& op(uint8_t code) { bytes_.push_back(code); return *this; }
  PickleBuilder& raw(const std::string& s) { bytes_.insert(bytes_.end(), s.begin(), s.end()); return *this; }
  PickleBuilder& proto(int p = 2) { return op(0x80).op(static_cast<uint8_t>(p)); }
  PickleBuilder& mark() { return op('('); }
  PickleBuilder& str(const std::string& s) {  // BINUNICODE
    op('X');
    append_le(bytes_, s.size(), 4);
    return raw(s);
  }
  PickleBuilder& integer(int64_t v) {
    if (v >= 0 && v < 256) return op('K').op(static_cast<uint8_t>(v));
    if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      append_le(bytes_, static_cast<uint64_t>(v), 4);
      return *this;
    }
    op(0x8a).op(8);  // LONG1, 8 bytes two's complement
    append_le(bytes_, static_cast<uint64_t>(v), 8);
    return *this;
  }
  PickleBuilder& global(const std::string& module, const std::string& name) {
    return op('c').raw(module + "\n" + name + "\n");
  }
  PickleBuilder& ints(const std::vector<int64_t>& values) {  // a tuple of ints
    mark();
    for (int64_t v : values) integer(v);
    return op('t');
  }
  // torch's persistent id for a storage, then BINPERSID.
  PickleBuilder& storage(const std::string& storage_type, const std::string& key, int64_t numel) {
    mark().str("storage").global("torch", storage_type).str(key).str("cpu").integer(numel).op('t');
    return op('Q');
  }
  // torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())
  PickleBuilder& tensor(const std::string& storage_type, const std::string& key, int64_t numel, int64_t offset,
                        const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
    global("torch._utils", "_rebuild_tensor_v2").mark();
    storage(storage_type, key, numel).integer(offset).ints(size).ints(stride).op(0x89);
    global("collections", "OrderedDict").op(')').op('R');
    return op('t').op('R');
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  std::vector<uint8_t> done() { op('.'); return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

template <class T>
std::vector<uint8_t> bytes_of(const std::vector<T>& values) {
  std::vector<uint8_t> out(values.size() * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

}  // namespace ctsr::test
