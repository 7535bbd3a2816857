#include "runtime/formats/torch_checkpoint.h"

#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>

#include "runtime/error.h"
#include "runtime/formats/pickle.h"
#include "runtime/formats/random_access_file.h"

namespace ctsr::io {

namespace {

using pickle::Kind;
using pickle::Value;

// data.pkl holds a checkpoint's structure, not its tensor data: the names, the rebuild calls of
// its tensors (each a storage of its own in the archive) and small values such as Lightning's
// hyperparameters. A pickle may take a fixed allowance plus a generous one per storage the
// archive holds; anything larger (a small file whose pickle inflates to a gigabyte) is refused
// from the sizes in the zip directory, before anything is inflated.
constexpr uint64_t kPickleBaseBytes = uint64_t{16} << 20;
constexpr uint64_t kPickleBytesPerEntry = uint64_t{64} << 10;

struct StorageRef {
  std::string class_name;  // "torch.FloatStorage"
  std::optional<DType> dtype;
  std::string key;
  uint64_t numel = 0;
};

std::optional<DType> storage_dtype(const std::string& class_name) {
  if (class_name == "torch.FloatStorage") return DType::float32;
  if (class_name == "torch.DoubleStorage") return DType::float64;
  if (class_name == "torch.HalfStorage") return DType::float16;
  if (class_name == "torch.BFloat16Storage") return DType::bfloat16;
  if (class_name == "torch.LongStorage") return DType::int64;
  if (class_name == "torch.IntStorage") return DType::int32;
  if (class_name == "torch.ByteStorage") return DType::uint8;
  // An untyped storage is bytes (torch.load gives it dtype uint8 too). Its spelling moved between
  // torch versions.
  if (class_name == "torch.UntypedStorage" || class_name == "torch._UntypedStorage" ||
      class_name == "torch.storage.UntypedStorage" || class_name == "torch.storage._UntypedStorage")
    return DType::uint8;
  return std::nullopt;
}

// The arguments of a _rebuild_tensor_v2 call, possibly inside a Parameter or a tensor subclass.
struct TensorArgs {
  const Value* storage = nullptr;
  const Value* offset = nullptr;
  const Value* size = nullptr;
  const Value* stride = nullptr;
};

// nullopt when `v` is not a tensor at all; throws for tensors of a kind we cannot read.
std::optional<TensorArgs> tensor_args(const Value& v, const std::string& where, int depth = 0) {
  if (v.kind != Kind::object || depth > 4) return std::nullopt;
  const std::string& f = v.text;
  const std::vector<Value*>& a = v.items;
  if (f == "torch._utils._rebuild_tensor_v2" || f == "torch._utils._rebuild_tensor") {
    CTSR_CHECK(a.size() >= 4, where, ": ", f, " has ", a.size(),
               " arguments, expected (storage, storage_offset, size, stride, ...)");
    return TensorArgs{a[0], a[1], a[2], a[3]};
  }
  if (f == "torch._utils._rebuild_parameter" || f == "torch._utils._rebuild_parameter_with_state") {
    CTSR_CHECK(!a.empty(), where, ": ", f, " has no arguments, expected (tensor, requires_grad, hooks)");
    auto inner = tensor_args(*a[0], where, depth + 1);
    CTSR_CHECK(inner.has_value(), where, ": the Parameter holds ", a[0]->describe(), ", expected a tensor");
    return inner;
  }
  if (f == "torch._tensor._rebuild_from_type_v2") {
    // (func, new_type, args, state): a tensor subclass; its data is func(*args).
    CTSR_CHECK(a.size() >= 3 && a[0]->kind == Kind::global && a[2]->kind == Kind::tuple, where, ": ", f,
               " arguments are not (function, type, args tuple, state)");
    Value call;
    call.kind = Kind::object;
    call.text = a[0]->text;
    call.items = a[2]->items;
    auto inner = tensor_args(call, where, depth + 1);
    CTSR_CHECK(inner.has_value(), where, ": tensor subclass rebuilt by ", a[0]->text,
               ", expected torch._utils._rebuild_tensor_v2");
    return inner;
  }
  // Quantized, sparse, meta, nested, numpy-backed, wrapper-subclass tensors...
  if (f.rfind("torch._utils._rebuild", 0) == 0 || f.rfind("torch._tensor._rebuild", 0) == 0) {
    CTSR_FAIL(where, ": is a tensor of a kind ctsr cannot read (", f,
              "); expected a dense tensor (torch._utils._rebuild_tensor_v2)");
  }
  return std::nullopt;
}

std::vector<int64_t> int_tuple(const Value& v, const std::string& where, const char* field) {
  CTSR_CHECK(v.kind == Kind::tuple || v.kind == Kind::list, where, ": ", field, " is ", v.describe(),
             ", expected a tuple of ints");
  std::vector<int64_t> out;
  for (const Value* x : v.items) {
    CTSR_CHECK(x->kind == Kind::integer, where, ": ", field, " holds ", x->describe(), ", expected ints");
    out.push_back(x->integer);
  }
  return out;
}

bool is_row_major(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides) {
  int64_t expected = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

// Copies the elements of a strided view of `storage` into `dst`, row-major.
void gather(const uint8_t* storage, int64_t offset, const std::vector<int64_t>& shape,
            const std::vector<int64_t>& strides, size_t element_size, uint8_t* dst) {
  const size_t nd = shape.size();
  if (nd == 0) {
    std::memcpy(dst, storage + static_cast<size_t>(offset) * element_size, element_size);
    return;
  }
  const int64_t inner = shape[nd - 1], inner_stride = strides[nd - 1];
  int64_t outer = 1;
  for (size_t d = 0; d + 1 < nd; ++d) outer *= shape[d];
  std::vector<int64_t> index(nd - 1, 0);
  for (int64_t o = 0; o < outer; ++o) {
    int64_t base = offset;
    for (size_t d = 0; d + 1 < nd; ++d) base += index[d] * strides[d];
    if (inner_stride == 1) {
      size_t bytes = static_cast<size_t>(inner) * element_size;
      std::memcpy(dst, storage + static_cast<size_t>(base) * element_size, bytes);
      dst += bytes;
    } else {
      for (int64_t j = 0; j < inner; ++j, dst += element_size)
        std::memcpy(dst, storage + static_cast<size_t>(base + j * inner_stride) * element_size, element_size);
    }
    for (size_t d = nd - 1; d-- > 0;) {
      if (++index[d] < shape[d]) break;
      index[d] = 0;
    }
  }
}

std::string join_keys(const Value& dict, size_t limit = 12) {
  std::string s;
  for (size_t i = 0; i < dict.entries.size() && i < limit; ++i) {
    const Value* k = dict.entries[i].first;
    s += (i ? ", " : "") + (k->kind == Kind::string ? k->text : k->describe());
  }
  if (dict.entries.size() > limit) s += ", ... (" + std::to_string(dict.entries.size()) + " in all)";
  return s;
}

ZipArchive open_archive(const std::filesystem::path& path) {
  {
    RandomAccessFile file(path);
    uint8_t head[512] = {};
    uint64_t n = std::min<uint64_t>(file.size(), sizeof head);
    file.read(0, head, n, "file header");
    CTSR_CHECK(!is_legacy_torch_file(head, n), path.string(),
               ": is a legacy torch.save file (the pre-1.6 format, not a zip archive), which ctsr does not read; "
               "re-save it with PyTorch: torch.save(torch.load(old_path), new_path, "
               "_use_new_zipfile_serialization=True)");
  }
  return ZipArchive(path);
}

}  // namespace

bool is_legacy_torch_file(const void* first_bytes, size_t size) {
  const auto* p = static_cast<const uint8_t*>(first_bytes);
  // PROTO 2, LONG1 of 10 bytes: torch.serialization's MAGIC_NUMBER 0x1950a86a20f9469cfc6c.
  static const uint8_t magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  if (size >= sizeof magic && std::memcmp(p, magic, sizeof magic) == 0) return true;
  // torch < 0.4 wrote tar archives ("ustar" at offset 257).
  return size >= 262 && std::memcmp(p + 257, "ustar", 5) == 0;
}

TorchCheckpoint::TorchCheckpoint(std::filesystem::path path) : path_(std::move(path)), archive_(open_archive(path_)) {
  const std::string file = path_.string();

  // "<prefix>/data.pkl": the prefix is "archive" for recent torch, the file's stem for older ones.
  const ZipEntry* pickle_entry = nullptr;
  for (const ZipEntry& e : archive_.entries()) {
    const std::string suffix = "/data.pkl";
    if (e.name.size() > suffix.size() && e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        e.name.find('/') == e.name.size() - suffix.size()) {
      CTSR_CHECK(pickle_entry == nullptr, file, ": two pickles ('", pickle_entry->name, "' and '", e.name,
                 "'): not a single torch.save checkpoint");
      pickle_entry = &e;
    }
  }
  if (pickle_entry == nullptr) {
    std::string names;
    for (size_t i = 0; i < archive_.entries().size() && i < 5; ++i)
      names += (i ? ", " : "") + archive_.entries()[i].name;
    CTSR_FAIL(file, ": a zip archive without a '<prefix>/data.pkl' entry, so not a torch.save checkpoint (entries: ",
              names, archive_.entries().size() > 5 ? ", ..." : "", ")");
  }
  const std::string prefix = pickle_entry->name.substr(0, pickle_entry->name.size() - std::strlen("data.pkl"));

  // Recent torch records the byte order of the storages; older files are little-endian.
  if (const ZipEntry* order = archive_.find(prefix + "byteorder")) {
    std::vector<uint8_t> bytes = archive_.read(*order, 64);  // "little" or "big"
    std::string text(bytes.begin(), bytes.end());
    CTSR_CHECK(text == "little", file, ": ", order->name, " is '", text,
               "', expected 'little' (big-endian checkpoints are not supported)");
  }

  const uint64_t entries = archive_.entries().size();
  const uint64_t pickle_cap = kPickleBaseBytes + kPickleBytesPerEntry * entries;
  CTSR_CHECK(pickle_entry->uncompressed_size <= pickle_cap, file, ": ", pickle_entry->name, " inflates to ",
             pickle_entry->uncompressed_size, " bytes, more than the ", pickle_cap, " a checkpoint of ", entries,
             " archive entries can need (16 MiB + 64 KiB per entry); not a state dict ctsr can import");
  const std::vector<uint8_t> pickled = archive_.read(*pickle_entry);
  const std::string source = file + ": " + pickle_entry->name;

  // Storages are recognised by identity (the values this callback made), so nothing in the
  // pickle can pose as one.
  std::unordered_map<const Value*, StorageRef> storages;
  pickle::PersistentLoad persistent_load = [&](pickle::Document& doc, const Value& pid) -> Value* {
    const std::string shape_note = " (expected ('storage', storage type, key, location, numel))";
    CTSR_CHECK(pid.kind == Kind::tuple && pid.items.size() >= 5, source, ": persistent id ", pid.describe(),
               " is not a storage reference", shape_note);
    const std::vector<Value*>& a = pid.items;
    CTSR_CHECK(a[0]->kind == Kind::string && a[0]->text == "storage", source, ": persistent id of type ",
               a[0]->describe(), ", expected 'storage'");
    CTSR_CHECK(a[1]->kind == Kind::global, source, ": storage type is ", a[1]->describe(), shape_note);
    CTSR_CHECK(a[2]->kind == Kind::string || a[2]->kind == Kind::integer, source, ": storage key is ",
               a[2]->describe(), shape_note);
    CTSR_CHECK(a[4]->kind == Kind::integer && a[4]->integer >= 0, source, ": storage numel is ", a[4]->describe(),
               shape_note);
    StorageRef ref;
    ref.class_name = a[1]->text;
    ref.dtype = storage_dtype(ref.class_name);
    ref.key = a[2]->kind == Kind::string ? a[2]->text : std::to_string(a[2]->integer);
    ref.numel = static_cast<uint64_t>(a[4]->integer);
    Value* v = doc.make(Kind::object);
    v->text = "torch storage " + ref.key;
    storages.emplace(v, std::move(ref));
    return v;
  };
  const pickle::Document doc = pickle::unpickle(pickled.data(), pickled.size(), source, persistent_load);
  const Value& root = doc.root();

  CTSR_CHECK(root.kind == Kind::dict, file, ": the checkpoint holds ", root.describe(),
             ", expected a dict (a state dict, or a Lightning checkpoint with a 'state_dict' entry)");
  const Value* state = nullptr;
  for (const auto& [k, v] : root.entries) {
    if (k->kind == Kind::string && k->text == "state_dict") {
      // A dict subclass pickles as an object whose items were set with SETITEMS.
      CTSR_CHECK(v->kind == Kind::dict || (v->kind == Kind::object && !v->entries.empty()), file,
                 ": 'state_dict' is ", v->describe(), ", expected a dict of tensors");
      state = v;
    } else {
      skipped_.push_back(k->kind == Kind::string ? k->text : k->describe());
    }
  }
  const bool lightning = state != nullptr;
  if (!lightning) {
    // A bare state dict: every value a tensor.
    for (const auto& [k, v] : root.entries) {
      const std::string key = k->kind == Kind::string ? k->text : k->describe();
      CTSR_CHECK(tensor_args(*v, file + ": tensor '" + key + "'").has_value(), file,
                 ": neither a Lightning checkpoint (no 'state_dict' entry) nor a state dict ('", key, "' is ",
                 v->describe(), ", not a tensor); top-level keys: ", join_keys(root));
    }
    state = &root;
    skipped_.clear();
  }

  for (const auto& [k, v] : state->entries) {
    CTSR_CHECK(k->kind == Kind::string, file, ": state dict key ", k->describe(), " is not a str");
    const std::string& name = k->text;
    const std::string where = file + ": tensor '" + name + "'";
    std::optional<TensorArgs> args = tensor_args(*v, where);
    if (!args) {
      skipped_.push_back("state_dict/" + name);  // e.g. a module's _extra_state
      continue;
    }
    auto st = storages.find(args->storage);
    CTSR_CHECK(st != storages.end(), where, ": its storage is ", args->storage->describe(),
               ", expected a storage persistent id");
    const StorageRef& ref = st->second;
    CTSR_CHECK(ref.dtype.has_value(), where, ": storage type ", ref.class_name,
               " is not supported (expected Float, Double, Half, BFloat16, Long, Int or Byte storage)");
    const DType dtype = *ref.dtype;
    CTSR_CHECK(args->offset->kind == Kind::integer && args->offset->integer >= 0, where, ": storage_offset is ",
               args->offset->describe(), ", expected an int >= 0");
    std::vector<int64_t> shape = int_tuple(*args->size, where, "size");
    std::vector<int64_t> strides = int_tuple(*args->stride, where, "stride");
    CTSR_CHECK(shape.size() <= static_cast<size_t>(kMaxDims), where, ": has ", shape.size(),
               " dimensions, ctsr tensors have at most ", kMaxDims);
    CTSR_CHECK(strides.size() == shape.size(), where, ": stride has ", strides.size(), " entries for ", shape.size(),
               " dimensions");
    bool empty = false;
    for (size_t d = 0; d < shape.size(); ++d) {
      CTSR_CHECK(shape[d] >= 0, where, ": size[", d, "] is ", shape[d], ", expected >= 0");
      CTSR_CHECK(strides[d] >= 0, where, ": stride[", d, "] is ", strides[d],
                 ": negative strides are not supported (save a .contiguous() copy)");
      empty = empty || shape[d] == 0;
    }
    // The loaded tensor's byte count must be representable (an expanded view, stride 0, may have
    // more elements than its storage).
    uint64_t out_bytes = dtype_size(dtype);
    bool too_big = false;
    for (int64_t d : shape) too_big = too_big || __builtin_mul_overflow(out_bytes, static_cast<uint64_t>(d), &out_bytes);
    CTSR_CHECK(!too_big && out_bytes <= static_cast<uint64_t>(INT64_MAX), where, ": size ", dims_text(shape),
               " of ", dtype_name(dtype), " is too large to load");
    const int64_t offset = args->offset->integer;
    if (!empty) {
      // Index of the last element the view touches; checked for overflow since every number
      // here comes from the file.
      uint64_t last = static_cast<uint64_t>(offset);
      bool overflow = false;
      for (size_t d = 0; d < shape.size(); ++d) {
        uint64_t step = 0;
        overflow = overflow || __builtin_mul_overflow(static_cast<uint64_t>(shape[d] - 1),
                                                      static_cast<uint64_t>(strides[d]), &step);
        overflow = overflow || __builtin_add_overflow(last, step, &last);
      }
      CTSR_CHECK(!overflow && last < ref.numel, where, ": its elements (offset ", offset, ", size ",
                 dims_text(shape), ", stride ", dims_text(strides), ") reach beyond its storage '", ref.key,
                 "' of ", ref.numel, " elements");
    }
    const std::string entry_name = prefix + "data/" + ref.key;
    const ZipEntry* entry = archive_.find(entry_name);
    CTSR_CHECK(entry != nullptr, where, ": its storage entry '", entry_name, "' is missing from the archive");
    uint64_t expected_bytes = 0;
    CTSR_CHECK(!__builtin_mul_overflow(ref.numel, static_cast<uint64_t>(dtype_size(dtype)), &expected_bytes) &&
                   entry->uncompressed_size == expected_bytes,
               where, ": storage entry '", entry_name, "' has ", entry->uncompressed_size, " bytes, expected ",
               ref.numel, " ", dtype_name(dtype), " elements (", expected_bytes, " bytes)");

    CTSR_CHECK(index_.emplace(name, records_.size()).second, file, ": tensor '", name, "' appears twice");
    names_.push_back(name);
    records_.push_back(TensorRecord{name, dtype, shape});
    locations_.push_back(Location{entry_name, ref.numel, offset, std::move(strides)});
  }
}

const TensorRecord& TorchCheckpoint::record(const std::string& name) const {
  auto it = index_.find(name);
  CTSR_CHECK(it != index_.end(), path_.string(), ": no tensor '", name, "' in the checkpoint's state dict (",
             names_.size(), " tensors)");
  return records_[it->second];
}

Tensor TorchCheckpoint::load(const std::string& name) const {
  const TensorRecord& r = record(name);
  const Location& loc = locations_[index_.at(name)];
  Tensor out = Tensor::empty(Shape(r.shape), r.dtype);
  if (out.numel() == 0) return out;
  try {
    const ZipEntry& entry = archive_.entry(loc.entry);
    const size_t element_size = dtype_size(r.dtype);
    if (loc.offset == 0 && static_cast<uint64_t>(out.numel()) == loc.storage_numel && is_row_major(r.shape, loc.strides)) {
      // The common case: the tensor is its whole storage; read it in place.
      archive_.read_into(entry, out.raw_data(), out.nbytes());
    } else {
      // A view: read the whole storage (its CRC covers all of it) and gather.
      std::vector<uint8_t> storage = archive_.read(entry);
      gather(storage.data(), loc.offset, r.shape, loc.strides, element_size, static_cast<uint8_t*>(out.raw_data()));
    }
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + " (loading tensor '" + name + "')");
  }
  return out;
}

}  // namespace ctsr::io
