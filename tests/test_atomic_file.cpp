// The I/O helpers behind every save (RELIABILITY.md): io::AtomicFile and write_file_atomically
// (exclusive temporaries, a failed write leaves the previous file, the fault hook gives a full
// disk's error), io::FolderLock (one process per folder, never stale after SIGKILL) and the
// per-tensor checksums of runtime/formats/tensor_checksum.h.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "runtime/formats/atomic_file.h"
#include "runtime/formats/folder_lock.h"
#include "runtime/formats/safetensors.h"
#include "runtime/formats/tensor_checksum.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"

namespace ctsr::test {
namespace {

std::string file_text(const std::filesystem::path& path) { return read_text(path); }

int count_temporaries(const std::filesystem::path& dir) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) n += io::is_atomic_temp_name(e.path()) ? 1 : 0;
  return n;
}

TEST(AtomicFile, CommitReplacesTheTargetAndAFailedWriterLeavesIt) {
  TempDir dir("atomic");
  const auto target = dir / "a.txt";
  io::write_file_atomically(target, [](std::ostream& o) { o << "first"; });
  EXPECT_EQ(file_text(target), "first");
  {
    // The temporary exists, empty, from the start; a second one for the same target is another file.
    io::AtomicFile one(target), two(target);
    EXPECT_TRUE(std::filesystem::is_regular_file(one.temp_path()));
    EXPECT_NE(one.temp_path(), two.temp_path());
    EXPECT_EQ(std::filesystem::file_size(one.temp_path()), 0u);
    EXPECT_EQ(count_temporaries(dir.path()), 2);
  }
  EXPECT_EQ(count_temporaries(dir.path()), 0) << "uncommitted temporaries must go with their AtomicFile";
  EXPECT_THROW(io::write_file_atomically(target, [](std::ostream& o) {
                 o << "half of the second";
                 throw std::runtime_error("the writer failed");
               }),
               std::runtime_error);
  EXPECT_EQ(file_text(target), "first");
  EXPECT_EQ(count_temporaries(dir.path()), 0);
  // Large blocks (a tensor) go past the stream's buffer: every byte arrives.
  std::string big(300000, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = char('a' + i % 26);
  io::write_file_atomically(target, [&](std::ostream& o) {
    o << "head";
    o.write(big.data(), std::streamsize(big.size()));
    o << "tail";
  });
  EXPECT_EQ(file_text(target), "head" + big + "tail");
  expect_error_mentions([&] { io::AtomicFile(dir / "no-such-folder" / "x"); }, {"no-such-folder", "does not exist"});
}

// set_fail_write_at is CTSR_FAIL_WRITE_AT inside a process: the n-th write fails with the error
// of a full disk, the previous file stays, no temporary is left; the writes after it work.
TEST(AtomicFile, InjectedWriteFailureIsAFullDisk) {
  TempDir dir("atomic-fail");
  const auto target = dir / "weights.bin";
  io::write_file_atomically(target, [](std::ostream& o) { o << "good"; });
  io::set_fail_write_at(2);
  io::write_file_atomically(dir / "other.bin", [](std::ostream& o) { o << "1st"; });
  expect_error_mentions([&] { io::write_file_atomically(target, [](std::ostream& o) { o << "new"; }); },
                        {"cannot write '" + target.string() + "'", std::strerror(ENOSPC), "previous file"});
  EXPECT_EQ(file_text(target), "good");
  EXPECT_EQ(count_temporaries(dir.path()), 0);
  io::write_file_atomically(target, [](std::ostream& o) { o << "new"; });
  EXPECT_EQ(file_text(target), "new");
  // An AtomicFile written by name (libraries that open the path themselves) fails the same way.
  io::set_fail_write_at(1);
  {
    io::AtomicFile file(target);
    std::ofstream(file.temp_path()) << "by name";
    expect_error_mentions([&] { file.commit(); }, {target.string(), std::strerror(ENOSPC)});
  }
  EXPECT_EQ(file_text(target), "new");
  EXPECT_EQ(count_temporaries(dir.path()), 0);
  io::set_fail_write_at(0);
}

TEST(AtomicFile, StaleTemporariesAreRemovedAndOthersKept) {
  TempDir dir("atomic-stale");
  std::ofstream(dir / ".tmp-123-0-step_00000004.safetensors") << "killed half way";
  std::ofstream(dir / "step_00000002.safetensors") << "a finished file";
  std::ofstream(dir / "notes.tmp-1") << "not ours";
  EXPECT_EQ(io::remove_atomic_temporaries(dir.path()), 1);
  EXPECT_EQ(dir.entries().size(), 2u);
  EXPECT_EQ(io::remove_atomic_temporaries(dir / "missing"), 0);
}

TEST(FolderLock, ASecondHolderIsRefusedNamingThePidAndTheFile) {
  TempDir dir("lock");
  const auto folder = dir / "run";
  {
    io::FolderLock lock(folder, "output.dir");
    EXPECT_TRUE(std::filesystem::is_directory(folder));
    EXPECT_EQ(io::lock_holder_pid(folder), long(::getpid()));
    // Another open of the file (as another process would) cannot take it.
    expect_error_mentions([&] { io::FolderLock(folder, "output.dir"); },
                          {"output.dir " + folder.string() + " is in use by process " + std::to_string(::getpid()),
                           (folder / ".ctsr.lock").string()});
  }
  io::FolderLock again(folder, "output.dir");  // released with its holder
}

// The kernel drops a flock with its holder: SIGKILL cannot leave a stale lock.
TEST(FolderLock, AHolderKilledWithSigkillLeavesNoStaleLock) {
  TempDir dir("lock-kill");
  const auto folder = dir / "run";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    try {
      io::FolderLock lock(folder, "output.dir");
      const char byte = 'L';
      if (::write(ready[1], &byte, 1) != 1) ::_exit(3);
      for (;;) ::pause();
    } catch (...) {
      ::_exit(2);
    }
  }
  ::close(ready[1]);
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1) << "the child did not take the lock";
  ::close(ready[0]);
  expect_error_mentions([&] { io::FolderLock(folder, "output.dir"); }, {"in use by process " + std::to_string(child)});
  ::kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  io::FolderLock mine(folder, "output.dir");
  EXPECT_EQ(io::lock_holder_pid(folder), long(::getpid()));
}

