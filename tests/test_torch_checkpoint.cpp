// torch.save checkpoints: fixtures written by PyTorch (a Lightning-style checkpoint with foreign
// objects, a bare state dict in pickle protocol 5 and its ZIP64 rewrite) must give every tensor
// exactly; loading is lazy (a corrupt storage breaks only the tensors that use it); hand-made
// checkpoints cover strided views, wrappers and every refusal; and open_tensor_source chooses the
// format by content.
#include "runtime/formats/torch_checkpoint.h"

#include <algorithm>
#include <set>
#include <string>

#include <zlib.h>

#include "runtime/formats/safetensors.h"
#include "runtime/formats/zip_archive.h"
#include "tests/checkpoint_fixtures.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"

namespace ctsr::test {
namespace {

using io::TorchCheckpoint;

void expect_source_matches(const io::TensorSource& source, const ExpectedFile& expected) {
  std::vector<std::string> names;
  for (const auto& t : expected.tensors) names.push_back(t.name);
  ASSERT_EQ(source.names(), names);
  for (const ExpectedTensor& t : expected.tensors) {
    SCOPED_TRACE(t.name);
    EXPECT_TRUE(source.contains(t.name));
    const io::TensorRecord& r = source.record(t.name);
    EXPECT_EQ(r.name, t.name);
    EXPECT_EQ(r.dtype, t.dtype);
    EXPECT_EQ(r.shape, t.shape);
    EXPECT_TRUE(tensor_matches(source.load(t.name), t));
  }
}

TEST(TorchCheckpoint, LightningCheckpointMatchesPyTorch) {
  const ExpectedFile expected = expected_fixtures().at("lightning.ckpt");
  TorchCheckpoint ckpt(checkpoint_fixture("lightning.ckpt"));
  expect_source_matches(ckpt, expected);
  EXPECT_EQ(ckpt.skipped_entries(), expected.skipped);
  EXPECT_EQ(ckpt.path(), checkpoint_fixture("lightning.ckpt"));
  EXPECT_FALSE(ckpt.contains("optimizer_states"));
  expect_error_mentions([&] { ckpt.record("conv.weights"); }, {"lightning.ckpt", "no tensor 'conv.weights'"});
  expect_error_mentions([&] { ckpt.load("conv.weights"); }, {"lightning.ckpt", "no tensor 'conv.weights'"});
  // The views were saved as views: their loads are contiguous copies of the viewed elements.
  EXPECT_EQ(ckpt.record("decoder.proj.weight_t").shape, (std::vector<int64_t>{7, 3}));
  EXPECT_EQ(ckpt.record("decoder.gate").shape, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(ckpt.record("bn.num_batches_tracked").shape, std::vector<int64_t>{});
}

TEST(TorchCheckpoint, BareStateDictInProtocol5AndZip64) {
  const auto expected = expected_fixtures();
  for (const char* name : {"bare_state_dict.pt", "bare_state_dict_zip64.pt"}) {
    SCOPED_TRACE(name);
    TorchCheckpoint ckpt(checkpoint_fixture(name));
    expect_source_matches(ckpt, expected.at(name));
    EXPECT_TRUE(ckpt.skipped_entries().empty());
  }
}

TEST(TorchCheckpoint, OpenTensorSourceChoosesByContentNotName) {
  TempDir dir("ckpt");
  std::filesystem::copy_file(checkpoint_fixture("lightning.ckpt"), dir / "weights.safetensors");
  std::filesystem::copy_file(checkpoint_fixture("reference.safetensors"), dir / "model.ckpt");
  auto torch_source = io::open_tensor_source(dir / "weights.safetensors");
  EXPECT_NE(dynamic_cast<TorchCheckpoint*>(torch_source.get()), nullptr);
  EXPECT_EQ(torch_source->names().size(), expected_fixtures().at("lightning.ckpt").tensors.size());
  auto safetensors_source = io::open_tensor_source(dir / "model.ckpt");
  EXPECT_NE(dynamic_cast<io::SafetensorsReader*>(safetensors_source.get()), nullptr);
  expect_source_matches(*safetensors_source, expected_fixtures().at("reference.safetensors"));

  write_bytes(dir / "notes.bin", {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'});
  expect_error_mentions([&] { io::open_tensor_source(dir / "notes.bin"); },
                        {"notes.bin", "torch.save checkpoint", "safetensors", "68 65 6c 6c 6f"});
  write_bytes(dir / "empty.bin", {});
  expect_error_mentions([&] { io::open_tensor_source(dir / "empty.bin"); }, {"empty.bin", "is empty"});
  expect_error_mentions([&] { io::open_tensor_source(dir / "absent.pt"); }, {"cannot open", "absent.pt"});
}

TEST(TorchCheckpoint, LegacyFormatIsRefusedWithAdvice) {
  for (auto open : {+[](const std::filesystem::path& p) { TorchCheckpoint c(p); },
                    +[](const std::filesystem::path& p) { io::open_tensor_source(p); }}) {
    expect_error_mentions([&] { open(checkpoint_fixture("legacy.pt")); },
                          {"legacy.pt", "legacy torch.save file", "_use_new_zipfile_serialization=True"});
  }
}

// Corrupting any one storage entry of a copy breaks exactly the tensors viewing that storage (with
// a CRC error naming the entry and the tensor); opening never reads storages, and the storages of
// skipped entries (optimizer state, callbacks) are never read at all.
TEST(TorchCheckpoint, LoadReadsOnlyTheTensorsOwnStorage) {
  TempDir dir("ckpt");
  const ExpectedFile expected = expected_fixtures().at("lightning.ckpt");
  const std::vector<uint8_t> original = read_bytes(checkpoint_fixture("lightning.ckpt"));
  io::ZipArchive intact(checkpoint_fixture("lightning.ckpt"));
  std::map<std::string, int> failures;
  int never_read = 0;
  write_bytes(dir / "corrupt.ckpt", original);
  for (const io::ZipEntry& entry : intact.entries()) {
    if (entry.name.rfind("archive/data/", 0) != 0 || entry.uncompressed_size == 0) continue;
    SCOPED_TRACE(entry.name);
    const uint64_t at = intact.data_offset(entry) + entry.uncompressed_size / 2;
    patch_bytes(dir / "corrupt.ckpt", at, {static_cast<uint8_t>(original[at] ^ 0x55)});
    TorchCheckpoint ckpt(dir / "corrupt.ckpt");
    std::set<std::string> failing;
    for (const ExpectedTensor& t : expected.tensors) {
      try {
        EXPECT_TRUE(tensor_matches(ckpt.load(t.name), t));
      } catch (const Error& e) {
        failing.insert(t.name);
        for (const std::string& part : {std::string("CRC-32 mismatch"), entry.name, "loading tensor '" + t.name + "'"})
          expect_contains(e.what(), part);
      }
    }
    patch_bytes(dir / "corrupt.ckpt", at, {original[at]});
    if (failing.empty()) ++never_read;
    EXPECT_EQ(failing.count("shared.head"), failing.count("shared.tail")) << "the two views share one storage";
    for (const std::string& name : failing) ++failures[name];
  }
  for (const ExpectedTensor& t : expected.tensors) {
    EXPECT_EQ(failures[t.name], t.values.empty() ? 0 : 1) << t.name;
  }
  EXPECT_GT(never_read, 5) << "optimizer and callback storages must not be read";
}

TEST(TorchCheckpoint, TruncatedAndCorruptCopies) {
  TempDir dir("ckpt");
  const std::vector<uint8_t> original = read_bytes(checkpoint_fixture("lightning.ckpt"));
  for (size_t cut : {size_t{100}, original.size() / 2, original.size() - 30, original.size() - 3}) {
    SCOPED_TRACE(cut);
    write_bytes(dir / "model.ckpt", std::vector<uint8_t>(original.begin(), original.begin() + static_cast<std::ptrdiff_t>(cut)));
    expect_error_mentions([&] { TorchCheckpoint c(dir / "model.ckpt"); },
                          {"model.ckpt", "truncated", "end-of-central-directory"});
    expect_error_mentions([&] { io::open_tensor_source(dir / "model.ckpt"); }, {"model.ckpt", "truncated"});
  }
  std::vector<uint8_t> copy = original;
  {
    io::ZipArchive intact(checkpoint_fixture("lightning.ckpt"));
    copy[intact.data_offset(intact.entry("archive/data.pkl")) + 200] ^= 0x01;
  }
  write_bytes(dir / "model.ckpt", copy);
  expect_error_mentions([&] { TorchCheckpoint c(dir / "model.ckpt"); },
                        {"model.ckpt", "entry 'archive/data.pkl'", "CRC-32 mismatch"});
}

// Issue 22 (on 1867c3e): a small checkpoint whose data.pkl inflates far beyond what a state
// dict needs (there: 1 MB to 1 GiB) made the reader inflate all of it before looking at the
// first opcode. The cap comes from the archive (16 MiB + 64 KiB per entry) and is applied to the
// size the zip directory declares, before anything is inflated.
TEST(TorchCheckpoint, APickleLargerThanAStateDictNeedsIsRefusedBeforeInflating) {
  TempDir dir("ckpt");
  const uint64_t inflated = uint64_t{20} << 20;
  std::vector<uint8_t> zeros(inflated, 0), deflated(compressBound(uLong(inflated)));
  for (size_t i = 0; i < zeros.size(); i += 997) zeros[i] = 1;  // well within deflate's maximum ratio
  z_stream z{};
  ASSERT_EQ(deflateInit2(&z, 9, Z_DEFLATED, -MAX_WBITS, 9, Z_DEFAULT_STRATEGY), Z_OK);
  z.next_in = zeros.data();
  z.avail_in = uInt(zeros.size());
  z.next_out = deflated.data();
  z.avail_out = uInt(deflated.size());
  ASSERT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  deflated.resize(z.total_out);
  deflateEnd(&z);
  // A stored zip of one entry, then its method, sizes and CRC patched to a deflated one.
  std::vector<uint8_t> zip = make_stored_zip({{"archive/data.pkl", deflated}});
  const uint32_t crc = uint32_t(crc32(0, zeros.data(), uInt(zeros.size())));
  const size_t central = zip.size() - 22 - (46 + 16);
  for (size_t header : {size_t{0}, central}) {
    const size_t shift = header == 0 ? 0 : 2;  // the central header has "version made by" first
    put_le(zip, header + 8 + shift, 8, 2);      // method: deflate
    put_le(zip, header + 14 + shift, crc, 4);
    put_le(zip, header + 22 + shift, inflated, 4);  // uncompressed size
  }
  write_bytes(dir / "bomb.ckpt", zip);
  EXPECT_LT(zip.size(), size_t{64} << 10);
  expect_error_mentions([&] { TorchCheckpoint c(dir / "bomb.ckpt"); },
                        {"bomb.ckpt", "archive/data.pkl inflates to 20971520 bytes", "more than the 16842752",
                         "1 archive entries"});
}

// ---- hand-made checkpoints ----

struct Storage {
  std::string key;
  std::vector<uint8_t> bytes;
};

std::filesystem::path make_checkpoint(const TempDir& dir, const std::vector<uint8_t>& pickle,
                                      const std::vector<Storage>& storages, const std::string& name = "hand.pt") {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> entries = {{"archive/data.pkl", pickle}};
  for (const Storage& s : storages) entries.push_back({"archive/data/" + s.key, s.bytes});
  entries.push_back({"archive/version", {'3', '\n'}});
  write_bytes(dir / name, make_stored_zip(entries));
  return dir / name;
}

std::vector<float> iota_floats(size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(i) * 0.5f - 3.0f;
  return v;
}

// {"w": tensor}, the tensor built by `add`.
template <class F>
std::vector<uint8_t> state_dict_with(F add, const std::string& key = "w") {
  PickleBuilder b;
  b.proto().op('}').mark().str(key);
  add(b);
  b.op('u');
  return b.done();
}

TEST(TorchCheckpoint, StridedViewsGatherIntoContiguousTensors) {
  TempDir dir("ckpt");
  const std::vector<float> storage = iota_floats(24);
  // A 3-d permuted view with an offset, an expanded (stride 0) one, and a 0-d one.
  PickleBuilder b;
  b.proto().op('}').mark();
  b.str("permuted").tensor("FloatStorage", "0", 24, 1, {2, 3, 2}, {1, 8, 3});
  b.str("expanded").tensor("FloatStorage", "0", 24, 5, {3, 4}, {2, 0});
  b.str("scalar").tensor("FloatStorage", "0", 24, 23, {}, {});
  b.op('u');
  TorchCheckpoint ckpt(make_checkpoint(dir, b.done(), {{"0", bytes_of(storage)}}));
  std::vector<float> permuted;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 2; ++k) permuted.push_back(storage[static_cast<size_t>(1 + i * 1 + j * 8 + k * 3)]);
  EXPECT_EQ(ckpt.load("permuted").to_vector<float>(), permuted);
  std::vector<float> expanded;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) expanded.push_back(storage[static_cast<size_t>(5 + 2 * i)]);
  EXPECT_EQ(ckpt.load("expanded").to_vector<float>(), expanded);
  EXPECT_EQ(ckpt.load("scalar").to_vector<float>(), std::vector<float>{storage[23]});
  EXPECT_EQ(ckpt.load("scalar").ndim(), 0);
}

TEST(TorchCheckpoint, ParametersSubclassesAndUntypedStorages) {
  TempDir dir("ckpt");
  const std::vector<float> storage = iota_floats(6);
  PickleBuilder b;
  b.proto().op('}').mark();
  // torch._utils._rebuild_parameter(tensor, True, OrderedDict())
  b.str("param").global("torch._utils", "_rebuild_parameter").mark();
  b.tensor("FloatStorage", "0", 6, 0, {2, 3}, {3, 1}).op(0x88).global("collections", "OrderedDict").op(')').op('R');
  b.op('t').op('R');
  // torch._tensor._rebuild_from_type_v2(_rebuild_tensor_v2, SomeSubclass, (args...), {})
  b.str("subclass").global("torch._tensor", "_rebuild_from_type_v2").mark();
  b.global("torch._utils", "_rebuild_tensor_v2").global("my.module", "MyTensor").mark();
  b.storage("FloatStorage", "0", 6).integer(2).ints({4}).ints({1}).op(0x89);
  b.global("collections", "OrderedDict").op(')').op('R').op('t').op('}').op('t').op('R');
  b.str("bytes").tensor("UntypedStorage", "1", 5, 0, {5}, {1});
  b.op('u');
  TorchCheckpoint ckpt(make_checkpoint(dir, b.done(), {{"0", bytes_of(storage)}, {"1", {1, 2, 3, 4, 250}}}));
  EXPECT_EQ(ckpt.load("param").to_vector<float>(), storage);
  EXPECT_EQ(ckpt.load("subclass").to_vector<float>(), std::vector<float>(storage.begin() + 2, storage.end()));
  EXPECT_EQ(ckpt.record("bytes").dtype, DType::uint8);
  EXPECT_EQ(ckpt.load("bytes").to_vector<uint8_t>(), (std::vector<uint8_t>{1, 2, 3, 4, 250}));
}

TEST(TorchCheckpoint, ForeignPartsAreSkippedAndNonTensorStateEntriesListed) {
  TempDir dir("ckpt");
  PickleBuilder b;
  b.proto().op('}').mark();
  // Skipped parts may hold anything, even storages of dtypes ctsr lacks.
  b.str("optimizer_states").op(']').mark().tensor("BoolStorage", "1", 3, 0, {3}, {1}).op('e');
  b.str("state_dict").global("collections", "OrderedDict").op(')').op('R').mark();
  b.str("w").tensor("FloatStorage", "0", 2, 0, {2}, {1});
  b.str("_extra_state").op('N');
  b.op('u');
  b.str("hyper_parameters").global("omegaconf.dictconfig", "DictConfig").op(')').op(0x81).op('}').op('b');
  b.op('u');
  TorchCheckpoint ckpt(make_checkpoint(dir, b.done(), {{"0", bytes_of(iota_floats(2))}, {"1", {1, 0, 1}}}));
  EXPECT_EQ(ckpt.names(), std::vector<std::string>{"w"});
  EXPECT_EQ(ckpt.skipped_entries(),
            (std::vector<std::string>{"optimizer_states", "hyper_parameters", "state_dict/_extra_state"}));
  EXPECT_EQ(ckpt.load("w").to_vector<float>(), iota_floats(2));
}

TEST(TorchCheckpoint, RefusalsNameTheTensorAndTheProblem) {
  TempDir dir("ckpt");
  const std::vector<uint8_t> six = bytes_of(iota_floats(6));
  auto refuse = [&](const std::vector<uint8_t>& pickle, const std::vector<Storage>& storages,
                    const std::vector<std::string>& parts) {
    const auto path = make_checkpoint(dir, pickle, storages);
    expect_error_mentions([&] { TorchCheckpoint c(path); }, parts);
  };
  refuse(state_dict_with([](PickleBuilder& b) { b.tensor("FloatStorage", "0", 6, 3, {2, 3}, {-1, 1}); }),
         {{"0", six}}, {"hand.pt", "tensor 'w'", "stride[0] is -1", "negative strides are not supported"});
  refuse(state_dict_with([](PickleBuilder& b) { b.tensor("FloatStorage", "0", 6, 1, {2, 3}, {3, 1}); }),
         {{"0", six}}, {"hand.pt", "tensor 'w'", "offset 1", "reach beyond its storage '0' of 6 elements"});
  refuse(state_dict_with([](PickleBuilder& b) { b.tensor("BoolStorage", "0", 6, 0, {6}, {1}); }),
         {{"0", {1, 0, 1, 1, 0, 1}}}, {"tensor 'w'", "storage type torch.BoolStorage is not supported"});
  refuse(state_dict_with([](PickleBuilder& b) { b.tensor("FloatStorage", "7", 6, 0, {6}, {1}); }),
         {{"0", six}}, {"tensor 'w'", "storage entry 'archive/data/7' is missing"});
  refuse(state_dict_with([](PickleBuilder& b) { b.tensor("FloatStorage", "0", 6, 0, {6}, {1}); }),
         {{"0", std::vector<uint8_t>(20, 1)}}, {"tensor 'w'", "has 20 bytes, expected 6 float32 elements (24 bytes)"});
  refuse(state_dict_with([](PickleBuilder& b) {
           b.tensor("FloatStorage", "0", 6, 0, {1, 1, 1, 1, 1, 1, 6}, {6, 6, 6, 6, 6, 6, 1});
         }),
         {{"0", six}}, {"tensor 'w'", "has 7 dimensions", "at most 6"});
  refuse(state_dict_with([](PickleBuilder& b) {
           b.tensor("FloatStorage", "0", 6, 0, {1LL << 40, 1LL << 40}, {0, 0});
         }),
         {{"0", six}}, {"tensor 'w'", "too large"});
  refuse(state_dict_with([](PickleBuilder& b) {
           b.global("torch._utils", "_rebuild_qtensor").mark().integer(1).op('t').op('R');
         }),
         {}, {"tensor 'w'", "a kind ctsr cannot read", "torch._utils._rebuild_qtensor"});
  refuse(state_dict_with([](PickleBuilder& b) { b.str("not a tensor"); }, "step"), {},
         {"hand.pt", "neither a Lightning checkpoint", "'step' is str 'not a tensor'", "top-level keys: step"});
  refuse(PickleBuilder().proto().op(']').done(), {}, {"hand.pt", "holds list of 0", "expected a dict"});
  refuse(PickleBuilder().proto().op('}').mark().str("state_dict").integer(3).op('u').done(), {},
         {"hand.pt", "'state_dict' is int 3", "expected a dict of tensors"});
  refuse(state_dict_with([](PickleBuilder& b) { b.mark().str("cuda").op('t').op('Q'); }), {},
         {"hand.pt", "persistent id", "not a storage reference"});

  write_bytes(dir / "other.zip", make_stored_zip({{"model/weights.bin", {1, 2}}}));
  expect_error_mentions([&] { TorchCheckpoint c(dir / "other.zip"); },
                        {"other.zip", "without a '<prefix>/data.pkl' entry", "model/weights.bin"});
  const std::vector<uint8_t> good = state_dict_with([](PickleBuilder& b) { b.tensor("FloatStorage", "0", 6, 0, {6}, {1}); });
  write_bytes(dir / "big_endian.pt", make_stored_zip({{"archive/data.pkl", good}, {"archive/byteorder", {'b', 'i', 'g'}},
                                                      {"archive/data/0", six}}));
  expect_error_mentions([&] { TorchCheckpoint c(dir / "big_endian.pt"); },
                        {"big_endian.pt", "archive/byteorder is 'big'", "expected 'little'"});
  write_bytes(dir / "little.pt", make_stored_zip({{"archive/data.pkl", good}, {"archive/byteorder", {'l', 'i', 't', 't', 'l', 'e'}},
                                                  {"archive/data/0", six}}));
  EXPECT_EQ(TorchCheckpoint(dir / "little.pt").load("w").to_vector<float>(), iota_floats(6));
}

// Single-byte mutations of a real data.pkl (re-zipped with a valid CRC, so the unpickler and the
// tensor checks see them) either open and load or throw ctsr::Error; nothing else.
TEST(TorchCheckpoint, MutatedPicklesNeverCrash) {
  TempDir dir("ckpt");
  io::ZipArchive zip(checkpoint_fixture("bare_state_dict.pt"));
  std::vector<std::pair<std::string, std::vector<uint8_t>>> entries;
  for (const io::ZipEntry& e : zip.entries()) entries.push_back({e.name, zip.read(e)});
  ASSERT_EQ(entries[0].first, "archive/data.pkl");
  const std::vector<uint8_t> pickle = entries[0].second;
  const std::vector<uint8_t> base = make_stored_zip(entries);
  write_bytes(dir / "m.pt", base);
  // data.pkl is the first entry: its data follows a 30-byte local header and its name; its CRC is
  // at byte 14 of the local header and byte 16 of the first central-directory entry.
  const uint64_t data_at = 30 + entries[0].first.size();
  const uint64_t directory_at = le32(base, base.size() - 22 + 16);
  int opened = 0, refused = 0;
  for (size_t i = 0; i < pickle.size(); ++i) {
    for (uint8_t value : {uint8_t{0}, static_cast<uint8_t>(pickle[i] + 1), static_cast<uint8_t>(pickle[i] ^ 0x80)}) {
      std::vector<uint8_t> mutated = pickle;
      mutated[i] = value;
      std::vector<uint8_t> crc(4);
      put_le(crc, 0, crc32_of(mutated), 4);
      patch_bytes(dir / "m.pt", data_at + i, {value});
      patch_bytes(dir / "m.pt", 14, crc);
      patch_bytes(dir / "m.pt", directory_at + 16, crc);
      try {
        TorchCheckpoint ckpt(dir / "m.pt");
        for (const std::string& name : ckpt.names()) ckpt.load(name);
        ++opened;
      } catch (const Error&) {
        ++refused;
      }
    }
    patch_bytes(dir / "m.pt", data_at + i, {pickle[i]});
  }
  EXPECT_GT(opened, 0);
  EXPECT_GT(refused, 0);
}

}  // namespace
}  // namespace ctsr::test
