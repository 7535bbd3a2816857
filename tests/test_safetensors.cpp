// safetensors: a file assembled by tools/pytorch/make_checkpoint_fixtures.py (an independent
// writer) reads exactly; every dtype round-trips bit for bit with its metadata; the writer is
// atomic; malformed headers are refused with messages that name the file, the tensor and the field.
#include "runtime/formats/safetensors.h"

#include <algorithm>
#include <string>

#include "tests/checkpoint_fixtures.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"

namespace ctsr::test {
namespace {

using io::SafetensorsReader;
using io::write_safetensors;

template <class T>
Tensor counting_tensor(const Shape& shape, double scale, double shift) {
  std::vector<T> v(static_cast<size_t>(shape.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<T>(static_cast<double>(i) * scale + shift);
  return Tensor::from_vector(v, shape);
}

std::vector<std::pair<std::string, Tensor>> every_dtype() {
  return {
      {"f32", random_tensor({3, 5, 7}, 1, DType::float32)},
      {"f64", random_tensor({13, 3}, 2, DType::float64)},
      {"bf16", counting_tensor<bfloat16>({5, 3, 1}, 0.37, -2.0)},
      {"f16", counting_tensor<float16>({7}, -0.011, 0.5)},
      {"i32", counting_tensor<int32_t>({3, 3}, -123457, 99)},
      {"i64", counting_tensor<int64_t>({1, 9}, 1e12, -5)},
      {"u8", counting_tensor<uint8_t>({11}, 23, 1)},
      {"scalar", random_tensor({}, 3, DType::float32)},
      {"five_d", random_tensor({1, 3, 5, 3, 1}, 4, DType::float32)},
  };
}

std::vector<uint8_t> safetensors_bytes(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out;
  append_le(out, header.size(), 8);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

TEST(Safetensors, ReadsAFileFromAnIndependentWriter) {
  const ExpectedFile expected = expected_fixtures().at("reference.safetensors");
  SafetensorsReader reader(checkpoint_fixture("reference.safetensors"));
  // The header lists the tensors in reverse name order; names() follows the data.
  std::vector<std::string> names;
  for (const auto& t : expected.tensors) names.push_back(t.name);
  EXPECT_EQ(reader.names(), names);
  for (const ExpectedTensor& t : expected.tensors) {
    EXPECT_EQ(reader.record(t.name).shape, t.shape);
    EXPECT_TRUE(tensor_matches(reader.load(t.name), t));
  }
  EXPECT_EQ(reader.metadata(), expected.metadata);
  expect_error_mentions([&] { reader.record("omega"); }, {"reference.safetensors", "no tensor 'omega'"});
}

TEST(Safetensors, EveryDtypeAndMetadataRoundTrip) {
  TempDir dir("st");
  const auto tensors = every_dtype();
  const std::map<std::string, std::string> metadata = {
      {"format", "ctsr"}, {"step", "1200"}, {"note with spaces", "h\xc3\xa9llo \"quoted\"\n"}, {"empty", ""}};
  write_safetensors(dir / "all.safetensors", tensors, metadata);

  SafetensorsReader reader(dir / "all.safetensors");
  ASSERT_EQ(reader.names().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    SCOPED_TRACE(name);
    EXPECT_EQ(reader.names()[i], name);
    EXPECT_EQ(reader.record(name).dtype, t.dtype());
    EXPECT_EQ(reader.record(name).shape, t.shape().vec());
    EXPECT_TRUE(tensors_equal(reader.load(name), t));
  }
  EXPECT_EQ(reader.metadata(), metadata);

  // The header length is a multiple of 8, so the data starts 8-byte aligned.
  const std::vector<uint8_t> bytes = read_bytes(dir / "all.safetensors");
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[static_cast<size_t>(i)];
  EXPECT_EQ(header_size % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"all.safetensors"});
}

TEST(Safetensors, EmptyTensorsAndNoMetadata) {
  TempDir dir("st");
  write_safetensors(dir / "e.safetensors", {{"none", Tensor::empty({0, 3})}, {"one", random_tensor({1}, 5)}});
  SafetensorsReader reader(dir / "e.safetensors");
  EXPECT_EQ(reader.names(), (std::vector<std::string>{"none", "one"}));
  EXPECT_EQ(reader.load("none").numel(), 0);
  EXPECT_EQ(reader.record("none").shape, (std::vector<int64_t>{0, 3}));
  EXPECT_TRUE(reader.metadata().empty());
  write_safetensors(dir / "nothing.safetensors", {});
  EXPECT_TRUE(SafetensorsReader(dir / "nothing.safetensors").names().empty());
}

TEST(Safetensors, WritesTensorsFromDeviceMemory) {
  TempDir dir("st");
  std::vector<Device> devices = {Device::cuda_on_cpu()};
  if (cuda_available()) devices.push_back(Device::cuda(0));
  for (Device device : devices) {
    SCOPED_TRACE(device.str());
    Tensor host = random_tensor({5, 3}, 9);
    write_safetensors(dir / "d.safetensors", {{"x", host.to(device)}});
    EXPECT_TRUE(tensors_equal(SafetensorsReader(dir / "d.safetensors").load("x"), host));
  }
}

TEST(Safetensors, WriterFailuresLeaveNothingAndKeepTheOldFile) {
  TempDir dir("st");
  const auto target = dir / "ckpt.safetensors";
  write_safetensors(target, {{"old", random_tensor({3}, 1)}});
  const std::vector<uint8_t> before = read_bytes(target);
  Tensor t = random_tensor({2, 3}, 2);

  expect_error_mentions([&] { write_safetensors(target, {{"a", t}, {"b", t}, {"a", t}}); },
                        {"write_safetensors", "ckpt.safetensors", "'a' appears twice", "entries 0 and 2"});
  expect_error_mentions([&] { write_safetensors(target, {{"a", t}, {"u", Tensor()}}); },
                        {"ckpt.safetensors", "tensor 'u' is undefined"});
  expect_error_mentions([&] { write_safetensors(target, {{"__metadata__", t}}); },
                        {"ckpt.safetensors", "'__metadata__'", "reserved"});
  expect_error_mentions([&] { write_safetensors(target, {{"bad\xff", t}}); },
                        {"ckpt.safetensors", "not valid UTF-8"});
  expect_error_mentions([&] { write_safetensors(target, {{"a", t}}, {{"k", "bad\xfe"}}); },
                        {"ckpt.safetensors", "not valid UTF-8"});
  expect_error_mentions([&] { write_safetensors(dir / "missing" / "x.safetensors", {{"a", t}}); },
                        {"missing", "does not exist"});
  EXPECT_EQ(read_bytes(target), before);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"ckpt.safetensors"});

  // A successful write replaces the file.
  write_safetensors(target, {{"new", t}});
  EXPECT_EQ(SafetensorsReader(target).names(), std::vector<std::string>{"new"});
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"ckpt.safetensors"});
}

