// The part of the two torch.save harnesses (fuzz/torch_checkpoint.cpp: whole files;
// fuzz/torch_pickle.cpp: data.pkl inside an archive the harness builds) that reads a checkpoint
// as ctsr_vqae convert and the VQ-AE loader do: open, then load every
// tensor, each with the dtype and shape of its record.
#pragma once

#include <filesystem>
#include <string>

#include "fuzz/fuzz_support.h"
#include "runtime/formats/torch_checkpoint.h"

namespace ctsr::fuzz {

inline void read_torch_checkpoint(const std::filesystem::path& path, const char* harness) {
  const io::TorchCheckpoint checkpoint(path);
  for (const std::string& name : checkpoint.names()) {
    const io::TensorRecord& record = checkpoint.record(name);
    const Tensor t = checkpoint.load(name);
    expect(t.dtype() == record.dtype && t.shape().vec() == record.shape, harness,
           "tensor '" + name + "' loads as " + t.shape().str() + " but its record says otherwise");
    touch(t, harness);
  }
}

}  // namespace ctsr::fuzz
