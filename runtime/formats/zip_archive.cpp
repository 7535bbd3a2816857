#include "runtime/formats/zip_archive.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "runtime/error.h"

namespace ctsr::io {

namespace {

constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint32_t kEndSignature = 0x06054b50;
constexpr uint32_t kEnd64Signature = 0x06064b50;
constexpr uint32_t kEnd64LocatorSignature = 0x07064b50;
constexpr size_t kEndSize = 22;
constexpr size_t kEnd64Size = 56;
constexpr size_t kEnd64LocatorSize = 20;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kLocalHeaderSize = 30;
constexpr size_t kMaxCommentSize = 65535;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint64_t kChunk = uint64_t{1} << 20;  // streaming unit for CRC and inflate

uint16_t u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t u32(const uint8_t* p) { return static_cast<uint32_t>(u16(p)) | (static_cast<uint32_t>(u16(p + 2)) << 16); }
uint64_t u64(const uint8_t* p) { return static_cast<uint64_t>(u32(p)) | (static_cast<uint64_t>(u32(p + 4)) << 32); }

std::string hex32(uint32_t v) {
  static const char* digits = "0123456789abcdef";
  std::string s = "0x";
  for (int shift = 28; shift >= 0; shift -= 4) s += digits[(v >> shift) & 0xf];
  return s;
}

// zlib's crc32 takes 32-bit lengths: feed it in pieces.
uint32_t crc32_update(uint32_t crc, const uint8_t* data, uint64_t size) {
  uLong c = crc;
  while (size > 0) {
    uInt n = static_cast<uInt>(std::min<uint64_t>(size, uint64_t{1} << 30));
    c = ::crc32(c, data, n);
    data += n;
    size -= n;
  }
  return static_cast<uint32_t>(c);
}

}  // namespace

ZipArchive::ZipArchive(std::filesystem::path path) : file_(std::move(path)) { read_central_directory(); }

bool ZipArchive::has_zip_signature(const void* first_bytes, size_t size) {
  if (size < 4) return false;
  uint32_t sig = u32(static_cast<const uint8_t*>(first_bytes));
  return sig == kLocalHeaderSignature || sig == kEndSignature;
}

void ZipArchive::read_central_directory() {
  const std::string file = path().string();
  const uint64_t size = file_.size();
  CTSR_CHECK(size >= kEndSize, file, ": truncated or not a zip archive: ", size,
             " bytes, fewer than an end-of-central-directory record (22 bytes)");

  // The end-of-central-directory record ends the file, followed only by a comment of up to 64 KiB,
  // so it is searched for backwards from the end over that range.
  const uint64_t tail_size = std::min<uint64_t>(size, kEndSize + kMaxCommentSize);
  const uint64_t tail_start = size - tail_size;
  std::vector<uint8_t> tail(tail_size);
  file_.read(tail_start, tail.data(), tail_size, "end of the archive");
  int64_t end_pos = -1;            // position in `tail` of the record we accept
  int64_t overlong_comment = -1;   // a record whose comment runs past the end of the file
  for (int64_t i = static_cast<int64_t>(tail_size - kEndSize); i >= 0; --i) {
    if (u32(&tail[i]) != kEndSignature) continue;
    uint64_t comment = u16(&tail[i + 20]);
    if (static_cast<uint64_t>(i) + kEndSize + comment <= tail_size) {
      end_pos = i;
      break;
    }
    if (overlong_comment < 0) overlong_comment = i;
  }
  if (end_pos < 0 && overlong_comment >= 0) {
    CTSR_FAIL(file, ": truncated: the end-of-central-directory record at offset ", tail_start + overlong_comment,
              " declares a ", u16(&tail[overlong_comment + 20]), "-byte comment but the file ends ",
              tail_size - overlong_comment - kEndSize, " bytes after the record");
  }
  CTSR_CHECK(end_pos >= 0, file,
             ": truncated or not a zip archive: no end-of-central-directory record in the last 65 KiB");
  const uint8_t* end = &tail[end_pos];
  const uint64_t end_offset = tail_start + static_cast<uint64_t>(end_pos);

  uint64_t disk = u16(end + 4), directory_disk = u16(end + 6);
  uint64_t count_on_disk = u16(end + 8), count = u16(end + 10);
  uint64_t directory_size = u32(end + 12), directory_offset = u32(end + 16);
  // Where the central directory must end: at the ZIP64 record if there is one, else at this record.
  uint64_t directory_limit = end_offset;

  // ZIP64: a locator right before the record points at the 64-bit end record. Writers may emit it
  // even when nothing overflows, so look for it whenever there is room, and require it when a
  // 32-bit field holds its "see ZIP64" value.
  bool saturated = count == 0xffff || count_on_disk == 0xffff || directory_size == 0xffffffffu ||
                   directory_offset == 0xffffffffu;
  bool has_locator = false;
  if (end_offset >= kEnd64LocatorSize) {
    uint8_t locator[kEnd64LocatorSize];
    file_.read(end_offset - kEnd64LocatorSize, locator, kEnd64LocatorSize, "ZIP64 end-of-central-directory locator");
    if (u32(locator) == kEnd64LocatorSignature) {
      has_locator = true;
      uint64_t record_offset = u64(locator + 8);
      CTSR_CHECK(record_offset <= end_offset - kEnd64LocatorSize &&
                     end_offset - kEnd64LocatorSize - record_offset >= kEnd64Size,
                 file, ": truncated or corrupt zip archive: the ZIP64 end-of-central-directory locator points at "
                 "offset ", record_offset, ", which leaves no room for the 56-byte ZIP64 record before the locator at "
                 "offset ", end_offset - kEnd64LocatorSize, " (file is ", size, " bytes)");
      uint8_t record[kEnd64Size];
      file_.read(record_offset, record, kEnd64Size, "ZIP64 end-of-central-directory record");
      CTSR_CHECK(u32(record) == kEnd64Signature, file,
                 ": corrupt zip archive: no ZIP64 end-of-central-directory record at offset ", record_offset,
                 " (signature ", hex32(u32(record)), ", expected ", hex32(kEnd64Signature), ")");
      disk = u32(record + 16);
      directory_disk = u32(record + 20);
      count_on_disk = u64(record + 24);
      count = u64(record + 32);
      directory_size = u64(record + 40);
      directory_offset = u64(record + 48);
      directory_limit = record_offset;
    }
  }
  CTSR_CHECK(has_locator || !saturated, file,
             ": corrupt zip archive: the end-of-central-directory record has ZIP64 markers (0xFFFF/0xFFFFFFFF) "
             "but no ZIP64 locator precedes it at offset ", end_offset);
  CTSR_CHECK(disk == 0 && directory_disk == 0 && count_on_disk == count, file,
             ": multi-disk (split) zip archives are not supported: disk ", disk, ", central directory on disk ",
             directory_disk);
  CTSR_CHECK(directory_offset <= directory_limit && directory_size <= directory_limit - directory_offset, file,
             ": truncated or corrupt zip archive: the central directory (offset ", directory_offset, ", ",
             directory_size, " bytes) extends beyond the end of the data at offset ", directory_limit, " (file is ",
             size, " bytes)");
  // Each entry takes at least 46 bytes: a count the directory cannot hold is corrupt, and checking
  // it first keeps a hostile count from reserving memory.
  CTSR_CHECK(count <= directory_size / kCentralHeaderSize, file, ": corrupt zip archive: ", count,
             " entries cannot fit in a central directory of ", directory_size, " bytes");
  central_directory_offset_ = directory_offset;

  std::vector<uint8_t> directory(directory_size);
  file_.read(directory_offset, directory.data(), directory_size, "central directory");
  entries_.reserve(count);
  uint64_t pos = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t entry_offset = directory_offset + pos;
    CTSR_CHECK(directory_size - pos >= kCentralHeaderSize, file, ": corrupt zip archive: central directory entry ",
               i, " of ", count, " at offset ", entry_offset, " runs past the end of the central directory");
    const uint8_t* h = directory.data() + pos;
    CTSR_CHECK(u32(h) == kCentralHeaderSignature, file, ": corrupt zip archive: central directory entry ", i,
               " at offset ", entry_offset, " has signature ", hex32(u32(h)), ", expected ",
               hex32(kCentralHeaderSignature));
    ZipEntry e;
    e.flags = u16(h + 8);
    e.method = u16(h + 10);
    e.crc32 = u32(h + 16);
    e.compressed_size = u32(h + 20);
    e.uncompressed_size = u32(h + 24);
    uint64_t name_size = u16(h + 28), extra_size = u16(h + 30), comment_size = u16(h + 32);
    uint64_t entry_disk = u16(h + 34);
    e.local_header_offset = u32(h + 42);
    CTSR_CHECK(directory_size - pos - kCentralHeaderSize >= name_size + extra_size + comment_size, file,
               ": corrupt zip archive: central directory entry ", i, " at offset ", entry_offset,
               " (name, extra field and comment of ", name_size + extra_size + comment_size,
               " bytes) runs past the end of the central directory");
    e.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_size);

