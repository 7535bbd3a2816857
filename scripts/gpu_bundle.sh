#!/usr/bin/env bash
# Packs the CUDA build into one folder (at most 64 MiB) to copy to a GPU machine and check there
# with scripts/gpu_check.sh (README, "Running the GPU check"). No GPU needed to build it.
#   bash scripts/gpu_bundle.sh [OUTDIR]       (default gpu-bundle)
# Environment: BUILD_DIR (a CUDA-configured build to reuse, as CI does with build/; brought up to
# date for the bundled targets; default: configures and builds build-gpu-bundle), CTSR_CUDA_ARCHS
# (for that new build, default 90), JOBS.
# The folder holds scripts/gpu_check.sh, BUNDLE.txt (what it was built from, and what the GPU
# machine must provide) and bundle.tar.xz, which gpu_check.sh unpacks into its OUTDIR: bin/
# (ctsr_tests, ctsr_bench, the programs; debug info stripped, the symbol table kept: the executor
# names kernels from it), lib/ (every shared library they need except the base system's and the
# NVIDIA ones), tests/data, configs, models, tools/pytorch and scripts/. Run paths are
# $ORIGIN-relative (patchelf). Left for the GPU machine: glibc, the driver (libcuda), cudart,
# cuBLAS(Lt), cuDNN and NCCL, found in LD_LIBRARY_PATH, the CUDA toolkit's lib64, or the nvidia/*/lib
# folders of PyTorch's wheels (gpu_check.sh searches them in that order). CTSR_BUNDLE_XZ: xz's
# options (default -6 -T2).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-gpu-bundle}
limit=$((64 * 1024 * 1024))
# Libraries the GPU machine provides: the base system and NVIDIA's (sonames, as ldd prints them).
base_system='^(linux-vdso\.so|ld-linux-x86-64\.so|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libresolv\.so|libutil\.so)'
vendor='^(libcuda\.so|libcudart\.so|libcublas\.so|libcublasLt\.so|libcudnn[a-z_]*\.so|libnccl\.so|libnvidia-)'

die() { echo "gpu_bundle: $*" >&2; exit 1; }
command -v patchelf >/dev/null || die "patchelf not found: expected it from Debian (scripts/install_deps.sh installs it)"

if [ -n "${BUILD_DIR:-}" ]; then
  build=$BUILD_DIR
  [ -f "$build/CMakeCache.txt" ] || die "BUILD_DIR=$build has no CMakeCache.txt: expected a configured build folder"
else
  build=$root/build-gpu-bundle
  nvcc=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
  [ -x "$nvcc" ] || die "no nvcc (CUDACXX, PATH or /usr/local/cuda/bin): the bundle needs the CUDA build"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCTSR_CUDA=ON -DCTSR_CUDA_ON_CPU=ON \
    -DCMAKE_CUDA_COMPILER="$nvcc" "-DCTSR_CUDA_ARCHS=${CTSR_CUDA_ARCHS:-90}" >/dev/null
fi
grep -q '^CTSR_CUDA:BOOL=ON' "$build/CMakeCache.txt" ||
  die "$build is not configured with -DCTSR_CUDA=ON: the bundle is for a GPU; expected a CUDA build"
programs=$(cd "$root/tools" && ls ctsr_*.cpp | sed 's/\.cpp$//')
# shellcheck disable=SC2086  # one target per word
cmake --build "$build" -j "${JOBS:-$(nproc)}" --target ctsr_tests ctsr_bench $programs

