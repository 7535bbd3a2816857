#!/usr/bin/env bash
# One command that checks a GPU bundle (scripts/gpu_bundle.sh) on a GPU machine, in at most about
# 8 minutes on one H100; README, "Running the GPU check".
#   bash scripts/gpu_check.sh [--device cuda|cuda_on_cpu] BUNDLE OUTDIR
# Steps, most valuable first, each under its own time cap, so that a short window still returns the
# most important results:
#   a environment   GPU, driver, and where cudart / cuBLAS / cuDNN / NCCL were found (versions)
#   b parity        the test suite's GPU instances (*/gpu), XML in OUTDIR/parity.xml
#   c sanitizer     compute-sanitizer memcheck, racecheck and synccheck on one GPU test per kernel
#                   family (kernels/*.cu)
#   d benchmark     ctsr_bench at the production shapes beside PyTorch's eager step
#                   (tools/pytorch/bench_unet_step.py, where torch imports), as ratios
#   e main job      a short training, inference and evaluation of the main job (scripts/main.sh),
#                   timed, with its scores
#   f memory        the training step's peak device memory against the benchmark's accounting
# --device cuda_on_cpu rehearses the same sequence without a GPU (CI): parity on the CUDA-on-CPU
# executor (*/cuda_on_cpu, with CTSR_EXECUTOR_CHECKS=full and CTSR_EXECUTOR_LAUNCH_LOG), the host
# benchmarks at tiny sizes and PyTorch's CPU step, the main job on the CPU; no sanitizer.
# Writes OUTDIR/summary.md and OUTDIR/summary.json (and each step's log); exits 1 when a step
# failed. A step that cannot run (no GPU, no compute-sanitizer, no torch) is "skipped", saying why.
# The NVIDIA libraries are looked up in LD_LIBRARY_PATH, then the CUDA toolkit's lib64 (CUDA_HOME,
# else /usr/local/cuda), then the nvidia/*/lib folders of PyTorch's wheels in python3's
# site-packages; LD_LIBRARY_PATH is set to that order for every step.
# Environment: CTSR_CHECK_PARITY_FILTER (a gtest filter replacing the parity step's), CTSR_CHECK_STEPS
# (training steps of step e; default 20 on a GPU, 2 on the CPU), CTSR_CHECK_CAP_SCALE (multiplies
# every cap, e.g. 3 on a slow machine), CTSR_PYTHON (the python with torch, default python3; its
# site-packages are searched for the NVIDIA wheels).
set -uo pipefail

device=cuda
if [ "${1:-}" = "--device" ]; then
  device=${2:-}
  shift 2 || true
fi
if [ "$device" != cuda ] && [ "$device" != cuda_on_cpu ]; then
  echo "gpu_check: --device '$device': expected cuda or cuda_on_cpu" >&2
  exit 2
