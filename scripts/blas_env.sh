# Sourced by scripts/main.sh and scripts/test.sh: chooses OpenBLAS's kernels when the user has not.
# OpenBLAS picks them from the CPU's model and falls back to generic SSE3 ones ("Prescott") on
# models it does not know (Debian 12's 0.3.21 on Sapphire and Emerald Rapids); there its AVX-512
# kernels made CPU training 1.7x faster (bench/RESULTS.md). The rule is the CPU's features, as in
# ctsr::blas_core_advice (runtime/gemm.h): SkylakeX with AVX-512 (F, BW, VL, DQ), Haswell with
# AVX2 and FMA. On CPUs OpenBLAS does know these are the single- and double-precision kernels it
# would use anyway. Set OPENBLAS_CORETYPE yourself to override.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -r /proc/cpuinfo ]; then
  ctsr_cpu_flags=" $(grep -m 1 '^flags' /proc/cpuinfo | cut -d: -f2) "
  ctsr_has() { for f in "$@"; do [[ "$ctsr_cpu_flags" == *" $f "* ]] || return 1; done; }
  if ctsr_has avx512f avx512bw avx512vl avx512dq; then
    export OPENBLAS_CORETYPE=SkylakeX
  elif ctsr_has avx2 fma; then
    export OPENBLAS_CORETYPE=Haswell
  fi
  unset -f ctsr_has
  unset ctsr_cpu_flags
fi
