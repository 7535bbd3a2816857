// pairs.csv (train/data/latent_cache.h): what is read, and the refusals, each one line naming the
// file, the line and what was expected. A column named twice used to take its last cell
// silently (issue 22, like a YAML key given twice). Rows may name DICOM series folders.
#include <fstream>

#include "runtime/formats/volume.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "train/data/latent_cache.h"

namespace ctsr::test {
namespace {

std::filesystem::path write_csv(const TempDir& dir, const std::string& name, const std::string& text) {
  std::ofstream(dir / name) << text;
  return dir / name;
}

TEST(PairsCsv, ReadsColumnsInAnyOrderWithPathsRelativeToTheFile) {
  TempDir dir("pairs");
  const auto rows = train::read_pairs_csv(
      write_csv(dir, "pairs.csv", "split,hd,ld,id\ntrain,hd/a.nii,ld/a.nii,a\n\nval,/abs/b.nii,ld/b.nii,b\n"));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].id, "a");
  EXPECT_EQ(rows[0].split, "train");
  EXPECT_EQ(rows[0].ld, dir / "ld/a.nii");
  EXPECT_EQ(rows[1].hd, std::filesystem::path("/abs/b.nii"));
  EXPECT_EQ(rows[1].split, "val");
  // Without an id column the id is the hd file's stem.
  const auto stems = train::read_pairs_csv(write_csv(dir, "stems.csv", "ld,hd\nl1.nii.gz,scan_7.nii.gz\n"));
  ASSERT_EQ(stems.size(), 1u);
  EXPECT_EQ(stems[0].id, "scan_7");
}

// Rows may name DICOM series folders (ctsr_phantom --format dicom writes them): with or without a
// trailing separator; without an id column the id is the hd folder's whole name (dots and all).
TEST(PairsCsv, SeriesFoldersAreVolumes) {
  TempDir dir("pairs");
  io::Volume v;
  v.data = random_tensor({3, 12, 10}, 4, DType::float32, -300, 300);
  v.geometry.spacing_xyz = {0.7, 0.7, 2.0};
  v.geometry.affine = {{{0.7, 0, 0, 0}, {0, 0.7, 0, 0}, {0, 0, 2.0, 0}, {0, 0, 0, 1}}};
  // A name with a dot is a series folder when it ends in a separator (or exists as a folder).
  for (const char* name : {"ld/case.1/", "hd/case.1/", "ld/scan_2", "hd/scan_2"}) {
    std::filesystem::create_directories(dir / "ld");
    std::filesystem::create_directories(dir / "hd");
    io::write_volume(dir / name, v);
  }
  const auto rows = train::read_pairs_csv(
      write_csv(dir, "pairs.csv", "ld,hd\nld/case.1/,hd/case.1\nld/scan_2,hd/scan_2/\n"));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].id, "case.1");
  EXPECT_EQ(rows[1].id, "scan_2");
  EXPECT_EQ(rows[1].ld, dir / "ld/scan_2");
  for (const auto& row : rows)
    for (const auto& path : {row.ld, row.hd}) {
      EXPECT_EQ(io::volume_format(path), io::VolumeFormat::dicom) << path;
      const io::Volume back = io::read_volume(path);
      EXPECT_EQ(back.data.shape(), v.data.shape()) << path;
      EXPECT_LE(test::relative_l2(back.data, v.data), 1e-2) << path;  // whole HU
    }
}

TEST(PairsCsv, RefusalsNameTheFileTheLineAndTheExpectation) {
  TempDir dir("pairs");
  auto refuse = [&](const std::string& text, const std::vector<std::string>& parts) {
    SCOPED_TRACE(text);
    const auto path = write_csv(dir, "bad.csv", text);
    std::vector<std::string> all = parts;
    all.push_back("bad.csv");
    expect_error_mentions([&] { train::read_pairs_csv(path); }, all);
  };
  refuse("", {"empty", "ld,hd"});
  refuse("ld,id\na,b\n", {"no column 'hd'"});
  refuse("ld,hd,ld\na,b,c\n", {"names column 'ld' twice (columns 1 and 3)"});
  refuse("ld,hd\na\n", {"line 2 has 1 fields, the header 2"});
  refuse("ld,hd\n,b\n", {"line 2 has an empty ld or hd path"});
  refuse("ld,hd,split\na,b,test\n", {"line 2 has split 'test'", "train or val"});
  refuse("ld,hd,id\na,b,../x\n", {"line 2 has id '../x'", "cannot name a file"});
  refuse(std::string("ld,hd,id\na,b,x\0y\n", 17), {"line 2 has an id with a NUL byte", "cannot name a file"});
  refuse("ld,hd,id\na,b,x\nc,d,x\n", {"line 3 repeats the id 'x'"});
  refuse("ld,hd\nld/x,/\n", {"line 2 has no id", "hd path '/'", "add an id column"});
  refuse("ld,hd\n\n", {"no pairs after the header"});
}

}  // namespace
}  // namespace ctsr::test