fi
if [ $# -ne 2 ]; then
  echo "usage: bash scripts/gpu_check.sh [--device cuda|cuda_on_cpu] BUNDLE OUTDIR" >&2
  exit 2
fi
packed=$(cd "$1" 2>/dev/null && pwd) || { echo "gpu_check: bundle folder '$1' does not exist" >&2; exit 2; }
[ -f "$packed/bundle.tar.xz" ] ||
  { echo "gpu_check: $packed has no bundle.tar.xz: expected a folder made by scripts/gpu_bundle.sh" >&2; exit 2; }
mkdir -p "$2" && out=$(cd "$2" && pwd) || { echo "gpu_check: cannot create OUTDIR '$2'" >&2; exit 2; }
# Unpacked into OUTDIR/bundle (the bundle's own folder may be read-only).
bundle=$out/bundle
rm -rf "$bundle" && mkdir -p "$bundle" && tar -C "$bundle" -xJf "$packed/bundle.tar.xz" ||
  { echo "gpu_check: cannot unpack $packed/bundle.tar.xz into $bundle (needs tar and xz)" >&2; exit 2; }
bin=$bundle/bin
scale=${CTSR_CHECK_CAP_SCALE:-1}
python=${CTSR_PYTHON:-python3}
started=$(date +%s)
export CTSR_TEST_DATA_DIR=$bundle/tests/data CTSR_TOOLS_BIN_DIR=$bin
# shellcheck source=scripts/blas_env.sh
source "$bundle/scripts/blas_env.sh"
: > "$out/steps.tsv"

# ---- the NVIDIA libraries: LD_LIBRARY_PATH, the toolkit, PyTorch's wheels -----------------------
toolkit=${CUDA_HOME:-${CUDA_PATH:-/usr/local/cuda}}
search=()
IFS=: read -r -a from_env <<< "${LD_LIBRARY_PATH:-}"
for d in "${from_env[@]}"; do [ -n "$d" ] && search+=("$d"); done
for d in "$toolkit/lib64" "$toolkit/lib"; do [ -d "$d" ] && search+=("$d"); done
if command -v "$python" >/dev/null; then
  while read -r d; do [ -n "$d" ] && search+=("$d"); done < <("$python" - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
try:
    roots += site.getsitepackages() + [site.getusersitepackages()]
except AttributeError:
    pass
seen = set()
for r in roots:
    for d in sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib"))):
        if d not in seen:
            seen.add(d)
            print(d)
EOF
)
fi
LD_LIBRARY_PATH=$(IFS=:; echo "${search[*]}")
export LD_LIBRARY_PATH

cap() { echo $(( $1 * scale )); }
# record NAME STATUS SECONDS NOTE: one line of steps.tsv (STATUS pass, fail, skipped or timeout).
record() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(echo "$4" | tr '\t\n' '  ')" >> "$out/steps.tsv"
  echo "gpu_check: $1: $2 ($3 s) $4"
}
# record_status NAME RC T0 NOTE_TIMEOUT NOTE_FAIL NOTE_PASS: records a step from its command's status
# (124 or 137: it ran past its cap).
record_status() {
  if [ "$2" -eq 124 ] || [ "$2" -eq 137 ]; then
    record "$1" timeout $((SECONDS - $3)) "$4"
  elif [ "$2" -ne 0 ]; then
    record "$1" fail $((SECONDS - $3)) "$5"
  else
    record "$1" pass $((SECONDS - $3)) "$6"
  fi
}
# run_capped SECONDS LOG COMMAND...: the command's status, 124 when it ran past the cap.
run_capped() {
  local limit=$1 log=$2
  shift 2
  timeout --kill-after=10 "$limit" "$@" >> "$log" 2>&1
}
have_gpu() { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }
gtest_counts() {  # passed failed skipped, from a gtest log
  local log=$1
  echo "$(grep -o '^\[  PASSED  \] [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$' || echo 0)" \
       "$(grep -o '^\[  FAILED  \] [0-9]* test' "$log" | tail -n 1 | grep -o '[0-9]*' || echo 0)" \
       "$(grep -o '^\[  SKIPPED \] [0-9]* test' "$log" | tail -n 1 | grep -o '[0-9]*' || echo 0)"
}

