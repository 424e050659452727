#!/usr/bin/env bash
# train_gpt --device cuda in the emulator, beside the CPU: 10 steps of a tiny
# model with the same seed and windows. CUDA f32 must give the CPU's loss at
# every step (relative 1e-4), and CUDA bf16 and fp16 must follow it within 3%
# (fp16 applying every step: the loss scale must not overflow). This is the
# whole CUDA training loop: pinned uploads of the batches, the device-side
# loss, clipping's norm on the device, AdamW on the shard. Further flags
# (a wider model, say) come after the defaults and so replace them.
#   train_gpt_cuda.sh path/to/train_gpt [flags...]
set -euo pipefail
bin=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--layers 2 --heads 2 --embd 32 --ctx 32 --batch 4 --steps 10 --warmup 2 --eval-every 0 --sample 0
        --out "$work/run" "$@")
for run in "cpu f32" "cuda f32" "cuda bf16" "cuda fp16"; do
  set -- $run
  "$bin" "${common[@]}" --device "$1" --dtype "$2" --metrics "$work/$1_$2.jsonl" > "$work/$1_$2.log" 2>&1 ||
    { echo "train_gpt --device $1 --dtype $2 failed:"; tail -5 "$work/$1_$2.log"; exit 1; }
done
losses() { sed -E 's/.*"loss": ([0-9.e+-]+).*/\1/' "$work/$1.jsonl"; }
applied=$(tail -n 1 "$work/cuda_fp16.jsonl" | sed -E 's/.*"applied_steps": ([0-9]+).*/\1/')
[ "$applied" = 10 ] || { echo "fp16 applied $applied of 10 steps"; exit 1; }
paste <(losses cpu_f32) <(losses cuda_f32) <(losses cuda_bf16) <(losses cuda_fp16) | awk '
  { n++
    if ($2 - $1 > 1e-4 * $1 || $1 - $2 > 1e-4 * $1) { printf "step %d: cuda f32 loss %s, cpu %s\n", n, $2, $1; bad = 1 }
    if ($3 - $1 > 0.03 * $1 || $1 - $3 > 0.03 * $1) { printf "step %d: cuda bf16 loss %s, cpu f32 %s\n", n, $3, $1; bad = 1 }
    if ($4 - $1 > 0.03 * $1 || $1 - $4 > 0.03 * $1) { printf "step %d: cuda fp16 loss %s, cpu f32 %s\n", n, $4, $1; bad = 1 } }
  END { if (n != 10) { printf "expected 10 steps, got %d\n", n; bad = 1 }
        if (!bad) printf "10 steps: cuda f32 within 1e-4 of the cpu, bf16 and fp16 within 3%%\n"
        exit bad }'
