#!/usr/bin/env bash
# Builds the libFuzzer harnesses of the readers (fuzz/, FUZZING.md) with clang and runs them.
#   bash scripts/fuzz.sh --build                      build only (BUILD_DIR, default build-fuzz)
#   bash scripts/fuzz.sh --smoke [--seconds N]        every harness N s (default 15) on its committed
#                                                     corpus, JOBS (default 2) at a time; fails on any
#                                                     finding (CI)
#   bash scripts/fuzz.sh --run NAME [--seconds N] [--jobs J]
#                                                     a long run of one harness (default 900 s): new
#                                                     inputs go to fuzz-out/corpus/NAME, crashes to
#                                                     fuzz-out/findings/NAME; without --jobs one
#                                                     process that stops at the first finding, with
#                                                     it libFuzzer's -fork=J, J processes that go on
#                                                     after findings; prints execs and coverage
# Every run: -rss_limit_mb=2048 -malloc_limit_mb=1024 (a small file must not cost much memory),
# -timeout=10 (dicom 30), -max_len per harness, the harness's dictionary. Environment: BUILD_DIR, JOBS,
# FUZZ_OUT (default fuzz-out), FUZZ_CXX (default clang++-14).
set -euo pipefail
cd "$(dirname "$0")/.."

mode="" name="" seconds="" jobs=${JOBS:-2} fork=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build) mode=build ;;
    --smoke) mode=smoke ;;
    --run) mode=run; name=${2:?--run needs a harness name}; shift ;;
    --seconds) seconds=${2:?--seconds needs a number}; shift ;;
    --jobs) fork=${2:?--jobs needs a number}; shift ;;
    *) echo "fuzz.sh: unknown argument '$1' (see the top of scripts/fuzz.sh)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$mode" ] || { echo "fuzz.sh: give --build, --smoke or --run NAME" >&2; exit 2; }

harnesses=$(tr '\n' ' ' < fuzz/harnesses.cmake | sed -E 's/.*set\(CTSR_FUZZ_HARNESSES ([^)]*)\).*/\1/')
build=${BUILD_DIR:-build-fuzz}
out=${FUZZ_OUT:-fuzz-out}
cxx=${FUZZ_CXX:-clang++-14}

# The largest input each harness is given: a few times its largest seed.
# Seconds one input may take: 10, but 30 for dicom, whose JPEG-LS inputs reach CharLS 2.4.1 (Debian's),
# which spends 6 to 12 s on some corrupt 1 KB streams before refusing them (FUZZING.md, open findings).
input_timeout() {
  case $1 in
    dicom) echo 30 ;;
    *) echo 10 ;;
  esac
}

max_len() {
  case "$1" in
    safetensors | torch_checkpoint | dicom) echo 16384 ;;
    nifti | torch_pickle | train_config) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

# ---- build --------------------------------------------------------------------------------------
t0=$(date +%s)
if ! command -v "$cxx" >/dev/null || ! ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a \
    >/dev/null 2>&1 || ! command -v ld.lld-14 >/dev/null; then
  bash scripts/install_deps.sh --fuzz
fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
# One configure and build at a time in a build folder: two runs started together would both
# regenerate it.
mkdir -p "$build"
exec 9>"$build/.fuzz.sh.lock"
flock 9
cmake -S fuzz -B "$build" "${generator[@]}" -DCMAKE_CXX_COMPILER="$cxx" >/dev/null
cmake --build "$build" -j "$jobs"
flock -u 9
echo "fuzz.sh: harnesses built in $(( $(date +%s) - t0 )) s ($build)"
[ "$mode" = build ] && exit 0

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
# Leaks inside Debian's libraries that ctsr cannot fix (fuzz/lsan.supp says which and why).
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/fuzz/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# fuzz_one NAME SECONDS CORPUS FINDINGS LOG [extra libFuzzer flags]: new inputs go to CORPUS (the
# committed seeds are read after it), crash inputs to FINDINGS/.
fuzz_one() {
  local h=$1 s=$2 corpus=$3 findings=$4 log=$5
  shift 5
  local dict=()
  [ -f "fuzz/dict/$h.dict" ] && dict=("-dict=fuzz/dict/$h.dict")
  mkdir -p "$corpus" "$findings"
  "$build/fuzz_$h" -max_total_time="$s" -max_len="$(max_len "$h")" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -timeout="$(input_timeout "$h")" -print_final_stats=1 -artifact_prefix="$findings/" "${dict[@]}" "$@" "$corpus" "fuzz/corpus/$h" \
    >"$log" 2>&1
}

# The executions and the last coverage line of a libFuzzer log (a single process's, or -fork's,
# whose status lines start "#<execs>:").
summary() {
  local log=$1 line execs
  line=$(grep -E '^#[0-9]+:?[[:space:]].*cov: ' "$log" | tail -1 || true)
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
  [ "$execs" = 0 ] && execs=$(echo "$line" | sed -nE 's/^#([0-9]+).*/\1/p')
  echo "execs ${execs:-0}; ${line:-no coverage line}"
}

if [ "$mode" = smoke ]; then
  seconds=${seconds:-15}
  logs=$build/smoke
  rm -rf "$logs"
  mkdir -p "$logs"
  t1=$(date +%s)
  for h in $harnesses; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    ( fuzz_one "$h" "$seconds" "$logs/corpus/$h" "$logs/findings/$h" "$logs/$h.log" \
        && echo ok >"$logs/$h.status" || echo "failed ($?)" >"$logs/$h.status" ) &
  done
  wait
  failed=0
  for h in $harnesses; do
    status=$(cat "$logs/$h.status")
    echo "fuzz.sh smoke: $h: $status; $(summary "$logs/$h.log")"
    if [ "$status" != ok ]; then
      failed=1
      grep -E 'FINDING|^==[0-9]+== ?ERROR|SUMMARY: |runtime error|Test unit written' "$logs/$h.log" |
        head -20 >&2 || true
      echo "fuzz.sh smoke: $h: full log $logs/$h.log; inputs $logs/findings/$h/" >&2
    fi
  done
  echo "fuzz.sh: smoke of $(echo $harnesses | wc -w) harnesses, ${seconds} s each, took $(( $(date +%s) - t1 )) s"
  exit $failed
fi

# --run NAME
case " $harnesses " in *" $name "*) ;; *) echo "fuzz.sh: no harness '$name' (harnesses: $harnesses)" >&2; exit 2 ;; esac
seconds=${seconds:-900}
log=$out/logs/$name-$(date -u +%Y%m%dT%H%M%SZ).log
mkdir -p "$out/logs"
extra=()
[ "$fork" -gt 0 ] && extra=("-fork=$fork" -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
echo "fuzz.sh: fuzzing $name for $seconds s (log $log, corpus $out/corpus/$name, findings $out/findings/$name)"
status=0
mkdir -p "$out/findings/$name"
before=$(ls "$out/findings/$name" | wc -l)
fuzz_one "$name" "$seconds" "$out/corpus/$name" "$out/findings/$name" "$log" "${extra[@]}" || status=$?
findings=$(( $(ls "$out/findings/$name" | wc -l) - before ))
echo "fuzz.sh run: $name: exit $status; $(summary "$log"); corpus $(ls "$out/corpus/$name" | wc -l) files;" \
  "findings $findings new files in $out/findings/$name"
# -fork exits 0 after the crashes it ignored: a new finding fails the run all the same.
[ "$status" = 0 ] && [ "$findings" -gt 0 ] && status=1
exit $status
