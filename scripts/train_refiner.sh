#!/usr/bin/env bash
# Trains the refiner (configs/refiner.yaml) on a finished main job's run folder, as the shipped
# models/refiner_phantom.safetensors was made (models/README.md): every pair's low-dose volume
# through the run's last UNet checkpoint (ctsr_infer without --refiner: the latent path's
# result) into $run/guide/<id>.nii.gz, then ctsr_train_redcnn on (LD, guide) -> HD, started from
# the shipped RED-CNN, and the last checkpoint exported to $run/refiner.safetensors.
#   bash scripts/train_refiner.sh [RUN_DIR]     (default runs/demo, after bash scripts/main.sh)
# Environment: BUILD_DIR (default build-main), CTSR_DEVICE (default auto). Resumes: guides already
# written are kept and the training continues from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:-runs/demo}
build=${BUILD_DIR:-build-main}
device=${CTSR_DEVICE:-auto}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-active}
source scripts/blas_env.sh
for f in "$run/data/pairs.csv" "$build/CMakeCache.txt"; do
  [ -e "$f" ] || { echo "train_refiner: $f does not exist; run bash scripts/main.sh first" >&2; exit 1; }
done
cmake --build "$build" --target ctsr_infer ctsr_train_redcnn
checkpoint=$(ls "$run/train/checkpoints"/step_*.safetensors | tail -n 1)
vqae=$(sed -n 's/^ *vqae_weights: *//p' "$run/train/config.yaml" | head -n 1)
mkdir -p "$run/guide"
tail -n +2 "$run/data/pairs.csv" | cut -d, -f1 | while read -r id; do
  [ -f "$run/guide/$id.nii.gz" ] && continue
  "$build/bin/ctsr_infer" --model "$checkpoint" --vqae "$vqae" --input "$run/data/ld/$id.nii.gz" \
    --output "$run/guide/$id.nii.gz" --device "$device"
done
"$build/bin/ctsr_train_redcnn" --config configs/refiner.yaml --set "data.pairs=$run/data/pairs.csv" \
  --set "data.guide_dir=$run/guide" --set "output.dir=$run/refiner" --resume auto --device "$device"
last=$(ls "$run/refiner/checkpoints"/step_*.safetensors | tail -n 1)
"$build/bin/ctsr_train_redcnn" --export "$last" "$run/refiner.safetensors"
echo "train_refiner: $run/refiner.safetensors (from $last); use it with CTSR_REFINER=$run/refiner.safetensors"