TEST(Safetensors, MalformedHeadersNameTheFileAndTheField) {
  TempDir dir("st");
  const auto path = dir / "bad.safetensors";
  auto refuse = [&](const std::string& header, size_t data_bytes, const std::vector<std::string>& parts) {
    SCOPED_TRACE(header);
    write_bytes(path, safetensors_bytes(header, std::vector<uint8_t>(data_bytes, 7)));
    std::vector<std::string> all = parts;
    all.push_back("bad.safetensors");
    expect_error_mentions([&] { SafetensorsReader r(path); }, all);
  };
  const std::string f32_2 = R"("dtype":"F32","shape":[2])";
  refuse(R"({"a": )", 0, {"not valid JSON"});
  refuse(R"([1, 2])", 0, {"header is a JSON array", "expected an object"});
  refuse(R"({"a":{)" + f32_2 + R"(,"data_offsets":[0,8]}})", 4,
         {"tensor 'a'", "data_offsets [0, 8]", "reach beyond the 4-byte data section", "truncated?"});
  refuse(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8,
         {"tensor 'a'", "hold 8 bytes", "shape [3] of F32 needs 12"});
  refuse(R"({"a":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", 2,
         {"tensor 'a'", "dtype \"BOOL\" is not supported", "F32, F64, BF16, F16, I32, I64 or U8"});
  refuse(R"({"a":{"dtype":7,"shape":[2],"data_offsets":[0,2]}})", 2, {"tensor 'a'", "dtype 7"});
  refuse(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", 8, {"tensor 'a'", "no 'shape' field"});
  refuse(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, {"tensor 'a'", "shape [-2]"});
  refuse(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8, {"tensor 'a'", "shape [2.5]"});
  refuse(R"({"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1],"data_offsets":[0,1]}})", 1,
         {"tensor 'a'", "at most 6"});
  refuse(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, {"tensor 'a'", "data_offsets [8,0]"});
  refuse(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8, {"tensor 'a'", "data_offsets [0]"});
  refuse(R"({"a":{)" + f32_2 + R"(,"data_offsets":[0,8]},"b":{)" + f32_2 + R"(,"data_offsets":[4,12]}})", 12,
         {"'a' (data_offsets [0, 8])", "'b' ([4, 12])", "overlap"});
  refuse(R"({"a":[1,2]})", 0, {"tensor 'a'", "header entry is [1,2]"});
  refuse(R"({"__metadata__":{"n":3}})", 0, {"__metadata__ 'n' is 3", "expected a string"});
  refuse(R"({"__metadata__":[]})", 0, {"__metadata__ is []"});
  refuse(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,0]}})", 0,
         {"tensor 'a'", "more than 2^64"});

  write_bytes(path, {1, 2, 3});
  expect_error_mentions([&] { SafetensorsReader r(path); }, {"bad.safetensors", "3 bytes", "fewer than the 8-byte"});
  std::vector<uint8_t> long_header = safetensors_bytes("{}", {});
  put_le(long_header, 0, 1000, 8);
  write_bytes(path, long_header);
  expect_error_mentions([&] { SafetensorsReader r(path); },
                        {"bad.safetensors", "header length 1000 exceeds the 2 bytes that follow it"});

  // A real file cut inside its data.
  write_safetensors(dir / "good.safetensors", every_dtype());
  const std::vector<uint8_t> good = read_bytes(dir / "good.safetensors");
  ASSERT_GT(good.size(), 10u);
  write_bytes(path, std::vector<uint8_t>(good.begin(), good.end() - 10));
  expect_error_mentions([&] { SafetensorsReader r(path); }, {"bad.safetensors", "reach beyond", "truncated?"});
}