# The tree is assembled and checked in $out/tree, then packed (xz) into $out/bundle.tar.xz: the
# binaries carry one fatbin each (about 6 MB), which xz's window shares between them.
final=$out
out=$final/tree
rm -rf "$final"
mkdir -p "$out/bin" "$out/lib" "$out/tests" "$out/tools" "$out/scripts" "$out/models"
cp "$build/tests/ctsr_tests" "$build/bench/ctsr_bench" "$out/bin/"
for p in $programs; do cp "$build/bin/$p" "$out/bin/"; done
strip --strip-debug "$out"/bin/*
cp -r "$root/tests/data" "$out/tests/data"
cp -r "$root/configs" "$out/configs"
cp "$root"/models/*.safetensors "$root/models/README.md" "$out/models/"
cp -r "$root/tools/pytorch" "$out/tools/pytorch"
rm -rf "$out/tools/pytorch/__pycache__"
cp "$root/scripts/gpu_check.sh" "$root/scripts/blas_env.sh" "$out/scripts/"

# Every library ldd resolves for the binaries (transitively), less the GPU machine's own.
declare -A bundled=()
declare -A left=()
for f in "$out"/bin/*; do
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    if [[ $name =~ $base_system ]]; then continue; fi
    if [[ $name =~ $vendor ]]; then left[$name]=1; continue; fi
    [ -f "$path" ] || die "$f needs $name, which is not found here: expected ldd to resolve it"
    bundled[$name]=$path
  done < <(ldd "$f")
done
for name in "${!bundled[@]}"; do
  cp -L "${bundled[$name]}" "$out/lib/$name"
  chmod u+w "$out/lib/$name"
  patchelf --set-rpath '$ORIGIN' "$out/lib/$name"
done
for f in "$out"/bin/*; do patchelf --set-rpath '$ORIGIN/../lib' "$f"; done

# The newest glibc symbol version anything in the bundle needs: the GPU machine's must be as new.
glibc=$(objdump -T "$out"/bin/* "$out"/lib/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)
nvcc_version=$(sed -n 's/^set(CMAKE_CUDA_COMPILER_VERSION "\(.*\)")$/\1/p' "$build"/CMakeFiles/*/CMakeCUDACompiler.cmake | head -n 1)
{
  echo "ctsr GPU bundle"
  echo "commit: $(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "cuda architectures: $(grep '^CTSR_CUDA_ARCHS:' "$build/CMakeCache.txt" | cut -d= -f2)"
  echo "nvcc: $nvcc_version"
  echo "needs glibc: ${glibc#GLIBC_} or newer"
  echo "from the GPU machine: ${!left[*]}"
  echo "bundled in lib/: ${!bundled[*]}"
} > "$out/BUNDLE.txt"

# ldd with no LD_LIBRARY_PATH (the bundle's run paths and the system's directories): everything
# resolves to the bundle or the base system, except the NVIDIA libraries, listed with where they
# resolve here (the GPU machine provides its own).
lib_dir=$(cd "$out/lib" && pwd)
problems=""
outside=""
for f in "$out"/bin/*; do
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    if [[ $name =~ $vendor ]]; then
      outside+="$name => $path"$'\n'
    elif [ "$path" = not ]; then
      problems+="$(basename "$f") needs $name, not found; "
    elif ! [[ $name =~ $base_system ]] && [[ $(readlink -f "$path") != "$lib_dir"/* ]]; then
      problems+="$(basename "$f") loads $name from $path, outside the bundle; "
    fi
  done < <(env -u LD_LIBRARY_PATH ldd "$f")
done
outside=$(sort -u <<< "$outside" | sed '/^$/d')
echo "outside the bundle (ldd here):" >> "$out/BUNDLE.txt"
sed 's/^/  /' <<< "$outside" >> "$out/BUNDLE.txt"
echo "gpu_bundle: NVIDIA libraries left outside the bundle (where ldd finds them here):"
sed 's/^/  /' <<< "$outside"
[ -z "$problems" ] || die "library check: $problems"

# The bundle: the packed tree, with gpu_check.sh (which unpacks it) and BUNDLE.txt beside it.
tar -C "$out" -cf - . | xz ${CTSR_BUNDLE_XZ:--6 -T2} > "$final/bundle.tar.xz"
mkdir -p "$final/scripts"
cp "$out/scripts/gpu_check.sh" "$final/scripts/"
cp "$out/BUNDLE.txt" "$final/"
unpacked=$(du -sb "$out" | cut -f 1)
rm -rf "$out"
size=$(du -sb "$final" | cut -f 1)
echo "gpu_bundle: $final: $((size / 1024 / 1024)) MiB ($size bytes; $((unpacked / 1024 / 1024)) MiB unpacked)," \
     "${#bundled[@]} libraries bundled; from the GPU machine: ${!left[*]}"
[ "$size" -le "$limit" ] || die "$final is $size bytes, over the limit of $limit (64 MiB)"