TEST(TensorChecksum, DamagedBytesAreNamedAndOlderFilesStillLoad) {
  TempDir dir("checksum");
  const Tensor a = random_tensor({3, 5}, 1), b = random_tensor({7}, 2, DType::float64);
  std::map<std::string, std::string> meta{{"format", "test"}};
  io::add_checksums({{"a", a}, {"b", b}}, meta);
  EXPECT_EQ(meta.at("crc32.a"), io::format_crc32(io::crc32_of(a.raw_data(), a.nbytes())));
  EXPECT_EQ(io::crc32_of("123456789", 9), 0xcbf43926u);  // the CRC-32 check value
  const auto path = dir / "t.safetensors";
  io::write_safetensors(path, {{"a", a}, {"b", b}}, meta);
  {
    io::SafetensorsReader reader(path);
    EXPECT_TRUE(tensors_equal(io::load_verified(reader, "a"), a));
    EXPECT_TRUE(tensors_equal(io::load_verified(reader, "b"), b));
  }
  // One float of b overwritten with NaN, in place.
  const uint64_t data_start = [&] {
    std::ifstream in(path, std::ios::binary);
    unsigned char n[8];
    in.read(reinterpret_cast<char*>(n), 8);
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | n[i];
    return 8 + v;
  }();
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(data_start + a.nbytes() + 8));
    const double nan = std::nan("");
    f.write(reinterpret_cast<const char*>(&nan), sizeof nan);
  }
  io::SafetensorsReader reader(path);
  EXPECT_TRUE(tensors_equal(io::load_verified(reader, "a"), a));
  expect_error_mentions([&] { io::load_verified(reader, "b"); },
                        {path.string(), "tensor 'b' is damaged", "CRC-32 is", "file records " + meta.at("crc32.b")});
  // An older file (no checksums) loads unverified; one that lost a single checksum does not.
  io::write_safetensors(dir / "old.safetensors", {{"a", a}}, {{"format", "test"}});
  EXPECT_NO_THROW(io::load_verified(io::SafetensorsReader(dir / "old.safetensors"), "a"));
  io::write_safetensors(dir / "altered.safetensors", {{"a", a}, {"b", b}}, {{"crc32.a", meta.at("crc32.a")}});
  expect_error_mentions([&] { io::load_verified(io::SafetensorsReader(dir / "altered.safetensors"), "b"); },
                        {"tensor 'b' has no checksum"});
}

}  // namespace
}  // namespace ctsr::test