    // ZIP64 extra field: 8-byte values, present only for the 32-bit fields that hold 0xFFFFFFFF
    // (and a 4-byte disk number for 0xFFFF), in this fixed order.
    const uint8_t* extra = h + kCentralHeaderSize + name_size;
    bool need_usize = e.uncompressed_size == 0xffffffffu, need_csize = e.compressed_size == 0xffffffffu;
    bool need_offset = e.local_header_offset == 0xffffffffu, need_disk = entry_disk == 0xffff;
    for (uint64_t x = 0; x + 4 <= extra_size;) {
      uint16_t id = u16(extra + x), field_size = u16(extra + x + 2);
      CTSR_CHECK(x + 4 + field_size <= extra_size, file, ": corrupt zip archive: entry '", e.name,
                 "': extra field ", id, " of ", field_size, " bytes runs past the entry's extra data");
      if (id == kZip64ExtraId) {
        const uint8_t* f = extra + x + 4;
        uint64_t left = field_size;
        auto take64 = [&](uint64_t& value, const char* what) {
          CTSR_CHECK(left >= 8, file, ": corrupt zip archive: entry '", e.name, "': the ZIP64 extra field lacks the ",
                     what);
          value = u64(f);
          f += 8;
          left -= 8;
        };
        if (need_usize) take64(e.uncompressed_size, "uncompressed size"), need_usize = false;
        if (need_csize) take64(e.compressed_size, "compressed size"), need_csize = false;
        if (need_offset) take64(e.local_header_offset, "local header offset"), need_offset = false;
        if (need_disk) {
          CTSR_CHECK(left >= 4, file, ": corrupt zip archive: entry '", e.name,
                     "': the ZIP64 extra field lacks the disk number");
          entry_disk = u32(f);
          need_disk = false;
        }
      }
      x += 4 + field_size;
    }
    CTSR_CHECK(!need_usize && !need_csize && !need_offset && !need_disk, file, ": corrupt zip archive: entry '",
               e.name, "' has 0xFFFFFFFF size or offset fields but no ZIP64 extra field with their values");
    CTSR_CHECK(entry_disk == 0, file, ": multi-disk (split) zip archives are not supported: entry '", e.name,
               "' is on disk ", entry_disk);
    // Deflate expands at most about 1032:1; a larger claim is corrupt (and would make read()
    // reserve absurd amounts of memory).
    CTSR_CHECK(e.method != 8 || e.uncompressed_size / 1032 <= e.compressed_size + 1, file,
               ": corrupt zip archive: entry '", e.name, "' declares ", e.uncompressed_size, " bytes inflated from ",
               e.compressed_size, " deflated bytes, beyond deflate's maximum ratio");
    // Entry data lies before the central directory, so this bounds it without reading the local
    // header (whose name and extra lengths are only known once it is read).
    CTSR_CHECK(e.local_header_offset <= central_directory_offset_ &&
                   central_directory_offset_ - e.local_header_offset >= kLocalHeaderSize &&
                   central_directory_offset_ - e.local_header_offset - kLocalHeaderSize >= e.compressed_size,
               file, ": truncated or corrupt zip archive: entry '", e.name, "' (local header at offset ",
               e.local_header_offset, ", ", e.compressed_size,
               " bytes of data) extends beyond the start of the central directory at offset ",
               central_directory_offset_);
    CTSR_CHECK(index_.emplace(e.name, entries_.size()).second, file, ": corrupt zip archive: entry '", e.name,
               "' appears twice in the central directory");
    entries_.push_back(std::move(e));
    pos += kCentralHeaderSize + name_size + extra_size + comment_size;
  }
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const ZipEntry& ZipArchive::entry(const std::string& name) const {
  const ZipEntry* e = find(name);
  CTSR_CHECK(e != nullptr, path().string(), ": zip archive has no entry '", name, "' (", entries_.size(),
             " entries)");
  return *e;
}

