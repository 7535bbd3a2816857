#!/usr/bin/env bash
# The main job on its embedded default, from a fresh machine: installs what ctsr needs, builds the
# programs, makes synthetic CT pairs (ctsr_phantom), encodes them into the latent cache with the
# small 4x VQ-AE the repository ships (models/vqae_phantom_4x.safetensors, trained on other
# phantoms: models/README.md), trains the UNet with configs/tiny_4x.yaml (ctsr_train),
# super-resolves one held-out volume (ctsr_infer) and scores every held-out pair (ctsr_evaluate)
# beside the classical baselines and the shipped RED-CNN (models/redcnn_phantom.safetensors). The
# super-resolved volume is the latent path's decoded result refined together with the low-dose
# input by the shipped refiner (models/refiner_phantom.safetensors, configs/refiner.yaml): detail
# the VQ-AE's codes cannot hold comes from the input itself. Every step resumes: run it again and
# finished work is skipped.
#   bash scripts/main.sh
# Environment: CTSR_RUN_DIR (default runs/demo), CTSR_DEVICE (default auto: a GPU when present),
# BUILD_DIR (default build-main), CTSR_STEPS (training steps, default the config's), CTSR_PAIRS
# (synthetic pairs, default 48; a fifth of them held out), JOBS,
# CTSR_VQAE and CTSR_VQAE_CONFIG (another first stage and its settings file, for its patch size),
# CTSR_TRAIN_CONFIG (the UNet's configuration; configs/tiny.yaml for the 8x first stage),
# CTSR_REDCNN (the learned baseline's weights; empty: no RED-CNN row), CTSR_REFINER (the refiner's
# weights; empty: SR is the latent path's decoded result alone), CTSR_FORMAT (nifti, the default, or
# dicom: the synthetic pairs are written as DICOM series folders, ctsr_phantom --format dicom, and
# the super-resolved volume as a series folder $run/sr_<id>/; a run folder keeps the format it
# was made with).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
run=${CTSR_RUN_DIR:-runs/demo}
build=${BUILD_DIR:-build-main}
device=${CTSR_DEVICE:-auto}
jobs=${JOBS:-$(nproc)}
pairs=${CTSR_PAIRS:-48}
if ! [[ "$pairs" =~ ^[0-9]+$ ]] || [ "$pairs" -lt 5 ]; then
  echo "main: CTSR_PAIRS is '$pairs'; expected a whole number of at least 5 (a fifth is held out)" >&2
  exit 1
fi
format=${CTSR_FORMAT:-nifti}
if [ "$format" != nifti ] && [ "$format" != dicom ]; then
  echo "main: CTSR_FORMAT is '$format'; expected nifti or dicom" >&2
  exit 1
fi
vqae=${CTSR_VQAE:-models/vqae_phantom_4x.safetensors}
vqae_config=${CTSR_VQAE_CONFIG:-configs/vqae_phantom_4x.yaml}
train_config=${CTSR_TRAIN_CONFIG:-configs/tiny_4x.yaml}
redcnn=${CTSR_REDCNN-models/redcnn_phantom.safetensors}
refiner=${CTSR_REFINER-models/refiner_phantom.safetensors}
refine_args=()
[ -n "$refiner" ] && refine_args=(--refiner "$refiner")
# OpenBLAS runs on OpenMP's threads (CMakeLists.txt); threads that keep spinning between the many
# short parallel regions of a step make CPU training about 10% faster than the default on two
# cores. The programs here run one at a time, so the spinning takes no core from anything else.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-active}
source scripts/blas_env.sh

bash scripts/install_deps.sh

