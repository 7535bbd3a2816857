#include "runtime/formats/pickle.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>
#include <unordered_map>

#include "runtime/error.h"

namespace ctsr::io::pickle {

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::none: return "None";
    case Kind::boolean: return "bool";
    case Kind::integer: return "int";
    case Kind::floating: return "float";
    case Kind::string: return "str";
    case Kind::bytes: return "bytes";
    case Kind::tuple: return "tuple";
    case Kind::list: return "list";
    case Kind::dict: return "dict";
    case Kind::set: return "set";
    case Kind::global: return "global";
    case Kind::object: return "object";
  }
  return "unknown";
}

const Value* Value::get(std::string_view key) const {
  if (kind != Kind::dict && kind != Kind::object) return nullptr;
  for (const auto& [k, v] : entries)
    if (k->kind == Kind::string && k->text == key) return v;
  return nullptr;
}

std::string Value::describe() const {
  std::ostringstream s;
  auto quoted = [&](const std::string& t) {
    s << "'" << (t.size() > 40 ? t.substr(0, 40) + "..." : t) << "'";
  };
  switch (kind) {
    case Kind::none: s << "None"; break;
    case Kind::boolean: s << "bool " << (boolean ? "True" : "False"); break;
    case Kind::integer: s << "int " << integer; break;
    case Kind::floating: s << "float " << floating; break;
    case Kind::string: s << "str "; quoted(text); break;
    case Kind::bytes: s << "bytes of length " << text.size(); break;
    case Kind::tuple: s << "tuple of " << items.size(); break;
    case Kind::list: s << "list of " << items.size(); break;
    case Kind::set: s << "set of " << items.size(); break;
    case Kind::dict: s << "dict with " << entries.size() << " entries"; break;
    case Kind::global: s << "global " << text; break;
    case Kind::object: s << "object of " << text; break;
  }
  return s.str();
}

Document::Document() = default;

Value* Document::make(Kind kind) {
  arena_.emplace_back();
  arena_.back().kind = kind;
  return &arena_.back();
}

namespace {

// Opcode names for messages.
const char* opcode_name(uint8_t op) {
  switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
  }
  return "unknown opcode";
}

std::string hex_byte(uint8_t b) {
  static const char* digits = "0123456789abcdef";
  return std::string("0x") + digits[b >> 4] + digits[b & 15];
}