std::string ZipArchive::where(const ZipEntry& entry) const {
  return path().string() + ": entry '" + entry.name + "'";
}

uint64_t ZipArchive::data_offset(const ZipEntry& entry) const {
  uint8_t h[kLocalHeaderSize];
  file_.read(entry.local_header_offset, h, kLocalHeaderSize, "local header of entry '" + entry.name + "'");
  CTSR_CHECK(u32(h) == kLocalHeaderSignature, where(entry), ": no local header at offset ", entry.local_header_offset,
             " (signature ", hex32(u32(h)), ", expected ", hex32(kLocalHeaderSignature), ")");
  // The local header's name and extra lengths may differ from the central directory's (torch pads
  // the local extra field so that data starts on a 64-byte boundary): use its own.
  uint64_t start = entry.local_header_offset + kLocalHeaderSize + u16(h + 26) + u16(h + 28);
  CTSR_CHECK(start <= central_directory_offset_ && central_directory_offset_ - start >= entry.compressed_size,
             where(entry), ": truncated or corrupt: its data (offset ", start, ", ", entry.compressed_size,
             " bytes) extends beyond the start of the central directory at offset ", central_directory_offset_);
  return start;
}

void ZipArchive::check_readable(const ZipEntry& entry) const {
  CTSR_CHECK((entry.flags & 1u) == 0, where(entry), ": is encrypted, which is not supported");
  CTSR_CHECK(entry.method == 0 || entry.method == 8, where(entry), ": compression method ", entry.method,
             " is not supported (expected 0, stored, or 8, deflate)");
  CTSR_CHECK(entry.method != 0 || entry.compressed_size == entry.uncompressed_size, where(entry),
             ": stored (method 0) but its sizes differ: ", entry.compressed_size, " bytes compressed, ",
             entry.uncompressed_size, " uncompressed");
}

