#include "runtime/formats/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <vector>

#include "runtime/error.h"
#include "runtime/formats/atomic_file.h"

namespace ctsr::io {

// The format is little-endian; so are all the machines ctsr runs on, which lets tensor bytes go
// to and from the file unconverted.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

using Json = nlohmann::ordered_json;  // keeps the header's key order

// Same bound as the safetensors library itself: a header is an index, never this big.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

bool dtype_from_code(const std::string& code, DType& out) {
  static const std::pair<const char*, DType> table[] = {{"F32", DType::float32}, {"F64", DType::float64},
                                                        {"BF16", DType::bfloat16}, {"F16", DType::float16},
                                                        {"I32", DType::int32},   {"I64", DType::int64},
                                                        {"U8", DType::uint8}};
  for (const auto& [c, t] : table) {
    if (code == c) {
      out = t;
      return true;
    }
  }
  return false;
}

std::string short_dump(const Json& j) {
  std::string s = j.dump(-1, ' ', false, Json::error_handler_t::replace);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A safetensors header nests three deep ({"name": {"shape": [..]}}); anything much deeper is not
// one, and is refused as it is parsed, before nesting can cost stack or memory.
constexpr int kMaxHeaderDepth = 16;

// Parses the header, refusing nesting deeper than kMaxHeaderDepth and a key given twice in one
// object (JSON parsers keep the last of two silently; here a tensor or metadata key named twice
// is an error naming both of its places).
Json parse_header(const std::string& text, const std::string& file) {
  struct Object {
    std::unordered_map<std::string, size_t> keys;  // key -> its entry number in this object
    std::string name;                              // the key this object is the value of
  };
  std::vector<Object> open;  // innermost last; arrays push an entry too, with no keys
  std::string last_key;
  auto callback = [&](int depth, nlohmann::json::parse_event_t event, Json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    switch (event) {
      case Event::object_start:
      case Event::array_start:
        CTSR_CHECK(depth < kMaxHeaderDepth, file, ": safetensors header nests deeper than ", kMaxHeaderDepth,
                   " levels; a header is an object of tensor entries and is never this deep");
        open.push_back({{}, depth == 0 ? std::string("the header") : "'" + last_key + "'"});
        break;
      case Event::object_end:
      case Event::array_end:
        if (!open.empty()) open.pop_back();
        break;
      case Event::key: {
        last_key = parsed.get<std::string>();
        if (open.empty()) break;
        auto& keys = open.back().keys;
        const size_t entry = keys.size() + 1;
        auto [it, fresh] = keys.emplace(last_key, entry);
        CTSR_CHECK(fresh, file, ": safetensors header: key '", last_key, "' appears twice in ", open.back().name,
                   " (entries ", it->second, " and ", entry, ")");
        break;
      }
      case Event::value:
        break;
    }
    return true;
  };
  try {
    return Json::parse(text, callback);
  } catch (const Json::exception& e) {
    CTSR_FAIL(file, ": safetensors header is not valid JSON: ", e.what());
  }
}

}  // namespace

const char* safetensors_dtype_code(DType dtype) {
  switch (dtype) {
    case DType::float32: return "F32";
    case DType::float64: return "F64";
    case DType::bfloat16: return "BF16";
    case DType::float16: return "F16";
    case DType::int32: return "I32";
    case DType::int64: return "I64";
    case DType::uint8: return "U8";
  }
  CTSR_FAIL("safetensors: unknown dtype tag ", static_cast<int>(dtype));
}

bool looks_like_safetensors(const void* first_bytes, size_t size, uint64_t file_size) {
  if (size < 9 || file_size < 9) return false;
  const auto* p = static_cast<const uint8_t*>(first_bytes);
  uint64_t n = read_u64_le(p);
  return n >= 2 && n <= file_size - 8 && p[8] == '{';
}

SafetensorsReader::SafetensorsReader(std::filesystem::path path) : file_(std::move(path)) {
  const std::string file = file_.path().string();
  const uint64_t size = file_.size();
  CTSR_CHECK(size >= 8, file, ": truncated or not a safetensors file: ", size,
             " bytes, fewer than the 8-byte header length");
  uint8_t length_bytes[8];
  file_.read(0, length_bytes, 8, "safetensors header length");
  const uint64_t header_size = read_u64_le(length_bytes);
  CTSR_CHECK(header_size <= size - 8, file, ": truncated or not a safetensors file: header length ", header_size,
             " exceeds the ", size - 8, " bytes that follow it");
  CTSR_CHECK(header_size <= kMaxHeaderBytes, file, ": safetensors header length ", header_size,
             " exceeds the limit of ", kMaxHeaderBytes, " bytes");
  std::string text(header_size, '\0');
  file_.read(8, text.data(), header_size, "safetensors header");
  const uint64_t data_start = 8 + header_size;
  const uint64_t data_size = size - data_start;

  const Json header = parse_header(text, file);
  CTSR_CHECK(header.is_object(), file, ": safetensors header is a JSON ", header.type_name(), ", expected an object");

  struct Span {
    uint64_t begin, end;
    size_t record;
  };
  std::vector<Span> spans;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      CTSR_CHECK(entry.is_object(), file, ": __metadata__ is ", short_dump(entry), ", expected an object of strings");
      for (const auto& [key, value] : entry.items()) {
        CTSR_CHECK(value.is_string(), file, ": __metadata__ '", key, "' is ", short_dump(value),
                   ", expected a string");
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string where = file + ": tensor '" + name + "'";
    CTSR_CHECK(entry.is_object(), where, ": header entry is ", short_dump(entry),
               ", expected an object with dtype, shape and data_offsets");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      CTSR_CHECK(entry.contains(field), where, ": header entry has no '", field, "' field");

    const Json& dtype_json = entry["dtype"];
    DType dtype = DType::float32;
    CTSR_CHECK(dtype_json.is_string() && dtype_from_code(dtype_json.get<std::string>(), dtype), where, ": dtype ",
               short_dump(dtype_json), " is not supported (expected F32, F64, BF16, F16, I32, I64 or U8)");

    const Json& shape_json = entry["shape"];
    CTSR_CHECK(shape_json.is_array() && shape_json.size() <= static_cast<size_t>(kMaxDims), where, ": shape ",
               short_dump(shape_json), " is not an array of at most ", kMaxDims, " non-negative integers");
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    bool overflow = false;
    for (const Json& d : shape_json) {
      CTSR_CHECK(d.is_number_unsigned() && d.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX), where, ": shape ",
                 short_dump(shape_json), " is not an array of non-negative integers");
      shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
      overflow = overflow || __builtin_mul_overflow(numel, d.get<uint64_t>(), &numel);
    }
    uint64_t expected_bytes = 0;
    overflow = overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(dtype)), &expected_bytes);

    const Json& offsets = entry["data_offsets"];
    CTSR_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                   offsets[1].is_number_unsigned() && offsets[0].get<uint64_t>() <= offsets[1].get<uint64_t>(),
               where, ": data_offsets ", short_dump(offsets), " is not [begin, end] with integers 0 <= begin <= end");
    const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    CTSR_CHECK(end <= data_size, where, ": data_offsets [", begin, ", ", end, "] reach beyond the ", data_size,
               "-byte data section (file is ", size, " bytes; truncated?)");
    CTSR_CHECK(!overflow && end - begin == expected_bytes, where, ": data_offsets [", begin, ", ", end, "] hold ",
               end - begin, " bytes, but shape ", dims_text(shape), " of ", dtype_json.get<std::string>(),
               " needs ", overflow ? std::string("more than 2^64") : std::to_string(expected_bytes));

    CTSR_CHECK(index_.emplace(name, records_.size()).second, file, ": tensor '", name, "' appears twice");
    spans.push_back({begin, end, records_.size()});
    records_.push_back(TensorRecord{name, dtype, std::move(shape)});
    data_begin_.push_back(data_start + begin);
  }

  // File order is data order (header key order is up to the writer); empty tensors sort first
  // among those starting at the same offset, so they never count as overlapping.
  std::stable_sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < spans.size(); ++i) {
    const Span& a = spans[i - 1];
    const Span& b = spans[i];
    CTSR_CHECK(a.end <= b.begin, file, ": tensors '", records_[a.record].name, "' (data_offsets [", a.begin, ", ",
               a.end, "]) and '", records_[b.record].name, "' ([", b.begin, ", ", b.end, "]) overlap");
  }
  for (const Span& s : spans) names_.push_back(records_[s.record].name);
}

