#!/usr/bin/env bash
# ctsr_infer's wall time and peak memory against the volume's size (bench/README.md, "Whole-volume
# inference"). Makes (once, kept in DIR/model) a diffusion checkpoint of configs/tiny.yaml on the
# shipped 8x first stage (models/vqae_phantom.safetensors), trained for a few steps only: the time
# and memory of inference do not depend on the weights' values. Then, for each size, one phantom
# pair (ctsr_phantom --count 1 --seed 7, itself timed) and ctsr_infer on its low-dose volume, each
# under GNU time (/usr/bin/time: wall seconds and peak resident memory). Prints two Markdown tables
# for bench/RESULTS.md: inference, and phantom generation.
#   bash bench/infer_volumes.sh --bin build/bin --work runs/inferbench \
#     [--sizes 64x64x64,128x128x128] [--device cpu] [--ext nii.gz] [-- extra ctsr_infer flags]
# A size is N (N^3) or DxHxW, any sides ctsr_phantom takes (16 to 1024; ctsr_infer runs any shape
# in tiles). A size that fails (its phantom or its inference) is marked in the table and the
# others still run; the exit status is then 1.
# Volumes are written as .nii.gz (--ext nii or npy for other formats; gzip is part of the measured
# time). The sampling steps are the checkpoint's (20, configs/tiny.yaml) unless the extra flags say
# --steps. Threads: OpenMP's defaults (OMP_NUM_THREADS to choose), with
# OMP_WAIT_POLICY=active and scripts/blas_env.sh, as scripts/main.sh runs the programs.
set -euo pipefail

die() { echo "infer_volumes: $*" >&2; exit 1; }
usage() {
  { echo usage:; sed -n '9,10p' "$0" | sed 's/^#//'; } >&2
  exit "${1:-1}"
}

command_line="bash bench/infer_volumes.sh"
for a in "$@"; do
  if [[ "$a" =~ ^[A-Za-z0-9_./,=:+-]+$ ]]; then command_line+=" $a"; else command_line+=" $(printf '%q' "$a")"; fi
done
bin="" work="" sizes="64x64x64,128x128x128" device="cpu" ext="nii.gz"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) [ $# -ge 2 ] || die "--bin needs a folder"; bin=$2; shift 2 ;;
    --work) [ $# -ge 2 ] || die "--work needs a folder"; work=$2; shift 2 ;;
    --sizes) [ $# -ge 2 ] || die "--sizes needs a list"; sizes=$2; shift 2 ;;
    --device) [ $# -ge 2 ] || die "--device needs a value"; device=$2; shift 2 ;;
    --ext) [ $# -ge 2 ] || die "--ext needs a value"; ext=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "infer_volumes: unknown argument '$1'" >&2; usage ;;
  esac
done
[ -n "$bin" ] || die "--bin BUILD_BIN_DIR is required (the folder with ctsr_phantom, ctsr_vqae, ctsr_train, ctsr_infer)"
[ -n "$work" ] || die "--work DIR is required (the checkpoint, phantoms and outputs go there)"
case "$ext" in nii|nii.gz|npy) ;; *) die "--ext is '$ext'; expected nii, nii.gz or npy" ;; esac

# Everything is checked before the first (long) step.
repo=$(cd "$(dirname "$0")/.." && pwd)
for b in ctsr_phantom ctsr_vqae ctsr_train ctsr_infer; do
  [ -x "$bin/$b" ] || die "$bin/$b is missing or not executable; build it: ninja -C BUILD $b (bench/README.md)"
done
bin=$(cd "$bin" && pwd)
gnu_time=/usr/bin/time
if ! [ -x "$gnu_time" ] || ! "$gnu_time" -f '%e %M' -o /dev/null true 2>/dev/null; then
  die "$gnu_time (GNU time) is missing; it is the Debian package 'time' (bash scripts/install_deps.sh installs it)"
fi
vqae=$repo/models/vqae_phantom.safetensors
vqae_config=$repo/configs/vqae_phantom.yaml
train_config=$repo/configs/tiny.yaml
for f in "$vqae" "$vqae_config" "$train_config"; do [ -f "$f" ] || die "$f is missing"; done

