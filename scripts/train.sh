#!/usr/bin/env bash
# The README's first command: installs what is missing, builds (Release),
# trains the default character-level GPT on the bundled tiny Shakespeare (a
# progress line, the validation loss as it falls), and prints a sample.
# On the CPU it trains on 2 data-parallel ranks with ZeRO stage 3, one core
# each, 8 sequences per rank (the default global batch of 16); without
# mpirun, in one process. Where nvidia-smi sees a GPU and the build has
# CUDA, it trains in one process on that GPU instead (f32, the same run as
# on the CPU up to rounding; add --dtype bf16 for mixed precision).
# Extra arguments go to train_gpt (--help lists them).
#
#   scripts/train.sh
#   scripts/train.sh --steps 500 --sample 1000
#   SG_RANKS=1 scripts/train.sh                 # one process, no MPI
#   SG_DEVICE=cpu scripts/train.sh              # the CPU even where there is a GPU
set -euo pipefail
cd "$(dirname "$0")/.."

case "${SG_DEVICE:-}" in
  "" | cpu | cuda) ;;
  *)
    echo "scripts/train.sh: SG_DEVICE=$SG_DEVICE: use cpu or cuda" >&2
    exit 2
    ;;
esac
scripts/setup-deps.sh
mkdir -p build runs/gpt
echo "== configure and build (Release)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > build.configure.log 2>&1 || {
  cat build.configure.log
  exit 1
}
cmake --build build -j"${SG_JOBS:-2}" --target train_gpt gpt_eval gpt_sample
# Checkpoints every 500 steps (the newest 3 kept; continue an interrupted run
# with --resume runs/gpt/checkpoints), and the trained model as a
# GPT-2-style file for build/bin/gpt_eval and build/bin/gpt_sample.
outputs=(--metrics runs/gpt/metrics.jsonl --out runs/gpt --save runs/gpt/checkpoints --save-every 500
         --export runs/gpt/model.safetensors)
# A run of this script without --resume starts afresh, and train_gpt
# refuses to mix its checkpoints with an earlier run's: the earlier run's
# move to runs/gpt/checkpoints.previous (replacing the one before).
resuming=no
for argument in "$@"; do
  case "$argument" in --resume | --resume=*) resuming=yes ;; esac
done
if [ "$resuming" = no ] && compgen -G "runs/gpt/checkpoints/step-*/index.json" > /dev/null; then
  rm -rf runs/gpt/checkpoints.previous
  mv runs/gpt/checkpoints runs/gpt/checkpoints.previous
  echo "== the previous run's checkpoints moved to runs/gpt/checkpoints.previous"
fi
# The device: SG_DEVICE, or a --device among the arguments, or a GPU when
# there is one this build can use.
device=${SG_DEVICE:-}
for argument in "$@"; do
  if [ "$argument" = --device ]; then device=given; fi
done
if [ -z "$device" ]; then
  device=cpu
  if grep -q '^SG_CUDA:BOOL=ON' build/CMakeCache.txt && nvidia-smi -L 2> /dev/null | grep -q '^GPU '; then
    device=cuda
  fi
fi
if [ "$device" = cuda ]; then
  set -- --device cuda "$@"
  ranks=${SG_RANKS:-1}  # ranks sharing one GPU would stage every collective through the host
fi
ranks=${ranks:-${SG_RANKS:-2}}
if [ "$ranks" -gt 1 ] && command -v mpirun > /dev/null; then
  echo "== train on $ranks ranks with ZeRO-3 (metrics: runs/gpt/metrics.jsonl)"
  # Unbound, the ranks split the cores between them (dist/world.cpp).
  exec mpirun --oversubscribe --allow-run-as-root --bind-to none -np "$ranks" build/bin/train_gpt --zero 3 \
    --batch $((16 / ranks)) "${outputs[@]}" "$@"
fi
case "$device" in
  cpu) where="on the CPU" ;;
  cuda) where="on the GPU" ;;
  *) where="on the device given" ;;
esac
echo "== train in one process $where (metrics: runs/gpt/metrics.jsonl)"
exec build/bin/train_gpt "${outputs[@]}" "$@"
