#!/usr/bin/env bash
# Installs what ctsr needs, builds it and runs the test suite.
#   bash scripts/test.sh              Release build: reference path, CUDA-on-CPU executor, and the
#                                     real CUDA target when nvcc is present (GPU tests run when a
#                                     GPU is present and skip with a message otherwise)
#   bash scripts/test.sh --sanitize   Debug build with AddressSanitizer + UBSan, host paths only
#                                     (libraries at -O1), every test but the heavy ones below
# Environment: CTSR_CUDA_ARCHS (default "80;90"), CTSR_WERROR (ON: warnings are errors; CI sets it),
# BUILD_DIR, JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=release
[ "${1:-}" = "--sanitize" ] && mode=sanitize

bash scripts/install_deps.sh
source scripts/blas_env.sh

jobs=${JOBS:-$(nproc)}
cmake_args=(-G Ninja -DCTSR_CUDA_ON_CPU=ON "-DCTSR_WERROR=${CTSR_WERROR:-OFF}")

if [ "$mode" = sanitize ]; then
  build=${BUILD_DIR:-build-sanitize}
  # The layering is proved by the Release build's link checks; no need to link them again here.
  cmake_args+=(-DCMAKE_BUILD_TYPE=Debug -DCTSR_SANITIZE=ON -DCTSR_CUDA=OFF -DCTSR_BUILD_BENCH=OFF -DCTSR_CHECK_LAYERS=OFF)
else
  build=${BUILD_DIR:-build}
  cmake_args+=(-DCMAKE_BUILD_TYPE=Release)
  # nvcc from CUDACXX, PATH, CUDA_HOME, or the toolkit's default install prefix.
  nvcc=${CUDACXX:-$(command -v nvcc || true)}
  for prefix in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
    [ -z "$nvcc" ] && [ -n "$prefix" ] && [ -x "$prefix/bin/nvcc" ] && nvcc="$prefix/bin/nvcc"
  done
  if [ -n "$nvcc" ]; then
    cmake_args+=(-DCTSR_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" "-DCTSR_CUDA_ARCHS=${CTSR_CUDA_ARCHS:-80;90}")
    echo "test.sh: building the CUDA target with $nvcc for architectures ${CTSR_CUDA_ARCHS:-80;90}"
  else
    cmake_args+=(-DCTSR_CUDA=OFF)
    echo "test.sh: no nvcc found: building the reference and CUDA-on-CPU paths only"
  fi
fi

cmake -S . -B "$build" "${cmake_args[@]}"
cmake --build "$build" -j "$jobs"
# Blocks of the executor run on all cores; ctest runs one test binary case at a time per job.
ctest_args=(--test-dir "$build" --output-on-failure -j "$jobs")
if [ "$mode" = sanitize ]; then
  # The sanitizers look for memory errors and undefined behaviour in the code a test runs; these
  # tests add numerical volume, not code: whole-network float64 gradient checks (each layer's own
  # gradcheck stays), whole models and training runs on the executor and the shipped VQ-AE on full
  # phantoms (each op's executor parity and the small-model tests stay), and the large-tile conv3d
  # parity (the small-tile one runs the same kernels). Each runs in the Release build above; here
  # they took 14 of the stage's 39 CPU-minutes.
  heavy=(
    'VqaeBackward\.(Decoder|Encoder|StraightThrough)Gradcheck'
    'UNet\.GradientCheckOfTheWholeNetwork'
    'TiledNetworks\.(TheShippedVqaeOnAPhantomLeavesNoSeamInEncodeOrDecode|EveryStepOfATiledSamplingRunMeetsTheBoundInTwoTilings)'
    'ShippedVqae\.ReconstructsUnseenPhantoms'
    'Paths/(VqaeCuda|VqaeTrainerParity|VqaeTrainParity|UNetGoldenPaths|TrainerParity)\..*/cuda_on_cpu'
    'Paths/Conv3dParity\.(Bfloat16TensorCores|CustomEngine)LargeTiles.*/cuda_on_cpu'
  )
  ctest_args+=(-E "$(IFS='|'; echo "${heavy[*]}")")
fi
ctest "${ctest_args[@]}"

if [ "$mode" = release ]; then
  # The benchmarks must run on the CPU paths too (tiny iteration counts): a smoke test.
  "$build/bench/ctsr_bench" --benchmark_min_time=0.001 --benchmark_filter='cpu|cuda_on_cpu' >/dev/null
  echo "test.sh: ctsr_bench ran on the CPU paths"
fi