IFS=',' read -r -a size_list <<< "$sizes"
[ ${#size_list[@]} -gt 0 ] || die "--sizes is empty"
declare -A voxels_of
for s in "${size_list[@]}"; do
  if [[ "$s" =~ ^[0-9]+$ ]]; then
    voxels_of[$s]=$(( s * s * s ))
  elif [[ "$s" =~ ^([0-9]+)x([0-9]+)x([0-9]+)$ ]]; then
    voxels_of[$s]=$(( BASH_REMATCH[1] * BASH_REMATCH[2] * BASH_REMATCH[3] ))
  else
    die "size '$s' is neither N nor DxHxW"
  fi
done

mkdir -p "$work"
work=$(cd "$work" && pwd)
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-active}
# shellcheck source=/dev/null
source "$repo/scripts/blas_env.sh"

# Runs a command under GNU time; its output goes to $work/$1.log, "wall_s peak_kib" to $work/$1.time
# (after GNU time's line on how the command ended, when it failed). On failure it says so and
# returns 1: the other sizes still run.
timed() {
  local tag=$1
  shift
  if ! "$gnu_time" -f '%e %M' -o "$work/$tag.time" "$@" > "$work/$tag.log" 2>&1; then
    tail -n 5 "$work/$tag.log" >&2
    echo "infer_volumes: '$*' failed: $(head -n 1 "$work/$tag.time") (its output: $work/$tag.log)" >&2
    return 1
  fi
}
# A failed run's table cell: how it ended and its last output line, without characters that break a table.
failure() {
  local tag=$1
  local how
  how=$(head -n 1 "$work/$tag.time" | sed 's/Command exited with non-zero status /exit status /; s/Command terminated by signal /signal /')
  echo "failed ($how; $(tail -n 1 "$work/$tag.log" | cut -c 1-160 | tr '|' '/'))"
}

# The checkpoint: 4 phantom pairs of 64^3, their latent cache, 2 training steps.
model=$work/model/checkpoint.safetensors
if [ ! -f "$model" ]; then
  echo "infer_volumes: making the checkpoint in $work/model (once; about a minute)" >&2
  m=$work/model.tmp
  rm -rf "$m"
  mkdir -p "$m"
  "$bin/ctsr_phantom" --out "$m/data" --count 4 --size 64 --seed 1 > "$m/phantom.log" 2>&1 ||
    die "ctsr_phantom failed ($m/phantom.log)"
  "$bin/ctsr_vqae" cache --weights "$vqae" --config "$vqae_config" --pairs "$m/data/pairs.csv" --out "$m/cache" \
    --val-fraction 0.25 --device "$device" > "$m/cache.log" 2>&1 || die "ctsr_vqae cache failed ($m/cache.log)"
  "$bin/ctsr_train" --config "$train_config" --device "$device" --quiet \
    --set "data.cache_dir=$m/cache" --set "data.vqae_weights=$vqae" --set "output.dir=$m/train" \
    --set training.max_steps=2 --set training.checkpoint_every=2 --set training.batch_size=2 \
    --set training.gradient_accumulation_steps=1 --set validation.light_every=0 --set validation.full_every=0 \
    > "$m/train.log" 2>&1 || die "ctsr_train failed ($m/train.log)"
  checkpoints=("$m/train/checkpoints"/step_*.safetensors)
  last=${checkpoints[-1]}
  [ -f "$last" ] || die "ctsr_train wrote no checkpoint ($m/train.log)"
  mkdir -p "$work/model"
  cp "$last" "$model.tmp"
  mv "$model.tmp" "$model"
  rm -rf "$m"
fi

infer_rows=() phantom_rows=() failed=0
for s in "${size_list[@]}"; do
  n=${voxels_of[$s]}
  ph=$work/ph_$s
  rm -rf "$ph"
  echo "infer_volumes: $s: ctsr_phantom" >&2
  if ! timed "phantom_$s" "$bin/ctsr_phantom" --out "$ph" --count 1 --size "$s" --seed 7; then
    phantom_rows+=("| $s | $n | $(failure "phantom_$s") | | | |")
    infer_rows+=("| $s | $n | not run: no phantom | | | | |")
    failed=1
    continue
  fi
  read -r ph_wall ph_kib < "$work/phantom_$s.time"
  phantom_rows+=("$(awk -v s="$s" -v n="$n" -v w="$ph_wall" -v k="$ph_kib" 'BEGIN {
    printf "| %s | %d | %.1f | %.2f | %.1f | %.1f |", s, n, w, w * 1e6 / n, k / 1024, k * 1024 / n }')")
  lds=("$ph"/ld/*.nii.gz)
  [ -f "${lds[0]}" ] || die "ctsr_phantom wrote no $ph/ld/*.nii.gz ($work/phantom_$s.log)"
  out=$work/sr_$s.$ext
  rm -f "$out"
  echo "infer_volumes: $s: ctsr_infer" >&2
  if ! timed "infer_$s" "$bin/ctsr_infer" --model "$model" --vqae "$vqae" --input "${lds[0]}" --output "$out" \
       --device "$device" "${extra[@]}"; then
    infer_rows+=("| $s | $n | $(failure "infer_$s") | | | | |")
    failed=1
    continue
  fi
  [ -f "$out" ] || die "ctsr_infer wrote no $out ($work/infer_$s.log)"
  read -r wall kib < "$work/infer_$s.time"
  row=$(awk -v s="$s" -v n="$n" -v w="$wall" -v k="$kib" 'BEGIN {
    rss = k / 1024; vol = 8 * n / 1048576
    printf "| %s | %d | %.1f | %.2f | %.1f | %.1f | %.1f |", s, n, w, w * 1e6 / n, rss, vol, rss - vol }')
  infer_rows+=("$row")
  echo "infer_volumes: $row" >&2
  # The phantom pair is only the input: remove it now, so large sizes do not pile up on disk.
  rm -rf "$ph"
done

commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
echo "Date $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit, CPU ${cpu:-unknown}, nproc $(nproc)," \
  "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}."
echo "Command: \`$command_line\`"
echo
echo "ctsr_infer (configs/tiny.yaml model, models/vqae_phantom.safetensors, input and output .$ext):"
echo
echo "| size (DxHxW) | voxels | wall s | µs/voxel | peak RSS MiB | volumes MiB (in + out float32) | RSS - volumes MiB |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${infer_rows[@]}"
echo
echo "ctsr_phantom --count 1 --seed 7 (one LD/HD pair):"
echo
echo "| size (DxHxW) | voxels | wall s | µs/voxel | peak RSS MiB | RSS bytes/voxel |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${phantom_rows[@]}"
[ "$failed" = 0 ] || die "some sizes failed (the tables say which)"
