// What every ctsr program shares: CLI11 parsing, and one way to fail. A ctsr::Error (or any
// std::exception) becomes a single line "<program>: error: <message>" on stderr and exit status 1;
// a usage error prints CLI11's message and exits 2 (CLI11's convention for --help is 0).
#pragma once

#include <CLI/CLI.hpp>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <string>

#include "runtime/device.h"
#include "runtime/formats/volume.h"

namespace ctsr::tools {

// "auto": the first GPU when there is one, else the CPU reference path when there is no GPU or no
// NVIDIA driver; an error naming CUDA's error when CUDA fails otherwise (cuda_problem(), e.g. a
// driver older than the CUDA runtime). Any other text: Device::parse.
Device resolve_device(const std::string& text);
// resolve_device for a --device flag, checked against the GPUs this machine has (an error names
// the flag, the value and the choices), and made the calling thread's CUDA device.
Device device_from_flag(const std::string& text);

int run_program(CLI::App& app, int argc, char** argv, const std::function<void()>& body);

// An output volume's name checked before any work: its format (io::volume_format), and for a DICOM
// series folder that an existing target is a folder of DICOM files only (a previous result, which
// the write replaces), as io::write_volume will require. Errors are one line naming `flag`.
io::VolumeFormat check_volume_output(const std::filesystem::path& path, const std::string& flag);

// This process's peak resident memory so far, in bytes (getrusage's ru_maxrss).
size_t peak_rss_bytes();


}  // namespace ctsr::tools
