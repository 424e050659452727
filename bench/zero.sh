#!/usr/bin/env bash
# bench/zero.sh: step time and per-rank memory of ZeRO stages 0-3 at 1, 2 and
# 4 ranks, for one fixed GPT (the default: 4 layers, 128 channels, context
# 128) and a fixed global batch of 16 sequences, so the cost of each stage is
# visible side by side.
#
#   bench/zero.sh [build/bin/train_gpt] [steps]
#
# Memory is rank 0's peak bytes per category over the last step, from
# train_gpt's --metrics. Time is the median step. More ranks than cores
# (4 ranks on a 2-core machine) makes the times meaningless but not the bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/bin/train_gpt}
steps=${2:-12}
[ -x "$bin" ] || { echo "no $bin: build first (cmake --build build -j2)"; exit 1; }
command -v mpirun > /dev/null || { echo "mpirun not found: scripts/setup-deps.sh installs OpenMPI"; exit 1; }
cores=$(nproc)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mb() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
peak() { tail -n 1 "$work/m.jsonl" | grep -o "\"$1\": [0-9]*" | head -n 1 | grep -o '[0-9]*$'; }

echo "| stage | ranks | ms/step | tokens/s | parameters MB | gradients MB | optimizer MB | communication MB | activations MB |"
echo "|---|---|---|---|---|---|---|---|---|"
for ranks in 1 2 4; do
  threads=$(( cores / ranks > 0 ? cores / ranks : 1 ))
  for stage in 0 1 2 3; do
    # OpenMPI binds each rank to one core; a rank running several threads must not be.
    binding=(); [ "$threads" -gt 1 ] && binding=(--bind-to none)
    mpirun --oversubscribe --allow-run-as-root "${binding[@]}" -np "$ranks" "$bin" --zero "$stage" --steps "$steps" --warmup 1 \
      --batch $(( 16 / ranks )) --threads "$threads" --eval-every 0 --eval-batches 1 --sample 0 \
      --metrics "$work/m.jsonl" --out "$work/run" > /dev/null 2>&1
    # Median step time over the steps after the first two (warm-up).
    ms=$(tail -n +3 "$work/m.jsonl" | grep -o '"tokens_per_s": [0-9.e+]*' | grep -o '[0-9.e+]*$' |
         awk '{ print 16 * 128 / $1 * 1000 }' | sort -n | awk '{ v[NR] = $1 } END { printf "%.1f", v[int((NR + 1) / 2)] }')
    tps=$(awk -v ms="$ms" 'BEGIN { printf "%.0f", 16 * 128 / ms * 1000 }')
    echo "| $stage | $ranks | $ms | $tps | $(mb "$(peak parameter)") | $(mb "$(peak gradient)") |" \
         "$(mb "$(peak optimizer_state)") | $(mb "$(peak communication)") | $(mb "$(peak activation)") |"
  done
done
