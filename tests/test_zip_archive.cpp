// The zip reader against archives written by Python's zipfile (stored, deflated, a comment), by
// torch.save, and rewritten by hand with ZIP64 fields; and against truncated and corrupted copies,
// whose errors must name the file and what was expected.
#include "runtime/formats/zip_archive.h"

#include <string>

#include "tests/checkpoint_fixtures.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"

namespace ctsr::test {
namespace {

using io::ZipArchive;
using io::ZipEntry;

std::string stored_text() { return "stored bytes, read as a byte range\n"; }
std::string deflated_text() {
  std::string s;
  for (int i = 0; i < 60; ++i) s += "line " + std::to_string(i) + " of a text that deflate shrinks well\n";
  return s;
}
std::string as_string(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

// Offset of the (comment-less) end-of-central-directory record and the directory it points at.
size_t end_record(const std::vector<uint8_t>& zip) { return zip.size() - 22; }
size_t directory_offset(const std::vector<uint8_t>& zip) { return le32(zip, end_record(zip) + 16); }

TEST(ZipArchive, ReadsStoredAndDeflatedEntriesWrittenByPython) {
  ZipArchive zip(checkpoint_fixture("misc.zip"));
  const ExpectedFile expected = expected_fixtures().at("misc.zip");
  ASSERT_EQ(zip.entries().size(), 2u);
  ASSERT_EQ(expected.entries.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const ZipEntry& e = zip.entries()[i];
    EXPECT_EQ(e.name, expected.entries[i].name);
    EXPECT_EQ(e.uncompressed_size, expected.entries[i].size);
    EXPECT_EQ(e.crc32, expected.entries[i].crc);
  }
  const ZipEntry& stored = zip.entry("dir/stored.txt");
  const ZipEntry& deflated = zip.entry("dir/deflated.txt");
  EXPECT_EQ(stored.method, 0);
  EXPECT_EQ(deflated.method, 8);
  EXPECT_LT(deflated.compressed_size, deflated.uncompressed_size / 4);
  EXPECT_EQ(as_string(zip.read(stored)), stored_text());
  EXPECT_EQ(as_string(zip.read(deflated)), deflated_text());
  EXPECT_EQ(zip.find("dir/absent.txt"), nullptr);
  expect_error_mentions([&] { zip.entry("dir/absent.txt"); }, {"misc.zip", "no entry 'dir/absent.txt'"});
}

TEST(ZipArchive, ReadsPartOfAStoredEntry) {
  ZipArchive zip(checkpoint_fixture("misc.zip"));
  std::string part(5, '\0');
  zip.read_range(zip.entry("dir/stored.txt"), 7, 5, part.data());
  EXPECT_EQ(part, "bytes");
  expect_error_mentions([&] { zip.read_range(zip.entry("dir/stored.txt"), 30, 10, part.data()); },
                        {"misc.zip", "dir/stored.txt", "offset 30", "extends beyond the entry's 35 bytes"});
  expect_error_mentions([&] { zip.read_range(zip.entry("dir/deflated.txt"), 0, 1, part.data()); },
                        {"dir/deflated.txt", "only stored entries can be read in part"});
  std::vector<uint8_t> small(3);
  expect_error_mentions([&] { zip.read_into(zip.entry("dir/stored.txt"), small.data(), small.size()); },
                        {"dir/stored.txt", "has 35 bytes", "holds 3"});
}

TEST(ZipArchive, Zip64RecordsAndExtraFieldsReadLikeTheOriginal) {
  ZipArchive plain(checkpoint_fixture("bare_state_dict.pt"));
  ZipArchive zip64(checkpoint_fixture("bare_state_dict_zip64.pt"));
  ASSERT_EQ(plain.entries().size(), zip64.entries().size());
  for (size_t i = 0; i < plain.entries().size(); ++i) {
    const ZipEntry& a = plain.entries()[i];
    const ZipEntry& b = zip64.entries()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.uncompressed_size, b.uncompressed_size);
    EXPECT_EQ(a.crc32, b.crc32);
    EXPECT_EQ(plain.read(a), zip64.read(b)) << a.name;
  }
  EXPECT_EQ(zip64.entries().front().method, 8);  // data.pkl deflated in the rewrite
}

TEST(ZipArchive, HandMadeArchiveWithAnEmptyEntry) {
  TempDir dir("zip");
  write_bytes(dir / "hand.zip", make_stored_zip({{"a/one", {1, 2, 3}}, {"a/empty", {}}, {"b", {9}}}));
  ZipArchive zip(dir / "hand.zip");
  ASSERT_EQ(zip.entries().size(), 3u);
  EXPECT_EQ(zip.read(zip.entry("a/one")), (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_TRUE(zip.read(zip.entry("a/empty")).empty());
  EXPECT_EQ(zip.read(zip.entry("b")), (std::vector<uint8_t>{9}));
}

TEST(ZipArchive, NotAZipArchive) {
  TempDir dir("zip");
  std::vector<uint8_t> text(3000, 'x');
  write_bytes(dir / "notes.txt", text);
  expect_error_mentions([&] { ZipArchive z(dir / "notes.txt"); },
                        {"notes.txt", "truncated or not a zip archive",
                         "no end-of-central-directory record in the last 65 KiB"});
  write_bytes(dir / "tiny.bin", {'P', 'K', 3, 4});
  expect_error_mentions([&] { ZipArchive z(dir / "tiny.bin"); }, {"tiny.bin", "4 bytes", "fewer than"});
  expect_error_mentions([&] { ZipArchive z(dir / "absent.zip"); }, {"cannot open", "absent.zip"});
}

TEST(ZipArchive, TruncatedCopiesNameTheFileAndWhatIsMissing) {
  TempDir dir("zip");
  const std::vector<uint8_t> zip = read_bytes(checkpoint_fixture("lightning.ckpt"));
  const size_t directory = directory_offset(zip);
  const std::vector<std::pair<const char*, size_t>> cuts = {
      {"in the data", directory / 2},
      {"in the central directory", directory + 100},
      {"in the end record", zip.size() - 10},
      {"one byte short", zip.size() - 1},
  };
  for (const auto& [where, cut] : cuts) {
    SCOPED_TRACE(where);
    write_bytes(dir / "model.ckpt", std::vector<uint8_t>(zip.begin(), zip.begin() + static_cast<std::ptrdiff_t>(cut)));
    expect_error_mentions([&] { ZipArchive z(dir / "model.ckpt"); },
                          {"model.ckpt", "truncated", "no end-of-central-directory record in the last 65 KiB"});
  }
  // misc.zip ends with an 18-byte comment: a cut inside it leaves the record, whose comment
  // length now overruns the file.
  const std::vector<uint8_t> misc = read_bytes(checkpoint_fixture("misc.zip"));
  write_bytes(dir / "misc.zip", std::vector<uint8_t>(misc.begin(), misc.end() - 5));
  expect_error_mentions([&] { ZipArchive z(dir / "misc.zip"); },
                        {"misc.zip", "truncated", "declares a 18-byte comment", "ends 13 bytes after"});
}

TEST(ZipArchive, CentralDirectoryBeyondTheEnd) {
  TempDir dir("zip");
  // Bytes lost from the middle: the end record still points where the directory used to be.
  std::vector<uint8_t> zip = read_bytes(checkpoint_fixture("misc.zip"));
  zip.erase(zip.begin() + 100, zip.begin() + 150);
  write_bytes(dir / "misc.zip", zip);
  expect_error_mentions([&] { ZipArchive z(dir / "misc.zip"); },
                        {"misc.zip", "truncated or corrupt zip archive", "the central directory (offset",
                         "extends beyond the end of the data"});
  // torch writes ZIP64 end records: there the locator is the first thing found pointing too far.
  zip = read_bytes(checkpoint_fixture("lightning.ckpt"));
  zip.erase(zip.begin() + 1000, zip.begin() + 1500);
  write_bytes(dir / "model.ckpt", zip);
  expect_error_mentions([&] { ZipArchive z(dir / "model.ckpt"); },
                        {"model.ckpt", "truncated or corrupt zip archive", "ZIP64 end-of-central-directory locator"});
}

TEST(ZipArchive, EntryBeyondTheCentralDirectory) {
  TempDir dir("zip");
  std::vector<uint8_t> zip = read_bytes(checkpoint_fixture("lightning.ckpt"));
  const size_t first = directory_offset(zip);
  put_le(zip, first + 20, 0x00ffffff, 4);  // compressed size
  put_le(zip, first + 24, 0x00ffffff, 4);  // uncompressed size
  write_bytes(dir / "model.ckpt", zip);
  expect_error_mentions([&] { ZipArchive z(dir / "model.ckpt"); },
                        {"model.ckpt", "entry 'archive/data.pkl'", "16777215 bytes of data",
                         "extends beyond the start of the central directory"});
}

TEST(ZipArchive, CorruptCentralDirectoryAndLocalHeader) {
  TempDir dir("zip");
  const std::vector<uint8_t> original = read_bytes(checkpoint_fixture("lightning.ckpt"));
  std::vector<uint8_t> zip = original;
  zip[directory_offset(zip)] ^= 0xff;
  write_bytes(dir / "model.ckpt", zip);
  expect_error_mentions([&] { ZipArchive z(dir / "model.ckpt"); },
                        {"model.ckpt", "central directory entry 0", "signature", "expected 0x02014b50"});

  zip = original;
  zip[0] ^= 0xff;  // the first local header (data.pkl's)
  write_bytes(dir / "model.ckpt", zip);
  ZipArchive z(dir / "model.ckpt");  // opening reads only the directory
  expect_error_mentions([&] { z.read(z.entry("archive/data.pkl")); },
                        {"model.ckpt", "entry 'archive/data.pkl'", "no local header at offset 0"});
}

TEST(ZipArchive, CorruptDataFailsItsCrc) {
  TempDir dir("zip");
  std::vector<uint8_t> zip = read_bytes(checkpoint_fixture("misc.zip"));
  uint64_t stored_at = 0, deflated_at = 0, deflated_size = 0;
  {
    ZipArchive intact(checkpoint_fixture("misc.zip"));
    stored_at = intact.data_offset(intact.entry("dir/stored.txt"));
    deflated_at = intact.data_offset(intact.entry("dir/deflated.txt"));
    deflated_size = intact.entry("dir/deflated.txt").compressed_size;
  }
  zip[stored_at + 3] ^= 0x20;
  for (uint64_t i = deflated_at + deflated_size / 2; i < deflated_at + deflated_size / 2 + 8; ++i) zip[i] ^= 0x5a;
  write_bytes(dir / "misc.zip", zip);
  ZipArchive z(dir / "misc.zip");
  expect_error_mentions([&] { z.read(z.entry("dir/stored.txt")); },
                        {"misc.zip", "entry 'dir/stored.txt'", "CRC-32 mismatch", "corrupt"});
  expect_error_mentions([&] { z.read(z.entry("dir/deflated.txt")); }, {"misc.zip", "entry 'dir/deflated.txt'"});
  // A part read cannot be checked, and does not need the rest of the entry.
  std::string part(5, '\0');
  z.read_range(z.entry("dir/stored.txt"), 7, 5, part.data());
  EXPECT_EQ(part, "bytes");
}

TEST(ZipArchive, Zip64MarkersWithoutALocator) {
  TempDir dir("zip");
  std::vector<uint8_t> zip = read_bytes(checkpoint_fixture("bare_state_dict_zip64.pt"));
  const size_t locator = zip.size() - 22 - 20;
  ASSERT_EQ(le32(zip, locator), 0x07064b50u);
  zip[locator] = 0;
  write_bytes(dir / "model.pt", zip);
  expect_error_mentions([&] { ZipArchive z(dir / "model.pt"); },
                        {"model.pt", "ZIP64 markers", "no ZIP64 locator"});

  zip = read_bytes(checkpoint_fixture("bare_state_dict_zip64.pt"));
  put_le(zip, locator + 8, zip.size(), 8);  // the locator points past the end
  write_bytes(dir / "model.pt", zip);
  expect_error_mentions([&] { ZipArchive z(dir / "model.pt"); }, {"model.pt", "ZIP64 end-of-central-directory locator"});
}

TEST(ZipArchive, Zip64ExtraFieldMissing) {
  TempDir dir("zip");
  std::vector<uint8_t> zip = make_stored_zip({{"a", {1, 2}}});
  // Mark the entry's sizes as "in the ZIP64 extra field", which it does not have.
  const size_t directory = directory_offset(zip);
  put_le(zip, directory + 20, 0xffffffff, 4);
  put_le(zip, directory + 24, 0xffffffff, 4);
  write_bytes(dir / "a.zip", zip);
  expect_error_mentions([&] { ZipArchive z(dir / "a.zip"); },
                        {"a.zip", "entry 'a'", "no ZIP64 extra field"});
}

}  // namespace
}  // namespace ctsr::test