std::vector<uint8_t> ZipArchive::read(const ZipEntry& entry, uint64_t max_bytes) const {
  // Checked before the allocation: with them, a stored entry's size is bounded by the file's and
  // a deflated one's by deflate's maximum ratio (checked with the directory).
  check_readable(entry);
  CTSR_CHECK(entry.uncompressed_size <= max_bytes, where(entry), ": declares ", entry.uncompressed_size,
             " bytes, more than the ", max_bytes, " it can need");
  std::vector<uint8_t> out(entry.uncompressed_size);
  read_into(entry, out.data(), out.size());
  return out;
}

void ZipArchive::read_into(const ZipEntry& entry, void* dst, uint64_t bytes) const {
  CTSR_CHECK(bytes == entry.uncompressed_size, where(entry), ": has ", entry.uncompressed_size,
             " bytes, but the destination holds ", bytes);
  check_readable(entry);
  auto* out = static_cast<uint8_t*>(dst);
  const uint64_t start = data_offset(entry);
  if (entry.method == 0) {
    file_.read(start, out, bytes, "data of entry '" + entry.name + "'");
  } else {  // 8, deflate (check_readable)
    // Inflate in chunks so that only the output has to fit in memory.
    z_stream z{};
    CTSR_CHECK(inflateInit2(&z, -MAX_WBITS) == Z_OK, where(entry), ": zlib inflateInit2 failed");
    std::vector<uint8_t> in(static_cast<size_t>(std::min<uint64_t>(kChunk, entry.compressed_size)));
    uint64_t consumed = 0, produced = 0;
    int status = Z_OK;
    try {
      while (status != Z_STREAM_END) {
        if (z.avail_in == 0 && consumed < entry.compressed_size) {
          uint64_t n = std::min<uint64_t>(in.size(), entry.compressed_size - consumed);
          file_.read(start + consumed, in.data(), n, "data of entry '" + entry.name + "'");
          consumed += n;
          z.next_in = in.data();
          z.avail_in = static_cast<uInt>(n);
        }
        // Once the output is full, inflate into a spare byte: a stream that still produces data
        // is longer than declared, one that only reaches its end marker is fine.
        uint8_t spare = 0;
        uint64_t room = std::min<uint64_t>(bytes - produced, uint64_t{1} << 30);
        bool full = room == 0;
        z.next_out = full ? &spare : out + produced;
        z.avail_out = full ? 1u : static_cast<uInt>(room);
        status = inflate(&z, Z_NO_FLUSH);
        uint64_t made = (full ? 1u : room) - z.avail_out;
        CTSR_CHECK(!(full && made > 0), where(entry), ": deflate stream inflates to more than the ", bytes,
                   " bytes the central directory declares");
        if (!full) produced += made;
        if (status == Z_BUF_ERROR && z.avail_in == 0 && consumed == entry.compressed_size) {
          CTSR_FAIL(where(entry), ": deflate stream is truncated: it ends after ", produced, " of ", bytes, " bytes");
        }
        CTSR_CHECK(status == Z_OK || status == Z_STREAM_END || status == Z_BUF_ERROR, where(entry),
                   ": corrupt deflate stream (zlib: ", z.msg ? z.msg : "error", ")");
      }
      CTSR_CHECK(produced == bytes, where(entry), ": deflate stream ends after ", produced, " bytes, but the ",
                 "central directory declares ", bytes);
    } catch (...) {
      inflateEnd(&z);
      throw;
    }
    inflateEnd(&z);
  }
  uint32_t crc = 0;
  for (uint64_t done = 0; done < bytes; done += kChunk) crc = crc32_update(crc, out + done, std::min(kChunk, bytes - done));
  CTSR_CHECK(crc == entry.crc32, where(entry), ": CRC-32 mismatch: data has ", hex32(crc), ", the central directory ",
             "expects ", hex32(entry.crc32), " (the file is corrupt)");
}

void ZipArchive::read_range(const ZipEntry& entry, uint64_t offset, uint64_t bytes, void* dst) const {
  CTSR_CHECK(entry.method == 0, where(entry), ": is compressed (method ", entry.method,
             "); only stored entries can be read in part");
  CTSR_CHECK((entry.flags & 1u) == 0, where(entry), ": is encrypted, which is not supported");
  CTSR_CHECK(offset <= entry.uncompressed_size && bytes <= entry.uncompressed_size - offset, where(entry),
             ": range (offset ", offset, ", ", bytes, " bytes) extends beyond the entry's ", entry.uncompressed_size,
             " bytes");
  file_.read(data_offset(entry) + offset, dst, bytes, "data of entry '" + entry.name + "'");
}

}  // namespace ctsr::io