const TensorRecord& SafetensorsReader::record(const std::string& name) const {
  auto it = index_.find(name);
  CTSR_CHECK(it != index_.end(), path().string(), ": no tensor '", name, "' in the safetensors file (",
             names_.size(), " tensors)");
  return records_[it->second];
}

Tensor SafetensorsReader::load(const std::string& name) const {
  const TensorRecord& r = record(name);
  Tensor out = Tensor::empty(Shape(r.shape), r.dtype);
  file_.read(data_begin_[index_.at(name)], out.raw_data(), out.nbytes(), "data of tensor '" + name + "'");
  return out;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string file = path.string();
  std::unordered_map<std::string, size_t> seen;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    CTSR_CHECK(name != "__metadata__", "write_safetensors: ", file, ": '__metadata__' (entry ", i,
               ") is reserved for the metadata and cannot name a tensor");
    auto [it, fresh] = seen.emplace(name, i);
    CTSR_CHECK(fresh, "write_safetensors: ", file, ": tensor name '", name, "' appears twice (entries ", it->second,
               " and ", i, ")");
    CTSR_CHECK(t.defined(), "write_safetensors: ", file, ": tensor '", name, "' is undefined");
  }

  Json header = Json::object();
  if (!metadata.empty()) {
    Json m = Json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    Json entry = Json::object();
    entry["dtype"] = safetensors_dtype_code(t.dtype());
    entry["shape"] = t.shape().vec();
    entry["data_offsets"] = Json::array({offset, offset + t.nbytes()});
    header[name] = std::move(entry);
    offset += t.nbytes();
  }
  std::string text;
  try {
    text = header.dump();  // strict: names and metadata must be valid UTF-8
  } catch (const Json::exception& e) {
    CTSR_FAIL("write_safetensors: ", file, ": a tensor name or metadata string is not valid UTF-8 (", e.what(), ")");
  }
  // Spaces are JSON whitespace: padding keeps the data section 8-byte aligned for readers that
  // map the file.
  text.append((8 - text.size() % 8) % 8, ' ');

  write_file_atomically(path, [&](std::ostream& out) {
    uint8_t length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& [name, t] : tensors) {
      if (t.nbytes() == 0) continue;
      Tensor host = t.device().is_host_memory() ? t : t.to(Device::cpu());
      out.write(static_cast<const char*>(host.raw_data()), static_cast<std::streamsize>(host.nbytes()));
    }
  });
}

}  // namespace ctsr::io