# The CUDA target only where a GPU can run it; the CPU reference path otherwise.
cmake_args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DCTSR_CUDA_ON_CPU=OFF -DCTSR_BUILD_TESTS=OFF -DCTSR_BUILD_BENCH=OFF)
nvcc=${CUDACXX:-$(command -v nvcc || true)}
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
if [ -n "$nvcc" ] && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d '.')
  cmake_args+=(-DCTSR_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" "-DCTSR_CUDA_ARCHS=${CTSR_CUDA_ARCHS:-$arch}")
else
  cmake_args+=(-DCTSR_CUDA=OFF)
fi
cmake -S . -B "$build" "${cmake_args[@]}" >/dev/null
cmake --build "$build" -j "$jobs" --target ctsr_phantom ctsr_vqae ctsr_train ctsr_infer ctsr_evaluate ctsr_metrics
bin=$build/bin
echo "main: built in $(( $(date +%s) - start )) s"

mkdir -p "$run"
# A run folder made with another first stage (an older main job's VQ-AE, or a file replaced under
# the same name) would resume as finished: say so rather than score that model against this VQ-AE.
# The folder records the checksum of the weights its cache is encoded with, before encoding starts
# (an interrupted cache then resumes).
if [ ! -f "$vqae" ]; then
  echo "main: the VQ-AE weights $vqae (CTSR_VQAE) do not exist; expected a .safetensors or .ckpt file" >&2
  exit 1
fi
vqae_sum=$(sha256sum "$vqae" | cut -d ' ' -f 1)
[ -e "$run/cache" ] || [ -e "$run/train" ] || echo "$vqae_sum" > "$run/vqae.sha256"
made_with=$(cat "$run/vqae.sha256" 2>/dev/null || echo "an unrecorded VQ-AE")
if [ "$made_with" != "$vqae_sum" ]; then
  echo "main: $run was made with $made_with, not $vqae (sha256 $vqae_sum);" \
       "move it away or set CTSR_RUN_DIR to a new folder" >&2
  exit 1
fi
# The format of a pairs.csv's volumes: dicom when its first pair's LD is a series folder (ends in /).
pairs_format() { awk -F, 'NR == 2 { print ($2 ~ /\/$/ ? "dicom" : "nifti"); exit }' "$1"; }
if [ -f "$run/data/pairs.csv" ]; then
  have=$(( $(wc -l < "$run/data/pairs.csv") - 1 ))
  if [ "$have" != "$pairs" ]; then
    echo "main: $run/data/pairs.csv lists $have pairs, not CTSR_PAIRS=$pairs;" \
         "move $run away or set CTSR_RUN_DIR to a new folder" >&2
    exit 1
  fi
  have_format=$(pairs_format "$run/data/pairs.csv")
  if [ "$have_format" != "$format" ]; then
    echo "main: $run/data holds $have_format pairs, not CTSR_FORMAT=$format;" \
         "move $run away or set CTSR_RUN_DIR to a new folder" >&2
    exit 1
  fi
fi
[ -f "$run/data/pairs.csv" ] ||
  "$bin/ctsr_phantom" --out "$run/data" --count "$pairs" --size 64 --seed 1 --format "$format"
"$bin/ctsr_vqae" cache --weights "$vqae" --config "$vqae_config" --pairs "$run/data/pairs.csv" --out "$run/cache" \
  --val-fraction 0.2 --device "$device"

overrides=(--set "data.cache_dir=$run/cache" --set "data.vqae_weights=$vqae"
           --set "output.dir=$run/train")
[ -n "${CTSR_STEPS:-}" ] && overrides+=(--set "training.max_steps=$CTSR_STEPS")
"$bin/ctsr_train" --config "$train_config" "${overrides[@]}" --resume auto --device "$device"

# One held-out volume through ctsr_infer, then every held-out pair scored against full dose: the
# input, the classical baselines (Gaussian, TV, median; chosen on training pairs), the VQ-AE round
# trips and the super-resolved result; the run ends with their table (ctsr_evaluate), and pictures
# of the first two pairs go to $run/panels.
id=$(ls "$run/cache/val" | head -n 1 | sed 's/\.safetensors$//')
checkpoint=$(ls "$run/train/checkpoints"/step_*.safetensors | tail -n 1)
# A series folder in, a series folder out (the input's patient and study) for CTSR_FORMAT=dicom.
ld_input=$run/data/ld/$id.nii.gz sr=$run/sr_$id.nii.gz
[ "$format" = dicom ] && ld_input=$run/data/ld/$id/ sr=$run/sr_$id/
"$bin/ctsr_infer" --model "$checkpoint" --vqae "$vqae" --input "$ld_input" \
  --output "$sr" --device "$device" "${refine_args[@]}"
echo "main: outputs in $run/train (checkpoints, metrics.jsonl, tensorboard/, images/), $sr;" \
  "$(( $(date +%s) - start )) s so far"
evaluate_args=(--model "$checkpoint" --device "$device" --json "$run/evaluation.json" --panels "$run/panels"
               "${refine_args[@]}")
[ -n "$redcnn" ] && evaluate_args+=(--redcnn "$redcnn")
"$bin/ctsr_evaluate" "${evaluate_args[@]}"

# The generalisation set: ten pairs of a phantom seed that neither stage was trained on (4242),
# scored with the same checkpoint, the baselines' parameters chosen on the main job's training
# pairs (--select-cache); its table follows the held-out pairs' one.
gen=$run/generalisation
if [ -f "$gen/data/pairs.csv" ] && [ "$(pairs_format "$gen/data/pairs.csv")" != "$format" ]; then
  echo "main: $gen/data holds $(pairs_format "$gen/data/pairs.csv") pairs, not CTSR_FORMAT=$format;" \
       "move $run away or set CTSR_RUN_DIR to a new folder" >&2
  exit 1
fi
if [ ! -f "$gen/data/pairs.csv" ]; then
  rm -rf "$gen/data.tmp"
  "$bin/ctsr_phantom" --out "$gen/data.tmp" --count 10 --size 64 --seed 4242 --format "$format"
  # Every pair held out: a split column that says val.
  awk -F, 'NR == 1 { print $0 ",split"; next } { print $0 ",val" }' "$gen/data.tmp/pairs.csv" > "$gen/data.tmp/pairs.split"
  mv "$gen/data.tmp/pairs.split" "$gen/data.tmp/pairs.csv"
  rm -rf "$gen/data" && mv "$gen/data.tmp" "$gen/data"
fi
"$bin/ctsr_vqae" cache --weights "$vqae" --config "$vqae_config" --pairs "$gen/data/pairs.csv" --out "$gen/cache" \
  --val-fraction 0 --device "$device"
echo "main: the generalisation set (phantom seed 4242, never trained on):"
generalisation_args=(--model "$checkpoint" --cache "$gen/cache" --select-cache "$run/cache" --device "$device"
                     --json "$gen/evaluation.json" "${refine_args[@]}")
[ -n "$redcnn" ] && generalisation_args+=(--redcnn "$redcnn")
"$bin/ctsr_evaluate" "${generalisation_args[@]}"
echo "main: done in $(( $(date +%s) - start )) s"
