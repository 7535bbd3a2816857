// The name of a kernel from its function pointer, for error messages: which kernel faulted,
// deadlocked or broke a rule. Works for the executor's kernels (host functions) and for CUDA
// kernels (the pointer is nvcc's host stub, which carries the kernel's mangled name).
#pragma once

#include <string>

namespace ctsr {

// Demangled name of the function at `fn`, looked up in the ELF symbol tables (.symtab, which
// also lists internal-linkage kernels, else .dynsym) of the loaded object that contains it.
// Falls back to the address in hex when the binary is stripped or the address is unknown.
std::string kernel_name(const void* fn);

}  // namespace ctsr