# ---- a: environment ---------------------------------------------------------------------------
step_environment() {
  local t0=$SECONDS log=$out/environment.txt status=pass note
  {
    echo "== bundle"; cat "$bundle/BUNDLE.txt"
    echo "== host"; uname -srm; (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"); ldd --version 2>&1 | head -n 1
    echo "== nvidia-smi"
    if command -v nvidia-smi >/dev/null; then
      nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1
      nvidia-smi 2>&1 | grep -m 1 'CUDA Version' || true
    else
      echo "nvidia-smi not found"
    fi
    echo "== library search order (LD_LIBRARY_PATH)"; tr ':' '\n' <<< "$LD_LIBRARY_PATH"
    echo "== NVIDIA libraries of ctsr_tests as loaded"
    ldd "$bin/ctsr_tests" | grep -E 'libcuda\.|libcudart|libcublas|libcudnn|libnccl' | sed 's/ (0x.*//'
    echo "== versions (from the resolved file names)"
    ldd "$bin/ctsr_tests" | awk '/=> \// {print $3}' | grep -E 'libcuda\.|libcudart|libcublas|libcudnn|libnccl' |
      while read -r f; do echo "$(basename "$f") -> $(basename "$(readlink -f "$f")")"; done
    echo "== $python / torch"
    "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available())' 2>&1 | tail -n 1
  } > "$log" 2>&1
  local missing
  missing=$(ldd "$bin/ctsr_tests" "$bin/ctsr_bench" | grep 'not found' | awk '{print $1}' | sort -u | tr '\n' ' ')
  note="$(grep -m 1 -A 1 '^name' "$log" | tail -n 1 || true)"
  if [ -n "$missing" ]; then
    status=fail
    note="not found: $missing(searched: $LD_LIBRARY_PATH; BUNDLE.txt lists what the machine must provide)"
  elif [ "$device" = cuda ] && ! have_gpu; then
    note="no GPU visible (nvidia-smi -L failed): the GPU steps skip"
  fi
  [ -n "$note" ] || note="see environment.txt"
  record environment "$status" $((SECONDS - t0)) "$note"
}

# ---- b: parity ---------------------------------------------------------------------------------
step_parity() {
  local t0=$SECONDS log=$out/parity.log filter rc
  : > "$log"
  if [ "$device" = cuda ]; then
    have_gpu || { record parity skipped 0 "no GPU (nvidia-smi -L failed)"; return; }
    filter=${CTSR_CHECK_PARITY_FILTER:-'*/gpu'}
    run_capped "$(cap 240)" "$log" "$bin/ctsr_tests" "--gtest_filter=$filter" "--gtest_output=xml:$out/parity.xml"
    rc=$?
  else
    filter=${CTSR_CHECK_PARITY_FILTER:-'*/cuda_on_cpu'}
    CTSR_EXECUTOR_CHECKS=full CTSR_EXECUTOR_LAUNCH_LOG=$out/kernel_launches.tsv \
      run_capped "$(cap 300)" "$log" "$bin/ctsr_tests" "--gtest_filter=$filter" "--gtest_output=xml:$out/parity.xml"
    rc=$?
  fi
  read -r passed failed skipped < <(gtest_counts "$log")
  local note="filter $filter: $passed passed, $failed failed, $skipped skipped"
  record_status parity $rc "$t0" "ran past its cap; $note" \
    "$note; $(grep '^\[  FAILED  \] [A-Za-z]' "$log" | head -n 5 | sed 's/\[  FAILED  \] //' | tr '\n' ' ')" "$note"
}

# ---- c: compute-sanitizer ------------------------------------------------------------------------
# One GPU test per kernel family (kernels/<family>.cu, tested in tests/test_<family>.cpp): the first
# test of the family's parity suite.
sanitizer_suites="SiluParity AttentionParity BinaryParity CodebookCuda Conv3dParity ConvTranspose3dParity CopyParity
  DropoutParity GroupNormParity LinearParity MseLossParity MetricsParity OptimizerParity RandomFillParity ReduceParity
  ResampleParity TimestepEmbeddingParity"
sanitizer_tests() {
  "$bin/ctsr_tests" --gtest_list_tests --gtest_filter='*/gpu' 2>/dev/null | awk -v suites="$sanitizer_suites" '
    BEGIN { n = split(suites, s, /[ \n]+/); for (i = 1; i <= n; ++i) wanted["Paths/" s[i] "."] = 1 }
    /^[^ ]/ { suite = $1; next }
    /^  / && (suite in wanted) && !(suite in picked) { picked[suite] = 1; print suite $1 }' | paste -sd: -
}
step_sanitizer() {
  local t0=$SECONDS sanitizer="" tool rc failures="" ran=""
  if [ "$device" != cuda ]; then
    record sanitizer skipped 0 "compute-sanitizer needs a GPU; the executor's own checks (CTSR_EXECUTOR_CHECKS=full) ran in parity"
    return
  fi
  have_gpu || { record sanitizer skipped 0 "no GPU"; return; }
  for s in "$(command -v compute-sanitizer || true)" "$toolkit/bin/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer; do
    [ -n "$s" ] && [ -x "$s" ] && { sanitizer=$s; break; }
  done
  [ -n "$sanitizer" ] || { record sanitizer skipped 0 "compute-sanitizer not found (PATH, $toolkit/bin)"; return; }
  local tests
  tests=$(sanitizer_tests)
  [ -n "$tests" ] || { record sanitizer fail $((SECONDS - t0)) "no */gpu test found for any kernel family"; return; }
  echo "$tests" | tr ':' '\n' > "$out/sanitizer_tests.txt"
  for tool in memcheck racecheck synccheck; do
    run_capped "$(cap 60)" "$out/sanitizer_$tool.log" "$sanitizer" --tool "$tool" --error-exitcode 3 \
      "$bin/ctsr_tests" "--gtest_filter=$tests"
    rc=$?
    ran+="$tool "
    case $rc in
      0) ;;
      124|137) failures+="$tool timed out; " ;;
      *) failures+="$tool exit $rc ($(grep -m 1 -E 'ERROR SUMMARY|FAILED|Error' "$out/sanitizer_$tool.log" | head -c 200)); " ;;
    esac
  done
  local count
  count=$(wc -l < "$out/sanitizer_tests.txt")
  if [ -n "$failures" ]; then
    record sanitizer fail $((SECONDS - t0)) "$count tests (sanitizer_tests.txt): $failures"
  else
    record sanitizer pass $((SECONDS - t0)) "$ran on $count tests (sanitizer_tests.txt), no errors"
  fi
}

