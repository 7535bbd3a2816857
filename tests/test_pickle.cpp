// The unpickler: one Python value pickled by Python with protocols 2-5 decodes to the same
// structure; hand-made pickles cover the remaining opcodes; hostile input (truncation at every
// byte, mutations, underflow, bad memo indices, huge lengths, deep nesting, cycles) gives
// ctsr::Errors naming the opcode and offset, never a crash.
#include "runtime/formats/pickle.h"

#include <string>

#include "tests/checkpoint_fixtures.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

using io::pickle::Document;
using io::pickle::Kind;
using io::pickle::Value;

Document unpickle(const std::string& bytes, const io::pickle::PersistentLoad& load = {}) {
  return io::pickle::unpickle(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test.pkl", load);
}
// A pickle written as a string literal (which may hold NUL bytes).
template <size_t N>
Document P(const char (&literal)[N], const io::pickle::PersistentLoad& load = {}) {
  return unpickle(std::string(literal, N - 1), load);
}
Document unpickle(const std::vector<uint8_t>& bytes) {
  return io::pickle::unpickle(bytes.data(), bytes.size(), "test.pkl");
}

std::vector<std::string> string_keys(const Value& dict) {
  std::vector<std::string> keys;
  for (const auto& [k, v] : dict.entries) keys.push_back(k->is_string() ? k->text : k->describe());
  return keys;
}

// tools/pytorch/make_checkpoint_fixtures.py: pickle_value().
void expect_python_value(const Value& root) {
  ASSERT_TRUE(root.is(Kind::dict)) << root.describe();
  EXPECT_EQ(string_keys(root), (std::vector<std::string>{"none", "true", "false", "ints", "floats", "text", "bytes",
                                                          "nested", "ordered", "set", "object", "empty"}));
  EXPECT_TRUE(root.get("none")->is(Kind::none));
  EXPECT_TRUE(root.get("true")->is(Kind::boolean) && root.get("true")->boolean);
  EXPECT_TRUE(root.get("false")->is(Kind::boolean) && !root.get("false")->boolean);

  const Value& ints = *root.get("ints");
  ASSERT_TRUE(ints.is(Kind::list));
  const std::vector<int64_t> small = {0,          1,           -1,          255,           256,
                                      65535,      65536,       -129,        2147483647,    -2147483648LL,
                                      1LL << 40,  -(1LL << 62)};
  ASSERT_EQ(ints.items.size(), small.size() + 2);
  for (size_t i = 0; i < small.size(); ++i) {
    ASSERT_TRUE(ints.items[i]->is_int()) << i;
    EXPECT_EQ(ints.items[i]->integer, small[i]) << i;
  }
  // 2^63 and 2^100 do not fit in int64.
  EXPECT_TRUE(ints.items[small.size()]->is_object_of("builtins.int"));
  EXPECT_TRUE(ints.items[small.size() + 1]->is_object_of("builtins.int"));

  const Value& floats = *root.get("floats");
  ASSERT_TRUE(floats.is(Kind::tuple));
  ASSERT_EQ(floats.items.size(), 4u);
  EXPECT_EQ(floats.items[0]->floating, 0.5);
  EXPECT_EQ(floats.items[1]->floating, -2.25);
  EXPECT_EQ(floats.items[2]->floating, 1e300);
  EXPECT_EQ(floats.items[3]->floating, 3.141592653589793);

  EXPECT_EQ(root.get("text")->text, "h\xc3\xa9llo w\xc3\xb6rld");
  ASSERT_TRUE(root.get("bytes")->is(Kind::bytes)) << root.get("bytes")->describe();
  EXPECT_EQ(root.get("bytes")->text, std::string("\x00\xff" "ab", 4));

  const Value& nested = *root.get("nested");
  ASSERT_TRUE(nested.is(Kind::dict));
  ASSERT_EQ(nested.entries.size(), 2u);
  const Value& a = *nested.get("a");
  ASSERT_TRUE(a.is(Kind::tuple) && a.items.size() == 2);
  EXPECT_EQ(a.items[0]->integer, 1);
  const Value& inner = *a.items[1];
  ASSERT_TRUE(inner.is(Kind::tuple) && inner.items.size() == 2);
  EXPECT_EQ(inner.items[0]->text, "b");
  const Value& pair = *inner.items[1];
  ASSERT_TRUE(pair.is(Kind::list) && pair.items.size() == 2);
  EXPECT_EQ(pair.items[0], pair.items[1]) << "a shared object must stay shared (memo)";
  EXPECT_EQ(pair.items[0]->items.size(), 3u);
  EXPECT_TRUE(nested.entries[1].first->is_int() && nested.entries[1].first->integer == 7);
  EXPECT_EQ(nested.entries[1].second->text, "seven");

  const Value& ordered = *root.get("ordered");
  ASSERT_TRUE(ordered.is(Kind::dict)) << ordered.describe();
  EXPECT_EQ(string_keys(ordered), (std::vector<std::string>{"z", "y"}));

  const Value& set = *root.get("set");
  ASSERT_TRUE(set.is(Kind::set)) << set.describe();
  ASSERT_EQ(set.items.size(), 1u);
  EXPECT_EQ(set.items[0]->integer, 5);

  const Value& object = *root.get("object");
  ASSERT_TRUE(object.is_object_of("__main__.HParams")) << object.describe();
  ASSERT_NE(object.state, nullptr);
  EXPECT_EQ(object.state->get("lr")->floating, 2.5e-4);
  EXPECT_EQ(object.state->get("channels")->items.size(), 3u);
  EXPECT_EQ(object.state->get("name")->text, "vqae-3d");
  EXPECT_EQ(object.state->get("schedule")->get("flags")->items.size(), 2u);

  const Value& empty = *root.get("empty");
  ASSERT_TRUE(empty.is(Kind::tuple) && empty.items.size() == 3);
  EXPECT_TRUE(empty.items[0]->is(Kind::tuple) && empty.items[0]->items.empty());
  EXPECT_TRUE(empty.items[1]->is(Kind::list) && empty.items[1]->items.empty());
  EXPECT_TRUE(empty.items[2]->is(Kind::dict) && empty.items[2]->entries.empty());
}

TEST(Pickle, PythonProtocols2To5DecodeAlike) {
  for (int protocol : {2, 3, 4, 5}) {
    SCOPED_TRACE("protocol " + std::to_string(protocol));
    std::vector<uint8_t> bytes = read_bytes(checkpoint_fixture("pickle_p" + std::to_string(protocol) + ".pkl"));
    Document doc = unpickle(bytes);
    expect_python_value(doc.root());
  }
}

TEST(Pickle, TextOpcodesObjectsAndPersistentIds) {
  EXPECT_TRUE(P("I01\n.").root().boolean);
  EXPECT_EQ(P("I-42\n.").root().integer, -42);
  EXPECT_EQ(P("L123L\n.").root().integer, 123);
  EXPECT_TRUE(P("L123456789012345678901234567890\n.").root().is_object_of("builtins.int"));
  EXPECT_EQ(P("F1.5\n.").root().floating, 1.5);
  EXPECT_EQ(P("K\x07p3\n0g3\n.").root().integer, 7);                            // PUT, POP, GET
  EXPECT_EQ(P("(0K\x01.").root().integer, 1);                                   // POP on an empty frame drops the MARK
  EXPECT_EQ(P("K\x01" "2\x86.").root().items.size(), 2u);                       // DUP
  EXPECT_EQ(P("U\x03" "abc.").root().text, "abc");              // SHORT_BINSTRING
  EXPECT_EQ(P("\x8a\x00.").root().integer, 0);                  // empty LONG1
  EXPECT_EQ(P("\x8a\x02\x00\xff.").root().integer, -256);
  EXPECT_EQ(P("\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff.").root().integer, -1);
  EXPECT_EQ(P("\x8d\x02\x00\x00\x00\x00\x00\x00\x00hi.").root().text, "hi");  // BINUNICODE8
  EXPECT_EQ(P("\x8e\x01\x00\x00\x00\x00\x00\x00\x00z.").root().text, "z");   // BINBYTES8

  const Document obj = P("(c__main__\nFoo\nK\x01o.");  // OBJ
  EXPECT_TRUE(obj.root().is_object_of("__main__.Foo"));
  EXPECT_EQ(obj.root().items.size(), 1u);
  const Document inst = P("(K\x02i__main__\nBar\n.");  // INST
  EXPECT_TRUE(inst.root().is_object_of("__main__.Bar"));
  const Document ex = P("c__main__\nC\n)}\x92.");  // NEWOBJ_EX
  EXPECT_TRUE(ex.root().is_object_of("__main__.C"));
  const Document rec = P("ccopy_reg\n_reconstructor\n(c__main__\nD\nc__builtin__\nobject\nNtR.");
  EXPECT_TRUE(rec.root().is_object_of("__main__.D")) << rec.root().describe();
  // A dict subclass keeps its items; BUILD stores state on objects and is ignored by dicts.
  const Document sub = P("c__main__\nAttrDict\n)\x81(X\x01\x00\x00\x00kK\x05u}b.");
  EXPECT_EQ(sub.root().get("k")->integer, 5);
  EXPECT_TRUE(sub.root().state->is(Kind::dict));
  const Document od = P("ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00" "aK\x01u}b.");
  EXPECT_TRUE(od.root().is(Kind::dict));
  EXPECT_EQ(od.root().get("a")->integer, 1);
  // Setting an existing key replaces its value in place, as Python does.
  const Document dup = P("}(X\x01\x00\x00\x00" "aK\x01X\x01\x00\x00\x00" "bK\x02X\x01\x00\x00\x00" "aK\x03u.");
  EXPECT_EQ(string_keys(dup.root()), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(dup.root().get("a")->integer, 3);

  std::vector<std::string> seen;
  auto load = [&](Document& doc, const Value& pid) {
    seen.push_back(pid.describe());
    Value* v = doc.make(Kind::string);
    v->text = "loaded";
    return v;
  };
  EXPECT_EQ(P("(X\x07\x00\x00\x00storageK\x01tQ.", load).root().text, "loaded");
  EXPECT_EQ(P("Pabc\n.", load).root().text, "loaded");
  EXPECT_EQ(seen, (std::vector<std::string>{"tuple of 2", "str 'abc'"}));
}

TEST(Pickle, MalformedInputNamesOpcodeAndOffset) {
  expect_error_mentions([] { P(""); }, {"test.pkl", "no STOP opcode"});
  expect_error_mentions([] { P("\x80\x02"); }, {"test.pkl", "no STOP opcode"});
  expect_error_mentions([] { P("R."); }, {"test.pkl", "REDUCE (0x52) at offset 0", "stack underflow"});
  expect_error_mentions([] { P("(R."); }, {"REDUCE", "offset 1", "stack underflow"});
  expect_error_mentions([] { P("\x80\x02h\x05."); }, {"BINGET", "offset 2", "memo index 5 was never stored"});
  expect_error_mentions([] { P("X\xff\xff\x00\x00" "abc."); },
                        {"BINUNICODE", "offset 0", "needs 65535 bytes", "only 4 remain"});
  expect_error_mentions([] { P("\x8d\xff\xff\xff\xff\xff\xff\xff\xff."); },
                        {"BINUNICODE8", "needs 18446744073709551615 bytes"});
  expect_error_mentions([] { P("\x95\xff\xff\xff\xff\xff\xff\xff\x7f."); },
                        {"FRAME", "frame of"});
  expect_error_mentions([] { P("\xff."); }, {"test.pkl", "unsupported pickle opcode 0xff", "offset 0"});
  expect_error_mentions([] { P("\x80\x02\x82\x01."); }, {"unsupported pickle opcode 0x82 (EXT1) at offset 2"});
  expect_error_mentions([] { P("\x80\x06."); }, {"protocol 6"});
  expect_error_mentions([] { P("}K\x01" "a."); }, {"APPEND", "cannot append to a dict"});
  expect_error_mentions([] { P("](K\x01u."); }, {"SETITEMS", "odd number of items"});
  expect_error_mentions([] { P("](K\x01K\x02u."); }, {"SETITEMS", "cannot set an item on a list"});
  expect_error_mentions([] { P("K\x01t."); }, {"TUPLE", "no MARK"});
  expect_error_mentions([] { P("Q."); }, {"BINPERSID", "stack underflow"});
  expect_error_mentions([] { P("K\x01Q."); }, {"BINPERSID", "no persistent loader"});
  expect_error_mentions([] { P("ctorch\n"); }, {"GLOBAL", "no terminating newline"});
  expect_error_mentions([] { P("\x8b\xff\xff\xff\xff."); }, {"LONG4", "negative byte count"});
  expect_error_mentions([] { P("K\x01K\x02\x93."); }, {"STACK_GLOBAL", "must be str"});
  EXPECT_TRUE(P("K\x01)R.").root().is(Kind::object));  // calling an int: tolerated, an object
  expect_error_mentions([] { P("ga\n."); }, {"GET", "'a' is not a memo index"});
}

TEST(Pickle, DeepNestingAndCyclesAreSafe) {
  const size_t depth = 100000;
  std::string deep(depth, ']');
  deep += std::string(depth - 1, 'a') + ".";
  Document doc = unpickle(deep);
  size_t levels = 1;
  for (const Value* v = &doc.root(); !v->items.empty(); v = v->items[0]) ++levels;
  EXPECT_EQ(levels, depth);

  Document cycle = P("]q\x00h\x00" "a.");  // a list that contains itself
  ASSERT_EQ(cycle.root().items.size(), 1u);
  EXPECT_EQ(cycle.root().items[0], &cycle.root());
}

// Every prefix of a real pickle, and every single-byte mutation of it, either decodes or throws a
// ctsr::Error; nothing else (no crash, no std::bad_alloc from a length taken on trust).
TEST(Pickle, TruncationsAndMutationsNeverCrash) {
  const std::vector<uint8_t> original = read_bytes(checkpoint_fixture("pickle_p4.pkl"));
  ASSERT_FALSE(original.empty());
  for (size_t cut = 0; cut < original.size(); ++cut) {
    std::vector<uint8_t> prefix(original.begin(), original.begin() + static_cast<std::ptrdiff_t>(cut));
    EXPECT_THROW(unpickle(prefix), Error) << "cut at " << cut;
  }
  size_t failures = 0;
  for (size_t i = 0; i < original.size(); ++i) {
    for (uint8_t value : {uint8_t{0x00}, uint8_t{0xff}, static_cast<uint8_t>(original[i] + 1), uint8_t{'('}}) {
      std::vector<uint8_t> mutated = original;
      mutated[i] = value;
      try {
        unpickle(mutated);
      } catch (const Error&) {
        ++failures;
      }
    }
  }
  EXPECT_GT(failures, 0u);
}

}  // namespace
}  // namespace ctsr::test
