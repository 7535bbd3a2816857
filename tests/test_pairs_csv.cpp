// pairs.csv (train/data/latent_cache.h): what is read, and the refusals, each one line naming the
// file, the line and what was expected. A column named twice used to take its last cell
// silently (issue 22, like a YAML key given twice).
#include <fstream>

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
  refuse("ld,hd\nld/x,hd/\n", {"line 2 has no id", "hd path 'hd/'", "add an id column"});
  refuse("ld,hd\n\n", {"no pairs after the header"});
}

}  // namespace
}  // namespace ctsr::test