# ---- d: benchmarks -------------------------------------------------------------------------------
step_benchmark() {
  local t0=$SECONDS rc note filter min_time torch_args
  if [ "$device" = cuda ]; then
    have_gpu || { record benchmark skipped 0 "no GPU"; return; }
    filter='UNetTrainStep/cuda|(conv3d|attention|group_norm)_(forward|backward)[a-z0-9_]*_cuda(_custom|_cudnn)?/'
    min_time=0.2
    torch_args=(--device cuda --steps 5)
  else
    filter='UNetTrainStep/(cpu|cuda_on_cpu)|(conv3d|attention|group_norm)_(forward|backward)[a-z0-9_]*_(cpu|cuda_on_cpu)/'
    min_time=0.001
    torch_args=(--device cpu --tiny --steps 2 --warmup 1)
  fi
  run_capped "$(cap 150)" "$out/bench.log" "$bin/ctsr_bench" "--benchmark_filter=$filter" \
    "--benchmark_min_time=$min_time" --benchmark_out="$out/bench.json" --benchmark_out_format=json
  rc=$?
  if [ $rc -ne 0 ]; then
    record_status benchmark $rc "$t0" "ctsr_bench ran past its cap (bench.log)" \
      "ctsr_bench exit $rc: $(tail -n 1 "$out/bench.log")" ""
    return
  fi
  note="ctsr_bench ($filter)"
  if "$python" -c 'import torch' >/dev/null 2>&1; then
    if run_capped "$(cap 90)" "$out/pytorch.log" "$python" "$bundle/tools/pytorch/bench_unet_step.py" "${torch_args[@]}"; then
      tail -n 1 "$out/pytorch.log" > "$out/pytorch.json"
      note+="; PyTorch eager step beside it"
    else
      note+="; PyTorch step failed or timed out (pytorch.log)"
    fi
    # Mixed precision beside UNetTrainStep/*_bf16: torch.autocast(bfloat16), on a GPU only.
    if [ "$device" != cuda ]; then
      :
    elif run_capped "$(cap 90)" "$out/pytorch_bf16.log" "$python" "$bundle/tools/pytorch/bench_unet_step.py" \
      "${torch_args[@]}" --dtype bf16; then
      tail -n 1 "$out/pytorch_bf16.log" > "$out/pytorch_bf16.json"
      note+=", and in bf16 (autocast)"
    else
      note+="; PyTorch bf16 step failed or timed out (pytorch_bf16.log)"
    fi
  else
    note+="; PyTorch skipped: $python cannot import torch"
  fi
  record benchmark pass $((SECONDS - t0)) "$note"
}

