#!/usr/bin/env bash
# Compiler launcher for the nvcc-built kernel libraries (CMakeLists.txt, CTSR_PTXAS_LOG): runs the
# compile command it is given, with ptxas's resource report (-Xptxas=-v added there), and keeps
# that report in <object>.ptxas.log beside the object file for scripts/kernel_resources.py. The
# report's lines stay out of the build log; anything else nvcc prints (warnings, errors) passes.
set -uo pipefail
out=""
prev=""
for arg in "$@"; do
  [ "$prev" = "-o" ] && out=$arg
  prev=$arg
done
if [ -z "$out" ]; then
  exec "$@"
fi
log="$out.ptxas.log"
"$@" 2>"$log"
rc=$?
grep -Ev "^ptxas info    : |^    (Function properties for|[0-9]+ bytes stack frame|Compile time)" "$log" >&2
exit $rc
