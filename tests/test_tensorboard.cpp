// TensorBoard event files (train/tensorboard.h): CRC-32C against published vectors; events
// written and read back (file version first, tags, steps, float values, PNG images); writes held
// until flush() or destruction; a new file per writer; every corrupted record found by its CRC and
// named; a file cut anywhere inside its last record reported as truncated, not as corrupt.
// With CTSR_TEST_KEEP_DIR set, the file of EventsRoundTrip is copied there (for
// tools/pytorch/check_tensorboard_events.py, which decodes it with protobuf).
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "tests/harness.h"
#include "tests/image_fixtures.h"
#include "tests/tool_runner.h"
#include "train/tensorboard.h"

namespace ctsr::test {
namespace {

using train::RgbImage;
using train::TensorBoardEvent;
using train::TensorBoardWriter;

std::span<const uint8_t> as_bytes(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

// Byte offsets where each record starts, from the framing alone (length at the start of each).
std::vector<size_t> record_offsets(const std::string& bytes) {
  std::vector<size_t> offsets;
  for (size_t pos = 0; pos + 8 <= bytes.size();) {
    offsets.push_back(pos);
    uint64_t length;
    std::memcpy(&length, bytes.data() + pos, 8);
    pos += 12 + length + 4;
  }
  return offsets;
}

TEST(TensorBoard, Crc32cMatchesPublishedVectors) {
  // The CRC catalogue's check value, and the four 32-byte vectors of RFC 3720 (iSCSI), appendix B.4.
  EXPECT_EQ(train::crc32c(as_bytes("123456789")), 0xE3069283u);
  EXPECT_EQ(train::crc32c(std::vector<uint8_t>(32, 0x00)), 0x8A9136AAu);
  EXPECT_EQ(train::crc32c(std::vector<uint8_t>(32, 0xFF)), 0x62A8AB43u);
  std::vector<uint8_t> ascending(32), descending(32);
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<uint8_t>(i);
    descending[i] = static_cast<uint8_t>(31 - i);
  }
  EXPECT_EQ(train::crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(train::crc32c(descending), 0x113FDB5Cu);
  EXPECT_EQ(train::crc32c({}), 0u);
  // Masked: rotate right by 15, add 0xa282ead8 (values from a separate bit-at-a-time implementation).
  EXPECT_EQ(train::masked_crc32c({}), 0xa282ead8u);
  EXPECT_EQ(train::masked_crc32c(as_bytes("123456789")), 0xC78AB0E5u);
  EXPECT_EQ(train::masked_crc32c(std::vector<uint8_t>(32, 0x00)), 0x0FD7FFFAu);
  EXPECT_EQ(train::masked_crc32c(ascending), 0x951F7892u);
}

TEST(TensorBoard, EventsRoundTrip) {
  TempDir dir("tensorboard");
  const RgbImage image = random_image(13, 9, 21);
  const std::vector<std::pair<std::string, double>> scalars{
      {"loss/train", 0.123456789}, {"lr", 3e-4}, {"loss/val", -2.5}, {"big", 1e30}};
  const std::vector<int64_t> steps{0, 7, -3, int64_t(1) << 40};
  std::filesystem::path file;
  {
    TensorBoardWriter writer(dir / "runs" / "a");  // parents are created
    file = writer.path();
    for (size_t i = 0; i < scalars.size(); ++i) writer.add_scalar(scalars[i].first, scalars[i].second, steps[i]);
    writer.add_image("val/slices", image, 12345);
  }  // the destructor flushes
  const double after = static_cast<double>(std::time(nullptr)) + 1;

  EXPECT_EQ(file.parent_path(), dir / "runs" / "a");
  const std::string name = file.filename().string();
  EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;
  expect_contains(name, detail::concat(".", ::getpid(), ".ctsr"));

  const std::vector<TensorBoardEvent> events = train::read_tensorboard_events(file);
  ASSERT_EQ(events.size(), scalars.size() + 2);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_TRUE(events[0].values.empty());
  for (const auto& e : events) {
    EXPECT_GT(e.wall_time, after - 600);
    EXPECT_LE(e.wall_time, after);
  }
  for (size_t i = 0; i < scalars.size(); ++i) {
    const TensorBoardEvent& e = events[i + 1];
    EXPECT_TRUE(e.file_version.empty());
    EXPECT_EQ(e.step, steps[i]);
    ASSERT_EQ(e.values.size(), 1u);
    EXPECT_EQ(e.values[0].tag, scalars[i].first);
    ASSERT_TRUE(e.values[0].simple_value.has_value());
    EXPECT_EQ(*e.values[0].simple_value, static_cast<float>(scalars[i].second));
    EXPECT_TRUE(e.values[0].image_png.empty());
  }
  const TensorBoardEvent& e = events.back();
  EXPECT_EQ(e.step, 12345);
  ASSERT_EQ(e.values.size(), 1u);
  EXPECT_EQ(e.values[0].tag, "val/slices");
  EXPECT_FALSE(e.values[0].simple_value.has_value());
  EXPECT_EQ(e.values[0].image_height, 9);
  EXPECT_EQ(e.values[0].image_width, 13);
  const RgbImage decoded = train::decode_png(as_bytes(e.values[0].image_png), "event image");
  EXPECT_EQ(decoded.width, 13);
  EXPECT_EQ(decoded.height, 9);
  EXPECT_TRUE(decoded.rgb == image.rgb);

  if (const char* keep = std::getenv("CTSR_TEST_KEEP_DIR"))
    std::filesystem::copy_file(file, std::filesystem::path(keep) / name,
                               std::filesystem::copy_options::overwrite_existing);
}

TEST(TensorBoard, WritesAreHeldUntilFlushAndEachWriterHasItsOwnFile) {
  TempDir dir("tensorboard-flush");
  TensorBoardWriter first(dir.path());
  EXPECT_EQ(train::read_tensorboard_events(first.path()).size(), 1u);  // the file version is written at once
  first.add_scalar("x", 1.5, 1);
  first.add_scalar("x", 2.5, 2);
  EXPECT_EQ(train::read_tensorboard_events(first.path()).size(), 1u);
  first.flush();
  EXPECT_EQ(train::read_tensorboard_events(first.path()).size(), 3u);
  first.flush();  // nothing pending: nothing written twice
  EXPECT_EQ(train::read_tensorboard_events(first.path()).size(), 3u);

  // A resumed run (same directory, same process, same second) gets a second file.
  TensorBoardWriter second(dir.path());
  EXPECT_NE(second.path(), first.path());
  second.add_scalar("x", 3.5, 3);
  second.flush();
  const auto resumed = train::read_tensorboard_events(second.path());
  ASSERT_EQ(resumed.size(), 2u);
  EXPECT_EQ(resumed[0].file_version, "brain.Event:2");
  EXPECT_EQ(resumed[1].step, 3);
  EXPECT_EQ(train::read_tensorboard_events(first.path()).size(), 3u);
  EXPECT_EQ(dir.entries().size(), 2u);
}

// Writes a file of five events and returns its bytes and record offsets.
std::pair<std::string, std::vector<size_t>> five_event_file(const std::filesystem::path& dir,
                                                            std::filesystem::path& file) {
  TensorBoardWriter writer(dir);
  file = writer.path();
  writer.add_scalar("a", 1.0, 1);
  writer.add_image("b", random_image(5, 4, 3), 2);
  writer.add_scalar("c", 3.0, 3);
  writer.add_scalar("d", 4.0, 4);
  writer.flush();
  const std::string bytes = read_file_bytes(file);
  return {bytes, record_offsets(bytes)};
}

TEST(TensorBoard, CorruptionIsFoundAndTheRecordNamed) {
  TempDir dir("tensorboard-corrupt");
  std::filesystem::path file;
  const auto [bytes, offsets] = five_event_file(dir.path(), file);
  ASSERT_EQ(offsets.size(), 5u);
  for (size_t record = 0; record < offsets.size(); ++record) {
    // A flipped bit in the payload, in its CRC, in the length's CRC and in the length itself.
    const size_t payload = offsets[record] + 12;
    const size_t payload_crc = (record + 1 < offsets.size() ? offsets[record + 1] : bytes.size()) - 4;
    const std::vector<std::pair<size_t, std::string>> cases{
        {payload + 3, "payload CRC mismatch"},
        {payload_crc + 1, "payload CRC mismatch"},
        {offsets[record] + 9, "length CRC mismatch"},
        {offsets[record] + 1, "length CRC mismatch"}};
    for (const auto& [at, what] : cases) {
      std::string damaged = bytes;
      damaged[at] = static_cast<char>(damaged[at] ^ 0x04);
      write_file_bytes(file, damaged);
      const std::string message = error_message([&] { train::read_tensorboard_events(file); });
      expect_contains(message, file.string());
      expect_contains(message, "record " + std::to_string(record) + " ");
      expect_contains(message, what);
      EXPECT_EQ(message.find("truncated"), std::string::npos) << message;
    }
  }
}

TEST(TensorBoard, ATruncatedLastRecordIsReportedAsTruncation) {
  TempDir dir("tensorboard-truncated");
  std::filesystem::path file;
  const auto [bytes, offsets] = five_event_file(dir.path(), file);
  const size_t last = offsets.back();
  // Every cut inside the last record: header, payload and final CRC.
  for (size_t end = last + 1; end < bytes.size(); ++end) {
    write_file_bytes(file, bytes.substr(0, end));
    const std::string message = error_message([&] { train::read_tensorboard_events(file); });
    expect_contains(message, file.string());
    expect_contains(message, "record 4 ");
    expect_contains(message, "is truncated");
    expect_contains(message, "the writer was interrupted");
    EXPECT_EQ(message.find("CRC"), std::string::npos) << message;
  }
  write_file_bytes(file, bytes.substr(0, last));  // cut between records: four whole events
  EXPECT_EQ(train::read_tensorboard_events(file).size(), 4u);
}

TEST(TensorBoard, RefusesAnUnreadableDirectoryOrFile) {
  TempDir dir("tensorboard-bad");
  write_file_bytes(dir / "plain", "x");
  expect_error_mentions([&] { TensorBoardWriter writer(dir / "plain" / "runs"); },
                        {"cannot create the TensorBoard directory", "plain"});
  expect_error_mentions([&] { train::read_tensorboard_events(dir / "absent"); }, {"cannot open", "absent"});
}

}  // namespace
}  // namespace ctsr::test