# ---- e: the main job, short ------------------------------------------------------------------------
step_main_job() {
  local t0=$SECONDS w=$out/main_job log=$out/main_job.log dev steps rc=0 sampling
  if [ "$device" = cuda ]; then
    have_gpu || { record main_job skipped 0 "no GPU"; return; }
    dev=cuda steps=${CTSR_CHECK_STEPS:-20} sampling=()
  else
    dev=cpu steps=${CTSR_CHECK_STEPS:-2} sampling=(--steps 4)  # the config's 20 DDIM steps take 40 s a volume here
  fi
  rm -rf "$w" && mkdir -p "$w" && : > "$log"
  local vqae=$bundle/models/vqae_phantom_4x.safetensors refiner=$bundle/models/refiner_phantom.safetensors
  # 150 s on a GPU; 300 on the CPU, where encoding, one inference and one evaluation take ~2 min.
  local deadline=$((SECONDS + $(cap "$([ "$dev" = cpu ] && echo 300 || echo 150)")))
  left() { local l=$((deadline - SECONDS)); [ $l -gt 0 ] && echo $l || echo 1; }
  run_capped "$(left)" "$log" "$bin/ctsr_phantom" --out "$w/data" --count 5 --size 64 --seed 1 &&
  run_capped "$(left)" "$log" "$bin/ctsr_vqae" cache --weights "$vqae" --config "$bundle/configs/vqae_phantom_4x.yaml" \
    --pairs "$w/data/pairs.csv" --out "$w/cache" --val-fraction 0.2 --device "$dev" &&
  { local t_train=$SECONDS
    run_capped "$(left)" "$log" "$bin/ctsr_train" --config "$bundle/configs/tiny_4x.yaml" --set "data.cache_dir=$w/cache" \
      --set "data.vqae_weights=$vqae" --set "output.dir=$w/train" --set "training.max_steps=$steps" --device "$dev"
    rc=$?; echo "train_seconds $((SECONDS - t_train))" > "$w/timing.txt"; [ $rc -eq 0 ]; } &&
  { local id checkpoint t_infer=$SECONDS
    id=$(ls "$w/cache/val" | head -n 1 | sed 's/\.safetensors$//')
    checkpoint=$(ls "$w/train/checkpoints"/step_*.safetensors | tail -n 1)
    run_capped "$(left)" "$log" "$bin/ctsr_infer" --model "$checkpoint" --vqae "$vqae" --input "$w/data/ld/$id.nii.gz" \
      --output "$w/sr_$id.nii.gz" --device "$dev" --refiner "$refiner" "${sampling[@]}" &&
    echo "infer_seconds $((SECONDS - t_infer))" >> "$w/timing.txt" &&
    run_capped "$(left)" "$log" "$bin/ctsr_evaluate" --model "$checkpoint" --device "$dev" --json "$w/evaluation.json" \
      --refiner "$refiner" --redcnn "$bundle/models/redcnn_phantom.safetensors" "${sampling[@]}"; }
  rc=$?
  local timing
  timing=$(tr '\n' ' ' < "$w/timing.txt" 2>/dev/null)
  record_status main_job $rc "$t0" "ran past its cap (main_job.log); $timing" \
    "exit $rc: $(grep -m 1 -i 'error\|expected' "$log" | head -c 300)" \
    "$steps training steps on $dev; $timing; scores in main_job/evaluation.json"
}

# ---- f: memory ---------------------------------------------------------------------------------------
step_memory() {
  if [ ! -s "$out/bench.json" ]; then
    record memory skipped 0 "no benchmark results (step d did not run)"; return
  fi
  record memory pass 0 "UNetTrainStep's peak_alloc_MiB against param/grad/adam MiB and PyTorch's peak: see summary.md"
}

step_environment
step_parity
step_sanitizer
step_benchmark
step_main_job
step_memory

# ---- summary ------------------------------------------------------------------------------------------
total=$(( $(date +%s) - started ))
if command -v python3 >/dev/null; then
  python3 - "$out" "$device" "$total" <<'EOF'
import json, os, sys
out, device, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
steps = []
for line in open(os.path.join(out, "steps.tsv")):
    name, status, seconds, note = (line.rstrip("\n").split("\t") + ["", "", "", ""])[:4]
    steps.append({"step": name, "status": status, "seconds": int(seconds or 0), "note": note})

def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

bench, torch_step, evaluation = load("bench.json"), load("pytorch.json"), load("main_job/evaluation.json")
torch_bf16 = load("pytorch_bf16.json")


def baseline(name):  # the PyTorch step in the same precision as a UNetTrainStep case ("UNetTrainStep/cpu_bf16/real_time")
    return torch_bf16 if "_bf16" in name else torch_step
rows = []
for b in (bench or {}).get("benchmarks", []):
    if b.get("run_type") == "aggregate" or b.get("error_occurred"):
        continue
    rows.append({k: b[k] for k in ("name", "real_time", "time_unit") if k in b} |
                {k: v for k, v in b.items() if k in ("samples_per_s", "peak_alloc_MiB", "param_MiB", "grad_MiB",
                                                      "adam_MiB", "TFLOP/s", "MFU", "vs_cudnn", "GB/s",
                                                      "MB_per_call", "bf16")})
