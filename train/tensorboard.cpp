// TensorBoard event files: TFRecord framing with masked CRC-32C, and the few protobuf messages
// (Event, Summary, Value, Image) encoded and decoded by hand; the wire format is varint keys
// (field << 3 | wire type) followed by a varint, 8 or 4 little-endian bytes, or a length-prefixed
// byte string. Little-endian hosts are assumed, as everywhere in ctsr.
#include "train/tensorboard.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>

#include "runtime/error.h"

namespace ctsr::train {

// ---- CRC-32C -------------------------------------------------------------------------------------

namespace {

// Byte-at-a-time table for the reflected Castagnoli polynomial: entry b is the CRC register after
// shifting in byte b from a zero register.
const std::array<uint32_t, 256>& crc32c_table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t b = 0; b < 256; ++b) {
      uint32_t c = b;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[b] = c;
    }
    return t;
  }();
  return table;
}

}  // namespace

uint32_t crc32c(std::span<const uint8_t> bytes) {
  const auto& table = crc32c_table();
  uint32_t c = 0xFFFFFFFFu;
  for (uint8_t b : bytes) c = table[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(std::span<const uint8_t> bytes) {
  // TFRecord masks the CRC so that a CRC of data that itself contains CRCs stays well distributed.
  const uint32_t c = crc32c(bytes);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

// ---- protobuf encoding ---------------------------------------------------------------------------

namespace {

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::vector<uint8_t>& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<uint8_t>(v));
}

void put_key(std::vector<uint8_t>& out, uint32_t field, WireType type) { put_varint(out, (uint64_t(field) << 3) | type); }

template <class T>
void put_little_endian(std::vector<uint8_t>& out, T value) {
  uint8_t bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

void put_bytes_field(std::vector<uint8_t>& out, uint32_t field, std::span<const uint8_t> bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out.insert(out.end(), bytes.begin(), bytes.end());
}

void put_string_field(std::vector<uint8_t>& out, uint32_t field, const std::string& s) {
  put_bytes_field(out, field, {reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

// Summary { value { tag, <value_field> } } with one Value, the way TensorBoard's writers log.
std::vector<uint8_t> summary_with_one_value(const std::string& tag, const std::vector<uint8_t>& value_fields) {
  std::vector<uint8_t> value;
  put_string_field(value, 1, tag);
  value.insert(value.end(), value_fields.begin(), value_fields.end());
  std::vector<uint8_t> summary;
  put_bytes_field(summary, 1, value);
  return summary;
}

double unix_seconds_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof(buffer) - 1) != 0 || buffer[0] == '\0') return "localhost";
  std::string name = buffer;
  for (char& c : name)
    if (c == '/') c = '_';  // a hostname cannot contain '/', but a file name must not
  return name;
}

constexpr size_t kAutoFlushBytes = size_t(8) << 20;

}  // namespace

// ---- writer --------------------------------------------------------------------------------------

TensorBoardWriter::TensorBoardWriter(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  CTSR_CHECK(!ec, "cannot create the TensorBoard directory '", dir.string(), "': ", ec.message());
  const std::string base = "events.out.tfevents." +
                           std::to_string(static_cast<int64_t>(unix_seconds_now())) + "." + host_name() + "." +
                           std::to_string(::getpid()) + ".ctsr";
  // O_EXCL: never append to an existing file, so a truncated tail left by a killed writer stays the
  // last thing in its file. Writers created within the same second take the next free suffix.
  for (int n = 0; fd_ < 0; ++n) {
    path_ = dir / (n == 0 ? base : base + "." + std::to_string(n));
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    CTSR_CHECK(fd_ >= 0 || (errno == EEXIST && n < 1000), "cannot create the TensorBoard event file '",
               path_.string(), "': ", std::strerror(errno));
  }
  try {
    append_event({}, 0, "brain.Event:2");
    flush();
  } catch (...) {
    ::close(fd_);  // no destructor runs for a constructor that throws
    std::filesystem::remove(path_, ec);
    throw;
  }
}

TensorBoardWriter::~TensorBoardWriter() {
  try {
    flush();
  } catch (const std::exception& e) {
    std::cerr << "warning: " << e.what() << "\n";
  }
  ::close(fd_);
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  std::vector<uint8_t> fields;
  put_key(fields, 2, kFixed32);
  put_little_endian(fields, static_cast<float>(value));
  append_event(summary_with_one_value(tag, fields), step, "");
}

void TensorBoardWriter::add_image(const std::string& tag, const RgbImage& image, int64_t step) {
  std::vector<uint8_t> encoded_image;
  put_key(encoded_image, 1, kVarint);
  put_varint(encoded_image, static_cast<uint64_t>(image.height));
  put_key(encoded_image, 2, kVarint);
  put_varint(encoded_image, static_cast<uint64_t>(image.width));
  put_key(encoded_image, 3, kVarint);
  put_varint(encoded_image, 3);  // colorspace 3: RGB
  put_bytes_field(encoded_image, 4, encode_png(image));
  std::vector<uint8_t> fields;
  put_bytes_field(fields, 4, encoded_image);
  append_event(summary_with_one_value(tag, fields), step, "");
}

void TensorBoardWriter::append_event(const std::vector<uint8_t>& summary, int64_t step,
                                     const std::string& file_version) {
  std::vector<uint8_t> event;
  put_key(event, 1, kFixed64);
  put_little_endian(event, unix_seconds_now());
  put_key(event, 2, kVarint);
  put_varint(event, static_cast<uint64_t>(step));  // negative int64 as ten-byte two's complement, as protobuf does
  if (!file_version.empty()) put_string_field(event, 3, file_version);
  if (!summary.empty()) put_bytes_field(event, 5, summary);

  std::vector<uint8_t> length;
  put_little_endian(length, static_cast<uint64_t>(event.size()));
  pending_.insert(pending_.end(), length.begin(), length.end());
  put_little_endian(pending_, masked_crc32c(length));
  pending_.insert(pending_.end(), event.begin(), event.end());
  put_little_endian(pending_, masked_crc32c(event));
  if (pending_.size() >= kAutoFlushBytes) flush();
}

void TensorBoardWriter::flush() {
  size_t written = 0;
  while (written < pending_.size()) {
    const ssize_t n = ::pwrite(fd_, pending_.data() + written, pending_.size() - written,
                               static_cast<off_t>(bytes_on_disk_ + written));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = errno;
      // Cut the partial records off again so that the file stays a sequence of whole records;
      // the pending ones are kept for the next flush.
      const int truncated = ::ftruncate(fd_, static_cast<off_t>(bytes_on_disk_));
      CTSR_FAIL("writing the TensorBoard event file '", path_.string(), "' failed: ",
                n < 0 ? std::strerror(error) : "no progress", truncated != 0 ? " (and truncating it back failed)" : "");
    }
    written += static_cast<size_t>(n);
  }
  bytes_on_disk_ += pending_.size();
  pending_.clear();
}

// ---- reader --------------------------------------------------------------------------------------

namespace {

// Reads protobuf fields from one message; errors name the file, the record and the message.
class ProtoReader {
 public:
  ProtoReader(std::span<const uint8_t> bytes, const std::string& context) : bytes_(bytes), context_(context) {}
  bool done() const { return pos_ == bytes_.size(); }

  // The next field's number and wire type.
  std::pair<uint32_t, uint32_t> key() {
    const uint64_t k = varint();
    CTSR_CHECK((k >> 3) != 0 && (k >> 3) <= 0x1FFFFFFF, context_, ": invalid field number ", (k >> 3));
    return {static_cast<uint32_t>(k >> 3), static_cast<uint32_t>(k & 7)};
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      CTSR_CHECK(pos_ < bytes_.size(), context_, ": a varint runs past the end of the message");
      const uint8_t b = bytes_[pos_++];
      v |= uint64_t(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return v;
    }
    CTSR_FAIL(context_, ": a varint is longer than 10 bytes");
  }
  template <class T>
  T little_endian() {
    CTSR_CHECK(bytes_.size() - pos_ >= sizeof(T), context_, ": a ", sizeof(T), "-byte value runs past the end");
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::span<const uint8_t> length_delimited() {
    const uint64_t n = varint();
    CTSR_CHECK(n <= bytes_.size() - pos_, context_, ": a ", n, "-byte field runs past the end (", bytes_.size() - pos_,
               " bytes left)");
    auto s = bytes_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  void skip(uint32_t wire_type) {
    switch (wire_type) {
      case kVarint: varint(); break;
      case kFixed64: little_endian<uint64_t>(); break;
      case kLengthDelimited: length_delimited(); break;
      case kFixed32: little_endian<uint32_t>(); break;
      default: CTSR_FAIL(context_, ": unsupported wire type ", wire_type);
    }
  }
  void expect(uint32_t field, uint32_t wire_type, uint32_t expected) const {
    CTSR_CHECK(wire_type == expected, context_, ": field ", field, " has wire type ", wire_type, ", expected ",
               expected);
  }
  const std::string& context() const { return context_; }

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
  std::string context_;
};

std::string as_string(std::span<const uint8_t> s) { return {reinterpret_cast<const char*>(s.data()), s.size()}; }

void parse_image(std::span<const uint8_t> bytes, const std::string& context, TensorBoardEvent::Value& value) {
  ProtoReader r(bytes, context + " Image");
  while (!r.done()) {
    const auto [field, type] = r.key();
    if (field == 1 || field == 2) {
      r.expect(field, type, kVarint);
      (field == 1 ? value.image_height : value.image_width) = static_cast<int>(r.varint());
    } else if (field == 4) {
      r.expect(field, type, kLengthDelimited);
      value.image_png = as_string(r.length_delimited());
    } else {
      r.skip(type);  // colorspace and anything newer
    }
  }
}

TensorBoardEvent::Value parse_value(std::span<const uint8_t> bytes, const std::string& context) {
  TensorBoardEvent::Value value;
  ProtoReader r(bytes, context + " Summary.Value");
  while (!r.done()) {
    const auto [field, type] = r.key();
    if (field == 1) {
      r.expect(field, type, kLengthDelimited);
      value.tag = as_string(r.length_delimited());
    } else if (field == 2) {
      r.expect(field, type, kFixed32);
      value.simple_value = r.little_endian<float>();
    } else if (field == 4) {
      r.expect(field, type, kLengthDelimited);
      parse_image(r.length_delimited(), r.context(), value);
    } else {
      r.skip(type);  // metadata, tensors, histograms: not written by ctsr
    }
  }
  return value;
}

TensorBoardEvent parse_event(std::span<const uint8_t> bytes, const std::string& context) {
  TensorBoardEvent event;
  ProtoReader r(bytes, context + " Event");
  while (!r.done()) {
    const auto [field, type] = r.key();
    if (field == 1) {
      r.expect(field, type, kFixed64);
      event.wall_time = r.little_endian<double>();
    } else if (field == 2) {
      r.expect(field, type, kVarint);
      event.step = static_cast<int64_t>(r.varint());
    } else if (field == 3) {
      r.expect(field, type, kLengthDelimited);
      event.file_version = as_string(r.length_delimited());
    } else if (field == 5) {
      r.expect(field, type, kLengthDelimited);
      ProtoReader summary(r.length_delimited(), context + " Summary");
      while (!summary.done()) {
        const auto [summary_field, summary_type] = summary.key();
        if (summary_field != 1) {
          summary.skip(summary_type);
          continue;
        }
        summary.expect(summary_field, summary_type, kLengthDelimited);
        event.values.push_back(parse_value(summary.length_delimited(), context));
      }
    } else {
      r.skip(type);
    }
  }
  return event;
}

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

std::vector<TensorBoardEvent> read_tensorboard_events(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  CTSR_CHECK(in.good(), "cannot open the TensorBoard event file '", file.string(), "'");
  const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  CTSR_CHECK(!in.bad(), "reading '", file.string(), "' failed (I/O error)");

  std::vector<TensorBoardEvent> events;
  size_t pos = 0;
  for (size_t record = 0; pos < bytes.size(); ++record) {
    const std::string where = detail::concat("'", file.string(), "' record ", record, " (at byte ", pos, ")");
    const size_t left = bytes.size() - pos;
    CTSR_CHECK(left >= 12, where, " is truncated: the file ends ", left,
               " bytes into its 12-byte header (the writer was interrupted)");
    const std::span<const uint8_t> length_bytes(bytes.data() + pos, 8);
    const uint32_t stored_length_crc = load_u32(bytes.data() + pos + 8);
    CTSR_CHECK(stored_length_crc == masked_crc32c(length_bytes), where, ": length CRC mismatch (stored 0x", std::hex,
               stored_length_crc, ", computed 0x", masked_crc32c(length_bytes), "): the file is corrupt");
    uint64_t length;
    std::memcpy(&length, length_bytes.data(), 8);
    CTSR_CHECK(length <= left - 12 && left - 12 - length >= 4, where, " is truncated: its ", length,
               "-byte payload and its checksum need ", length + 4, " bytes but the file has ", left - 12,
               " left (the writer was interrupted)");
    const std::span<const uint8_t> payload(bytes.data() + pos + 12, length);
    const uint32_t stored_payload_crc = load_u32(bytes.data() + pos + 12 + length);
    CTSR_CHECK(stored_payload_crc == masked_crc32c(payload), where, ": payload CRC mismatch (stored 0x", std::hex,
               stored_payload_crc, ", computed 0x", masked_crc32c(payload), "): the file is corrupt");
    events.push_back(parse_event(payload, where));
    pos += 12 + length + 4;
  }
  return events;
}

}  // namespace ctsr::train