// Python 3 writes protocol-2 pickles with Python 2 module names (fix_imports).
std::string normalize_module(const std::string& module) {
  if (module == "__builtin__") return "builtins";
  if (module == "copy_reg") return "copyreg";
  return module;
}

}  // namespace

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, const std::string& source, const PersistentLoad& persistent_load)
      : data_(data), size_(size), source_(source), persistent_load_(persistent_load) {}

  Document run() {
    none_ = doc_.make(Kind::none);
    true_ = doc_.make(Kind::boolean);
    true_->boolean = true;
    false_ = doc_.make(Kind::boolean);
    while (true) {
      CTSR_CHECK(pos_ < size_, source_, ": truncated pickle: no STOP opcode before the end of the data (", size_,
                 " bytes)");
      op_offset_ = pos_;
      op_ = data_[pos_++];
      if (op_ == '.') {
        // Like Python, STOP returns the top and ignores anything left below it.
        doc_.root_ = pop();
        return std::move(doc_);
      }
      step();
    }
  }

 private:
  [[noreturn]] void fail(const std::string& detail) const {
    CTSR_FAIL(source_, ": malformed pickle: ", opcode_name(op_), " (", hex_byte(op_), ") at offset ", op_offset_,
              ": ", detail);
  }

  // ---- reading the opcode's argument bytes ----
  const uint8_t* take(uint64_t n) {
    if (n > size_ - pos_) {
      fail("needs " + std::to_string(n) + " bytes of argument, only " + std::to_string(size_ - pos_) + " remain");
    }
    const uint8_t* p = data_ + pos_;
    pos_ += static_cast<size_t>(n);
    return p;
  }
  uint64_t le(int bytes) {
    const uint8_t* p = take(static_cast<uint64_t>(bytes));
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
  }
  std::string line() {
    const void* nl = std::memchr(data_ + pos_, '\n', size_ - pos_);
    if (!nl) fail("its text argument has no terminating newline");
    size_t end = static_cast<size_t>(static_cast<const uint8_t*>(nl) - data_);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), end - pos_);
    pos_ = end + 1;
    return s;
  }

  // ---- the stack; the values above the topmost MARK are the current frame ----
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  Value* pop() {
    if (stack_.size() <= floor()) fail("stack underflow (nothing above the last MARK)");
    Value* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Value* top() {
    if (stack_.size() <= floor()) fail("stack underflow (nothing above the last MARK)");
    return stack_.back();
  }
  std::vector<Value*> pop_mark() {
    if (marks_.empty()) fail("no MARK on the stack");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Value*> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  void push(Value* v) { stack_.push_back(v); }

  Value* make(Kind k) { return doc_.make(k); }
  Value* make_int(int64_t v) {
    Value* x = make(Kind::integer);
    x->integer = v;
    return x;
  }
  Value* make_text(Kind k, const uint8_t* p, uint64_t n) {
    Value* x = make(k);
    x->text.assign(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
    return x;
  }
  Value* make_sequence(Kind k, std::vector<Value*> items) {
    Value* x = make(k);
    x->items = std::move(items);
    return x;
  }
  Value* make_global(const std::string& module, const std::string& name) {
    Value* g = make(Kind::global);
    g->text = normalize_module(module) + "." + name;
    return g;
  }

  // Little-endian two's complement of any length (LONG1 / LONG4). Beyond 64 bits: an object of
  // class builtins.int holding the raw bytes, which no tensor field can be.
  Value* make_long(const uint8_t* p, uint64_t n) {
    if (n == 0) return make_int(0);
    bool negative = (p[n - 1] & 0x80) != 0;
    uint8_t fill = negative ? 0xff : 0x00;
    bool fits = true;
    for (uint64_t i = 8; i < n; ++i) fits = fits && p[i] == fill;
    if (n > 8 && fits) fits = ((p[7] & 0x80) != 0) == negative;
    if (!fits) {
      Value* big = make(Kind::object);
      big->text = "builtins.int";
      big->items.push_back(make_text(Kind::bytes, p, n));
      return big;
    }
    uint64_t v = negative ? ~uint64_t{0} : 0;
    for (uint64_t i = 0; i < std::min<uint64_t>(n, 8); ++i) {
      v &= ~(uint64_t{0xff} << (8 * i));
      v |= static_cast<uint64_t>(p[i]) << (8 * i);
    }
    return make_int(static_cast<int64_t>(v));
  }

  Value* make_decimal(const std::string& text) {
    std::string t = text;
    if (!t.empty() && t.back() == 'L') t.pop_back();  // Python 2 long suffix
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(t.c_str(), &end, 10);
    if (t.empty() || *end != '\0') fail("'" + text + "' is not a decimal integer");
    if (errno == ERANGE) {
      Value* big = make(Kind::object);
      big->text = "builtins.int";
      big->items.push_back(make_text(Kind::string, reinterpret_cast<const uint8_t*>(t.data()), t.size()));
      return big;
    }
    return make_int(v);
  }

  // ---- memo ----
  void memo_put(uint64_t index) { memo_[index] = top(); }
  Value* memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail("memo index " + std::to_string(index) + " was never stored");
    return it->second;
  }
  uint64_t text_index() {
    std::string t = line();
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(t.c_str(), &end, 10);
    if (t.empty() || *end != '\0' || errno == ERANGE || t[0] == '-') fail("'" + t + "' is not a memo index");
    return v;
  }

  // ---- dicts: insertion order, and Python's replace-on-equal-key for the key types torch uses ----
  static bool key_id(const Value* k, std::string& id) {
    switch (k->kind) {
      // Built by appending: GCC 12 warns falsely (-Wrestrict) about "literal" + std::string.
      case Kind::string: id.assign(1, 's').append(k->text); return true;
      case Kind::bytes: id.assign(1, 'b').append(k->text); return true;
      case Kind::integer: id.assign(1, 'i').append(std::to_string(k->integer)); return true;
      case Kind::boolean: id.assign(1, 'i').append(k->boolean ? "1" : "0"); return true;  // True == 1
      case Kind::none: id = "n"; return true;
      default: return false;  // tuples, floats...: appended (torch never writes such duplicates)
    }
  }
  void set_item(Value* target, Value* key, Value* value) {
    if (target->kind == Kind::dict) {
      std::string id;
      if (key_id(key, id)) {
        auto& index = dict_index_[target];
        auto [it, fresh] = index.emplace(id, target->entries.size());
        if (!fresh) {
          target->entries[it->second].second = value;
          return;
        }
      }
      target->entries.emplace_back(key, value);
    } else if (target->kind == Kind::object) {
      target->entries.emplace_back(key, value);  // a dict subclass: keep what it was given
    } else {
      fail(std::string("cannot set an item on a ") + kind_name(target->kind) + " (expected a dict)");
    }
  }
  void append_items(Value* target, const std::vector<Value*>& items) {
    if (target->kind == Kind::list) {
      target->items.insert(target->items.end(), items.begin(), items.end());
    } else if (target->kind == Kind::object) {
      target->appended.insert(target->appended.end(), items.begin(), items.end());
    } else {
      fail(std::string("cannot append to a ") + kind_name(target->kind) + " (expected a list)");
    }
  }

  // ---- calls: REDUCE, NEWOBJ, INST, OBJ ----
  // What calling `callable` with `args` gives. Only the few builtins whose result is a plain value
  // are evaluated; everything else becomes an object recording the call.
  Value* call(Value* callable, Value* args) {
    if (args->kind != Kind::tuple) fail("arguments are a " + std::string(kind_name(args->kind)) + ", expected a tuple");
    const std::vector<Value*>& a = args->items;
    if (callable->kind == Kind::global) {
      const std::string& name = callable->text;
      if (name == "collections.OrderedDict" || name == "builtins.dict" || name == "collections.defaultdict") {
        Value* d = make(Kind::dict);
        // OrderedDict(pairs) / dict(pairs); defaultdict's argument is its factory, not items.
        if (name != "collections.defaultdict" && a.size() == 1 &&
            (a[0]->kind == Kind::list || a[0]->kind == Kind::tuple)) {
          for (Value* pair : a[0]->items) {
            if (pair->kind != Kind::tuple || pair->items.size() != 2) fail(name + " argument is not a list of pairs");
            set_item(d, pair->items[0], pair->items[1]);
          }
        }
        return d;
      }
      if ((name == "builtins.set" || name == "builtins.frozenset") &&
          (a.empty() || (a.size() == 1 && (a[0]->kind == Kind::list || a[0]->kind == Kind::tuple)))) {
        return make_sequence(Kind::set, a.empty() ? std::vector<Value*>{} : a[0]->items);
      }
      if (name == "builtins.bytes" && a.empty()) return make(Kind::bytes);
      // Protocol 2 has no bytes opcode: Python writes _codecs.encode(text, 'latin1').
      if (name == "_codecs.encode" && a.size() == 2 && a[0]->kind == Kind::string && a[1]->kind == Kind::string &&
          (a[1]->text == "latin1" || a[1]->text == "latin-1")) {
        return latin1_bytes(a[0]->text);
      }
    }
    Value* obj = make(Kind::object);
    obj->callable = callable;
    obj->items = a;
    if (callable->kind == Kind::global) {
      obj->text = callable->text;
      // copyreg._reconstructor(cls, base, state) builds an instance of cls.
      if (callable->text == "copyreg._reconstructor" && !a.empty() && a[0]->kind == Kind::global)
        obj->text = a[0]->text;
    } else {
      obj->text = callable->text.empty() ? std::string("<call>") : callable->text;
    }
    return obj;
  }
  Value* latin1_bytes(const std::string& utf8) {
    Value* b = make(Kind::bytes);
    for (size_t i = 0; i < utf8.size(); ++i) {
      auto c = static_cast<uint8_t>(utf8[i]);
      if (c < 0x80) {
        b->text += static_cast<char>(c);
      } else if ((c == 0xc2 || c == 0xc3) && i + 1 < utf8.size()) {
        b->text += static_cast<char>(((c & 0x03) << 6) | (static_cast<uint8_t>(utf8[++i]) & 0x3f));
      } else {
        fail("_codecs.encode argument is not latin-1 text");
      }
    }
    return b;
  }
  Value* instantiate(Value* cls, std::vector<Value*> args) {
    Value* t = make_sequence(Kind::tuple, std::move(args));
    return call(cls, t);
  }

  void step() {
    switch (op_) {
      case '(': marks_.push_back(stack_.size()); break;
      case '0':
        if (stack_.size() > floor()) stack_.pop_back();
        else pop_mark();  // Python's POP on an empty frame discards the mark
        break;
      case '1': pop_mark(); break;
      case '2': push(top()); break;
      case 0x80: {
        uint64_t proto = le(1);
        if (proto > 5) fail("protocol " + std::to_string(proto) + " is newer than 5, the highest supported");
        break;
      }
      case 0x95: {
        // FRAME only groups opcodes for buffered reading; the data is already in memory.
        uint64_t n = le(8);
        if (n > size_ - pos_) fail("frame of " + std::to_string(n) + " bytes, only " + std::to_string(size_ - pos_) + " remain");
        break;
      }
      // ---- constants ----
      case 'N': push(none_); break;
      case 0x88: push(true_); break;
      case 0x89: push(false_); break;
      case 'K': push(make_int(static_cast<int64_t>(le(1)))); break;
      case 'M': push(make_int(static_cast<int64_t>(le(2)))); break;
      case 'J': push(make_int(static_cast<int32_t>(static_cast<uint32_t>(le(4))))); break;
      case 0x8a: {
        uint64_t n = le(1);
        const uint8_t* p = take(n);
        push(make_long(p, n));
        break;
      }
      case 0x8b: {
        auto n = static_cast<int32_t>(static_cast<uint32_t>(le(4)));
        if (n < 0) fail("negative byte count " + std::to_string(n));
        const uint8_t* p = take(static_cast<uint64_t>(n));
        push(make_long(p, static_cast<uint64_t>(n)));
        break;
      }
      case 'I': {
        std::string t = line();
        if (t == "00") push(false_);
        else if (t == "01") push(true_);
        else push(make_decimal(t));
        break;
      }
      case 'L': push(make_decimal(line())); break;
      case 'G': {
        uint64_t bits = 0;
        const uint8_t* p = take(8);
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];  // big-endian
        Value* f = make(Kind::floating);
        std::memcpy(&f->floating, &bits, sizeof bits);
        push(f);
        break;
      }
      case 'F': {
        std::string t = line();
        char* end = nullptr;
        double d = std::strtod(t.c_str(), &end);
        if (t.empty() || *end != '\0') fail("'" + t + "' is not a float");
        Value* f = make(Kind::floating);
        f->floating = d;
        push(f);
        break;
      }
      // ---- strings and bytes ----
      case 'X': { uint64_t n = le(4); push(make_text(Kind::string, take(n), n)); break; }
      case 0x8c: { uint64_t n = le(1); push(make_text(Kind::string, take(n), n)); break; }
      case 0x8d: { uint64_t n = le(8); push(make_text(Kind::string, take(n), n)); break; }
      // Python 2 str: torch.load decodes these as text.
      case 'T': {
        auto n = static_cast<int32_t>(static_cast<uint32_t>(le(4)));
        if (n < 0) fail("negative length " + std::to_string(n));
        push(make_text(Kind::string, take(static_cast<uint64_t>(n)), static_cast<uint64_t>(n)));
        break;
      }
      case 'U': { uint64_t n = le(1); push(make_text(Kind::string, take(n), n)); break; }
      case 'B': { uint64_t n = le(4); push(make_text(Kind::bytes, take(n), n)); break; }
      case 'C': { uint64_t n = le(1); push(make_text(Kind::bytes, take(n), n)); break; }
      case 0x8e:
      case 0x96: { uint64_t n = le(8); push(make_text(Kind::bytes, take(n), n)); break; }
      case 0x98: top(); break;  // READONLY_BUFFER: the top stays what it is
      // ---- containers ----
      case ')': push(make(Kind::tuple)); break;
      case 't': push(make_sequence(Kind::tuple, pop_mark())); break;
      case 0x85: { Value* a = pop(); push(make_sequence(Kind::tuple, {a})); break; }
      case 0x86: { Value* b = pop(); Value* a = pop(); push(make_sequence(Kind::tuple, {a, b})); break; }
      case 0x87: {
        Value* c = pop(); Value* b = pop(); Value* a = pop();
        push(make_sequence(Kind::tuple, {a, b, c}));
        break;
      }
      case ']': push(make(Kind::list)); break;
      case 'l': push(make_sequence(Kind::list, pop_mark())); break;
      case 'a': { Value* v = pop(); append_items(top(), {v}); break; }
      case 'e': { std::vector<Value*> items = pop_mark(); append_items(top(), items); break; }
      case '}': push(make(Kind::dict)); break;
      case 'd': {
        std::vector<Value*> items = pop_mark();
        if (items.size() % 2 != 0) fail("odd number of items (" + std::to_string(items.size()) + ") for key/value pairs");
        Value* d = make(Kind::dict);
        for (size_t i = 0; i < items.size(); i += 2) set_item(d, items[i], items[i + 1]);
        push(d);
        break;
      }
      case 's': { Value* v = pop(); Value* k = pop(); set_item(top(), k, v); break; }
      case 'u': {
        std::vector<Value*> items = pop_mark();
        if (items.size() % 2 != 0) fail("odd number of items (" + std::to_string(items.size()) + ") for key/value pairs");
        Value* target = top();
        for (size_t i = 0; i < items.size(); i += 2) set_item(target, items[i], items[i + 1]);
        break;
      }
      case 0x8f: push(make(Kind::set)); break;
      case 0x90: {
        std::vector<Value*> items = pop_mark();
        Value* target = top();
        if (target->kind == Kind::set) target->items.insert(target->items.end(), items.begin(), items.end());
        else if (target->kind == Kind::object) target->appended.insert(target->appended.end(), items.begin(), items.end());
        else fail(std::string("cannot add items to a ") + kind_name(target->kind) + " (expected a set)");
        break;
      }
      case 0x91: push(make_sequence(Kind::set, pop_mark())); break;
      // ---- memo ----
      case 'p': memo_put(text_index()); break;
      case 'q': memo_put(le(1)); break;
      case 'r': memo_put(le(4)); break;
      case 0x94: memo_put(memo_.size()); break;
      case 'g': push(memo_get(text_index())); break;
      case 'h': push(memo_get(le(1))); break;
      case 'j': push(memo_get(le(4))); break;
      // ---- globals and objects ----
      case 'c': {
        std::string module = line();
        std::string name = line();
        push(make_global(module, name));
        break;
      }
      case 0x93: {
        Value* name = pop();
        Value* module = pop();
        if (module->kind != Kind::string || name->kind != Kind::string)
          fail("module and name must be str, got " + module->describe() + " and " + name->describe());
        push(make_global(module->text, name->text));
        break;
      }
      case 'R': { Value* args = pop(); Value* callable = pop(); push(call(callable, args)); break; }
      case 0x81: { Value* args = pop(); Value* cls = pop(); push(call(cls, args)); break; }
      case 0x92: {
        Value* kwargs = pop();
        Value* args = pop();
        Value* cls = pop();
        Value* obj = call(cls, args);
        if (obj->kind == Kind::object && kwargs->kind == Kind::dict)
          obj->entries.insert(obj->entries.end(), kwargs->entries.begin(), kwargs->entries.end());
        push(obj);
        break;
      }
      case 'i': {
        std::string module = line();
        std::string name = line();
        push(instantiate(make_global(module, name), pop_mark()));
        break;
      }
      case 'o': {
        std::vector<Value*> items = pop_mark();
        if (items.empty()) fail("no class after the MARK");
        Value* cls = items.front();
        items.erase(items.begin());
        push(instantiate(cls, std::move(items)));
        break;
      }
      case 'b': {
        Value* state = pop();
        Value* target = top();
        // Objects keep their state; plain containers ignore it, as OrderedDict's __dict__ (torch's
        // state_dict _metadata) does not change its items.
        if (target->kind == Kind::object) target->state = state;
        break;
      }
      // ---- persistent ids ----
      case 'P': {
        std::string pid = line();
        push(persistent(make_text(Kind::string, reinterpret_cast<const uint8_t*>(pid.data()), pid.size())));
        break;
      }
      case 'Q': push(persistent(pop())); break;
      default:
        CTSR_FAIL(source_, ": unsupported pickle opcode ", hex_byte(op_), " (", opcode_name(op_), ") at offset ",
                  op_offset_);
    }
  }

  Value* persistent(Value* pid) {
    if (!persistent_load_) fail("persistent id " + pid->describe() + " but no persistent loader was given");
    Value* v = persistent_load_(doc_, *pid);
    if (!v) fail("the persistent loader returned nothing for " + pid->describe());
    return v;
  }

  const uint8_t* data_;
  size_t size_;
  const std::string& source_;
  const PersistentLoad& persistent_load_;
  size_t pos_ = 0;
  size_t op_offset_ = 0;
  uint8_t op_ = 0;
  Document doc_;
  Value* none_ = nullptr;
  Value* true_ = nullptr;
  Value* false_ = nullptr;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value*> memo_;
  std::unordered_map<const Value*, std::unordered_map<std::string, size_t>> dict_index_;
};

Document unpickle(const uint8_t* data, size_t size, const std::string& source, const PersistentLoad& persistent_load) {
  return Unpickler(data, size, source, persistent_load).run();
}

}  // namespace ctsr::io::pickle
