// NumPy .npy files: one array, a small text header (a Python dict literal) and the raw bytes.
// https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
//
// Read: format versions 1.0, 2.0 and 3.0; little-endian '<f2' '<f4' '<f8' '<i4' '<i8' and
// '|u1' ('<u1'); C order. Refused, with the file named: fortran_order True, big-endian data,
// any other dtype (int8 '|i1', unsigned wider than 8 bits, bool, complex, objects), more than
// kMaxDims dimensions, and a data section shorter or longer than the shape says.
// Write: version 1.0, the tensor's dtype (float16, float32,
// float64, int32, int64, uint8; bfloat16 has no NumPy dtype), through an AtomicFile, from a host
// copy of a tensor on any device.
#pragma once

#include <filesystem>

#include "runtime/tensor.h"

namespace ctsr::io {

// A contiguous CPU tensor in the stored dtype and shape (a 0-d array has shape []).
Tensor read_npy(const std::filesystem::path& path);
void write_npy(const std::filesystem::path& path, const Tensor& tensor);

}  // namespace ctsr::io
