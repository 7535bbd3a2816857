// A minimal, safe unpickler for what torch.save writes (pickle protocol 2, and the opcodes of
// protocols 3-5: FRAME, SHORT_BINUNICODE, BINUNICODE8, BINBYTES8, MEMOIZE, STACK_GLOBAL, ...).
//
// It never imports or runs anything. Values are None, bool, int, float, str, bytes, tuple, list,
// dict (insertion order kept; collections.OrderedDict becomes a dict), set, a global (a reference
// to "module.name"), and objects: calling a global (REDUCE), NEWOBJ/NEWOBJ_EX or INST/OBJ on a class
// gives an Object that records the class name, its arguments, and whatever BUILD, SETITEM(S) and
// APPEND(S) later put into it. So classes it has never heard of (OmegaConf's DictConfig, numpy
// scalars, Lightning callbacks, optimizer state) never fail; the caller decides what an object of
// a given class means (torch_checkpoint.cpp reads torch._utils._rebuild_tensor_v2 objects).
//
// Persistent ids (PERSID, BINPERSID) go to a callback. Hostile input (stack underflow, missing
// MARK, bad memo index, lengths beyond the buffer, unknown opcodes) gives a ctsr::Error naming the
// source, the opcode and its offset; never undefined behaviour. The decoder is iterative, and all
// values live in one arena owned by the Document, so deep nesting and reference cycles (possible
// through the memo) cost neither stack nor leaks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ctsr::io::pickle {

enum class Kind : uint8_t { none, boolean, integer, floating, string, bytes, tuple, list, dict, set, global, object };

const char* kind_name(Kind kind);

struct Value {
  Kind kind = Kind::none;
  bool boolean = false;
  int64_t integer = 0;  // ints beyond 64 bits become objects of class "builtins.int"
  double floating = 0;
  // string: UTF-8 text; bytes: the bytes; global: "module.name"; object: the class or callable it
  // was made from ("module.name"; "copyreg._reconstructor" objects take their class argument's).
  std::string text;
  // tuple, list, set: the elements; object: the constructor or call arguments.
  std::vector<Value*> items;
  // dict: the entries in insertion order; object: entries set by SETITEM(S) (dict subclasses).
  std::vector<std::pair<Value*, Value*>> entries;
  // object: elements added by APPEND(S) / ADDITEMS (list and set subclasses).
  std::vector<Value*> appended;
  Value* state = nullptr;     // object: the argument of BUILD (its __setstate__ / __dict__)
  Value* callable = nullptr;  // object: the global or object it was made by

  bool is(Kind k) const { return kind == k; }
  bool is_string() const { return kind == Kind::string; }
  bool is_int() const { return kind == Kind::integer; }
  // An object made from the global `qualified_name` ("torch._utils._rebuild_tensor_v2").
  bool is_object_of(std::string_view qualified_name) const { return kind == Kind::object && text == qualified_name; }
  // Dict (or object) entry with a string key; nullptr when there is none.
  const Value* get(std::string_view key) const;
  // Short description for messages: "int 7", "str 'abc'", "dict with 3 entries", "object of __main__.HParams".
  std::string describe() const;
};

class Document {
 public:
  Document();
  Document(Document&&) = default;
  Document& operator=(Document&&) = default;
  const Value& root() const { return *root_; }
  // A new value in this document's arena (for persistent-load callbacks).
  Value* make(Kind kind);

 private:
  friend class Unpickler;
  std::deque<Value> arena_;  // a deque never moves its elements, so Value* stay valid
  Value* root_ = nullptr;
};

// Called for each persistent id (the pid value: a tuple for torch); returns the value that
// replaces it, made with doc.make(). May throw ctsr::Error.
using PersistentLoad = std::function<Value*(Document& doc, const Value& pid)>;

// `source` names the data in messages ("model.ckpt: archive/data.pkl"). Without a persistent_load,
// a persistent id is an error.
Document unpickle(const uint8_t* data, size_t size, const std::string& source,
                  const PersistentLoad& persistent_load = {});

}  // namespace ctsr::io::pickle
