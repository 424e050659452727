#!/usr/bin/env bash
# The README's first command: installs what is missing, builds (Release),
# trains the default character-level GPT on the bundled tiny Shakespeare on
# the CPU (a progress line, the validation loss as it falls), and prints a
# sample. It trains on 2 data-parallel ranks with ZeRO stage 3, one core
# each, 8 sequences per rank (the default global batch of 16); without
# mpirun, in one process. Extra arguments go to train_gpt (--help lists them).
#
#   scripts/train.sh
#   scripts/train.sh --steps 500 --sample 1000
#   SG_RANKS=1 scripts/train.sh                 # one process, no MPI
set -euo pipefail
cd "$(dirname "$0")/.."

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
ranks=${SG_RANKS:-2}
if [ "$ranks" -gt 1 ] && command -v mpirun > /dev/null; then
  echo "== train on $ranks ranks with ZeRO-3 (metrics: runs/gpt/metrics.jsonl)"
  # Unbound, the ranks split the cores between them (dist/world.cpp).
  exec mpirun --oversubscribe --allow-run-as-root --bind-to none -np "$ranks" build/bin/train_gpt --zero 3 \
    --batch $((16 / ranks)) "${outputs[@]}" "$@"
fi
echo "== train in one process (metrics: runs/gpt/metrics.jsonl)"
exec build/bin/train_gpt "${outputs[@]}" "$@"
