// TensorBoard event files, written from the format's facts with no TensorFlow or protobuf library.
//
// A file is a sequence of TFRecords:
//   uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | payload | uint32 masked_crc32c(payload)
// with masked_crc32c(x) = ((c >> 15) | (c << 17)) + 0xa282ead8, c = CRC-32C (Castagnoli) of x.
// Each payload is a tensorflow.Event protobuf, hand-encoded:
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; Image image = 4; }
//   Image   { int32 height = 1; int32 width = 2; int32 colorspace = 3; bytes encoded_image_string = 4; }
// The first event of every file carries only file_version = "brain.Event:2".
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "train/png.h"

namespace ctsr::train {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses it; and its masked form.
uint32_t crc32c(std::span<const uint8_t> bytes);
uint32_t masked_crc32c(std::span<const uint8_t> bytes);

// Appends events to a new file in `dir`. Records are whole-record buffered in memory and written
// at flush(), in the destructor, and whenever the buffer passes 8 MiB; a process killed
// mid-write can only leave a truncated final record, which TensorBoard skips and
// read_tensorboard_events reports as truncation. A failed write truncates the file back to its
// last whole record before throwing.
class TensorBoardWriter {
 public:
  // Creates dir (and parents); the file is events.out.tfevents.<unix seconds>.<hostname>.<pid>.ctsr,
  // new for every writer (".ctsr.1", ".ctsr.2"... if that name is taken), so a resumed run adds a
  // file beside the old ones, as TensorBoard expects. The file_version event is written at once.
  explicit TensorBoardWriter(const std::filesystem::path& dir);
  ~TensorBoardWriter();  // flushes; an error there is printed to stderr, not thrown
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void add_scalar(const std::string& tag, double value, int64_t step);  // stored as float, as TensorBoard does
  void add_image(const std::string& tag, const RgbImage& image, int64_t step);  // PNG-encoded
  void flush();
  const std::filesystem::path& path() const { return path_; }

 private:
  void append_event(const std::vector<uint8_t>& summary, int64_t step, const std::string& file_version);

  std::filesystem::path path_;
  int fd_ = -1;
  uint64_t bytes_on_disk_ = 0;  // length of the file's whole records
  std::vector<uint8_t> pending_;
};

struct TensorBoardEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  struct Value {
    std::string tag;
    std::optional<float> simple_value;
    int image_height = 0, image_width = 0;
    std::string image_png;  // encoded_image_string (empty when the value is no image)
  };
  std::vector<Value> values;
};

// Reads every event, checking both CRCs of every record. Throws ctsr::Error naming the file and
// the record index on a CRC mismatch or a malformed Event; a file that ends inside a record gets
// a distinct message ("record N is truncated ... the writer was interrupted"), since that is what a
// killed writer leaves and TensorBoard itself skips such a tail.
std::vector<TensorBoardEvent> read_tensorboard_events(const std::filesystem::path& file);

}  // namespace ctsr::train
