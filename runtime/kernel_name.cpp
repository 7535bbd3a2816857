#include "runtime/kernel_name.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace ctsr {

namespace {

struct FunctionSymbol {
  uint64_t start = 0, size = 0;  // link-time address
  std::string mangled;
};

// The function symbols of one ELF file, sorted by address.
std::vector<FunctionSymbol> read_function_symbols(const std::string& path) {
  std::vector<FunctionSymbol> out;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  struct stat st{};
  if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(Elf64_Ehdr))) {
    close(fd);
    return out;
  }
  const size_t bytes = static_cast<size_t>(st.st_size);
  void* map = mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return out;
  const auto* base = static_cast<const unsigned char*>(map);
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
  auto inside = [&](uint64_t off, uint64_t len) { return off <= bytes && len <= bytes - off; };
  if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 &&
      inside(eh->e_shoff, uint64_t(eh->e_shnum) * sizeof(Elf64_Shdr))) {
    const auto* sections = reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff);
    for (uint32_t want : {uint32_t(SHT_SYMTAB), uint32_t(SHT_DYNSYM)}) {
      for (int i = 0; i < eh->e_shnum && out.empty(); ++i) {
        const Elf64_Shdr& s = sections[i];
        if (s.sh_type != want || s.sh_link >= eh->e_shnum || !inside(s.sh_offset, s.sh_size)) continue;
        const Elf64_Shdr& strs = sections[s.sh_link];
        if (!inside(strs.sh_offset, strs.sh_size)) continue;
        const auto* syms = reinterpret_cast<const Elf64_Sym*>(base + s.sh_offset);
        const size_t n = s.sh_size / sizeof(Elf64_Sym);
        for (size_t k = 0; k < n; ++k) {
          if (ELF64_ST_TYPE(syms[k].st_info) != STT_FUNC || syms[k].st_value == 0) continue;
          if (syms[k].st_name >= strs.sh_size) continue;
          const char* name = reinterpret_cast<const char*>(base + strs.sh_offset + syms[k].st_name);
          out.push_back({syms[k].st_value, syms[k].st_size, std::string(name, strnlen(name, strs.sh_size - syms[k].st_name))});
        }
      }
      if (!out.empty()) break;
    }
  }
  munmap(map, bytes);
  std::sort(out.begin(), out.end(), [](const FunctionSymbol& a, const FunctionSymbol& b) { return a.start < b.start; });
  return out;
}

std::string demangle(const std::string& mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> d(abi::__cxa_demangle(mangled.c_str(), nullptr, nullptr, &status), std::free);
  return status == 0 && d ? std::string(d.get()) : mangled;
}

// Where the main program is mapped: the first object dl_iterate_phdr reports.
const void* main_program_base() {
  static const void* base = [] {
    const void* found = nullptr;
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* data) {
          for (int i = 0; i < info->dlpi_phnum; ++i) {
            if (info->dlpi_phdr[i].p_type == PT_LOAD) {
              *static_cast<const void**>(data) = reinterpret_cast<const void*>(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
              break;
            }
          }
          return 1;  // the first object is the program
        },
        &found);
    return found;
  }();
  return base;
}

std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

}  // namespace

std::string kernel_name(const void* fn) {
  Dl_info info{};
  if (fn == nullptr || dladdr(fn, &info) == 0 || info.dli_fbase == nullptr) return "kernel at " + hex(fn);
  // The main program's dli_fname is argv[0], which may be relative: read it through /proc.
  std::string path = info.dli_fname ? info.dli_fname : "";
  if (info.dli_fbase == main_program_base() || path.empty()) path = "/proc/self/exe";
  // Never destroyed: error reports and the executor's launch log (written by an atexit handler)
  // may name kernels while static objects are being torn down.
  static auto* mutex = new std::mutex;
  static auto* cache = new std::map<std::string, std::vector<FunctionSymbol>>;
  std::lock_guard<std::mutex> lock(*mutex);
  auto it = cache->find(path);
  if (it == cache->end()) it = cache->emplace(path, read_function_symbols(path)).first;
  const auto& symbols = it->second;
  // A position-independent object's symbols are relative to its load base; a fixed-address
  // executable's are absolute (its base is where its first segment is mapped, and e_type says which).
  const auto* eh = static_cast<const Elf64_Ehdr*>(info.dli_fbase);
  const uint64_t bias = eh->e_type == ET_DYN ? reinterpret_cast<uint64_t>(info.dli_fbase) : 0;
  const uint64_t address = reinterpret_cast<uint64_t>(fn) - bias;
  auto after = std::upper_bound(symbols.begin(), symbols.end(), address,
                                [](uint64_t a, const FunctionSymbol& s) { return a < s.start; });
  if (after != symbols.begin()) {
    const FunctionSymbol& s = *(after - 1);
    if (address < s.start + std::max<uint64_t>(s.size, 1)) return demangle(s.mangled);
  }
  if (info.dli_sname && info.dli_saddr == fn) return demangle(info.dli_sname);
  return "kernel at " + hex(fn);
}

}  // namespace ctsr
