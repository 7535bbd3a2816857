#!/usr/bin/env bash
# Installs what ctsr needs to build and test, from Debian 12 packages only.
# Idempotent: packages already present are left alone. Needs root (or sudo).
#   bash scripts/install_deps.sh          the build and the test suite
#   bash scripts/install_deps.sh --fuzz   also clang, libFuzzer and lld (scripts/fuzz.sh)
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenblas-dev libopenblas-openmp-dev libboost-context-dev
  libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  libomp-dev
  zlib1g-dev libnifti2-dev libniftiio-dev
  libgdcm-dev  # DICOM series (runtime/formats/dicom.cpp)
  libpng-dev
  libopenmpi-dev openmpi-bin
  patchelf  # scripts/gpu_bundle.sh: $ORIGIN-relative run paths in the GPU bundle
  time      # GNU time (/usr/bin/time): bench/infer_volumes.sh's wall time and peak memory
)
if [ "${1:-}" = "--fuzz" ]; then
  # libFuzzer (libclang_rt.fuzzer) is in libclang-rt-14-dev, which clang-14 only recommends;
  # fuzz/CMakeLists.txt links with lld.
  packages+=(clang-14 libclang-rt-14-dev lld-14)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