unet = [r for r in rows if r["name"].startswith("UNetTrainStep/")]
ratios = []
for r in unet:
    base = baseline(r["name"])
    if base and "samples_per_s" in r and base.get("samples_per_s"):
        ratios.append({"ctsr": r["name"], "ctsr_samples_per_s": r["samples_per_s"],
                       "pytorch": base.get("framework", "") + " " + base.get("dtype", "fp32"),
                       "pytorch_samples_per_s": base["samples_per_s"],
                       "speed_vs_pytorch": r["samples_per_s"] / base["samples_per_s"]})
memory = []
for r in unet:
    if "peak_alloc_MiB" in r:
        state = sum(r.get(k, 0) for k in ("param_MiB", "grad_MiB", "adam_MiB"))
        memory.append({"benchmark": r["name"], "peak_alloc_MiB": r["peak_alloc_MiB"], "training_state_MiB": state,
                       "beyond_state_MiB": r["peak_alloc_MiB"] - state,
                       "pytorch_peak_MiB": (baseline(r["name"]) or {}).get("peak_allocated_MiB")})
failed = [s for s in steps if s["status"] in ("fail", "timeout")]
summary = {"device": device, "seconds": total, "ok": not failed, "steps": steps, "benchmarks": rows,
           "unet_vs_pytorch": ratios, "memory": memory, "pytorch": torch_step, "pytorch_bf16": torch_bf16,
           "main_job_scores": evaluation}
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)

skipped = [s["step"] for s in steps if s["status"] == "skipped"]
md = [f"# GPU check ({device})", "",
      f"{'PASS' if not failed else 'FAIL'} in {total} s"
      + (f", {len(skipped)} of {len(steps)} steps skipped ({', '.join(skipped)})" if skipped else "")
      + ". Logs beside this file.", "",
      "| step | status | seconds | note |", "|---|---|---:|---|"]
md += [f"| {s['step']} | {s['status']} | {s['seconds']} | {s['note'].replace('|', '/')} |" for s in steps]
if ratios:
    md += ["", "| ctsr | samples/s | PyTorch | PyTorch samples/s | ctsr / PyTorch |", "|---|---:|---|---:|---:|"]
    md += [f"| {r['ctsr']} | {r['ctsr_samples_per_s']:.3g} | {r['pytorch']} | {r['pytorch_samples_per_s']:.3g} | "
           f"{r['speed_vs_pytorch']:.2f} |" for r in ratios]
if memory:
    md += ["", "| step | peak allocated MiB | params+grads+AdamW MiB | beyond that | PyTorch peak MiB |",
           "|---|---:|---:|---:|---:|"]
    md += [f"| {m['benchmark']} | {m['peak_alloc_MiB']:.1f} | {m['training_state_MiB']:.1f} | {m['beyond_state_MiB']:.1f} | "
           f"{m['pytorch_peak_MiB'] if m['pytorch_peak_MiB'] is not None else 'n/a'} |" for m in memory]
elif unet:
    md += ["", "Memory: the UNet benchmark ran but reported no peak_alloc_MiB counter."]
if rows:
    md += ["", "| benchmark | time | counters |", "|---|---:|---|"]
    for r in rows:
        counters = ", ".join(f"{k} {v:.4g}" for k, v in r.items() if k not in ("name", "real_time", "time_unit"))
        md += [f"| {r['name']} | {r.get('real_time', 0):.4g} {r.get('time_unit', '')} | {counters} |"]
if evaluation is not None:
    md += ["", "Main job scores (main_job/evaluation.json):", "", "```", json.dumps(evaluation, indent=1)[:3000], "```"]
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write("\n".join(md) + "\n")
EOF
else
  { echo "# GPU check ($device)"; echo; echo "python3 not found: steps only"; echo; cat "$out/steps.tsv"; } > "$out/summary.md"
  echo '{"note": "python3 not found; see steps.tsv"}' > "$out/summary.json"
fi
echo "gpu_check: $out/summary.md ($total s)"
if cut -f 2 "$out/steps.tsv" | grep -qE '^(fail|timeout)$'; then exit 1; fi
exit 0