// Regressions of issue 22 (found by hand and by fuzzing on 1867c3e): a header of 200,000 nested
// brackets overflowed the stack in the JSON parser, and a tensor or metadata key given twice
// silently took the last value.
TEST(Safetensors, DeepNestingAndRepeatedKeysAreRefused) {
  TempDir dir("st");
  const auto path = dir / "hostile.safetensors";
  auto refuse = [&](const std::string& header, const std::vector<std::string>& parts) {
    write_bytes(path, safetensors_bytes(header, {}));
    std::vector<std::string> all = parts;
    all.push_back("hostile.safetensors");
    expect_error_mentions([&] { SafetensorsReader r(path); }, all);
  };
  refuse(std::string(200000, '[') + std::string(200000, ']'), {"nests deeper than 16 levels"});
  std::string objects;
  for (int i = 0; i < 100000; ++i) objects += "{\"a\":";
  refuse(objects + "1" + std::string(100000, '}'), {"nests deeper than 16 levels"});
  const std::string f32_1 = R"("dtype":"F32","shape":[1])";
  refuse(R"({"w":{)" + f32_1 + R"(,"data_offsets":[0,4]},"b":{)" + f32_1 + R"(,"data_offsets":[4,8]},"w":{)" + f32_1 +
             R"(,"data_offsets":[8,12]}})",
         {"key 'w' appears twice in the header (entries 1 and 3)"});
  refuse(R"({"__metadata__":{"step":"1","kind":"vqae","step":"2"}})",
         {"key 'step' appears twice in '__metadata__' (entries 1 and 3)"});
  refuse(R"({"w":{"dtype":"F32","shape":[1],"dtype":"F64","data_offsets":[0,4]}})",
         {"key 'dtype' appears twice in 'w'"});
  // Legal depth (shape arrays inside entries) still reads.
  write_bytes(path, safetensors_bytes(R"({"__metadata__":{"k":"v"},"w":{)" + f32_1 + R"(,"data_offsets":[0,4]}})",
                                      std::vector<uint8_t>(4, 0)));
  SafetensorsReader reader(path);
  EXPECT_EQ(reader.metadata().at("k"), "v");
  EXPECT_EQ(reader.record("w").shape, (std::vector<int64_t>{1}));
}

}  // namespace
}  // namespace ctsr::test
