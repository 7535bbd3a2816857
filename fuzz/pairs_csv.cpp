// Fuzz harness: the pairs list of ctsr_vqae cache and the VQ-AE / RED-CNN training data
// (read_pairs_csv in train/data/latent_cache.h; header with ld,hd and optionally id,split). As
// ctsr_vqae cache does, the rows then get their splits (assign_splits). Rows that read must have
// distinct ids that can name a file, and every row a split of train or val afterwards.
#include <set>
#include <string>
#include <vector>

#include "fuzz/fuzz_support.h"
#include "train/data/latent_cache.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ctsr;
  static const char* const kName = "pairs_csv";
  const std::filesystem::path path = fuzz::Scratch::get().write("pairs.csv", data, size);
  return fuzz::run(kName, [&] {
    std::vector<train::PairRow> rows = train::read_pairs_csv(path);
    fuzz::expect(!rows.empty(), kName, "read_pairs_csv returned no rows and no error");
    std::set<std::string> ids;
    for (const train::PairRow& row : rows) {
      fuzz::expect(!row.id.empty() && row.id.find('/') == std::string::npos && row.id != "." && row.id != "..", kName,
                   "a row has the id '" + row.id + "', which cannot name a cache file");
      fuzz::expect(ids.insert(row.id).second, kName, "the id '" + row.id + "' appears twice");
      fuzz::expect(!row.ld.empty() && !row.hd.empty(), kName, "a row has an empty path");
    }
    train::assign_splits(rows, 0.2, 1234);
    for (const train::PairRow& row : rows)
      fuzz::expect(row.split == "train" || row.split == "val", kName,
                   "row '" + row.id + "' has split '" + row.split + "' after assign_splits");
  });
}
