#!/usr/bin/env bash
# Checkpoints through train_gpt: a resumed run continues bit for bit; a
# checkpoint of 2 ranks at ZeRO-3 continues the same run in one process at
# stage 1 (and the other way round); SIGINT finishes the step, saves and
# exits with 130; a checkpoint of another model is refused with the flag to fix;
# a damaged one is refused on every rank, without a hang.
#   train_gpt_checkpoint.sh path/to/train_gpt [mpiexec]
set -euo pipefail
bin=$1
mpi=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
small=(--layers 1 --heads 2 --embd 32 --ctx 32 --warmup 1 --eval-every 0 --sample 0 --out "$work/run")

losses() { sed -E 's/.*"step": ([0-9]+), "loss": ([0-9.e+-]+).*/\1 \2/' "$1"; }
# Compares two "step loss" lists: exactly, or to a relative tolerance.
same() {
  awk -v tol="$3" 'NR == FNR { want[$1] = $2; next }
    ($1 in want) { n++; d = $2 - want[$1]; if (d < 0) d = -d; if (d > tol * want[$1] || (tol == 0 && $2 != want[$1])) { print "step " $1 ": " $2 " vs " want[$1]; bad = 1 } }
    END { if (n == 0) { print "no common steps"; exit 1 } exit bad }' <(losses "$1") <(losses "$2")
}

# One process, 8 steps, checkpoints at 4 and 8; then steps 5-8 again from step 4.
"$bin" "${small[@]}" --batch 8 --steps 8 --save "$work/a" --save-every 4 --metrics "$work/a.jsonl" > /dev/null
[ -f "$work/a/step-00000004/index.json" ] && [ -f "$work/a/step-00000008/index.json" ] || { echo "checkpoints missing"; ls -R "$work/a"; exit 1; }
"$bin" "${small[@]}" --batch 8 --steps 8 --resume "$work/a/step-00000004" --metrics "$work/b.jsonl" > /dev/null
same "$work/a.jsonl" "$work/b.jsonl" 0 || { echo "resuming at the same world size and stage is not bit for bit"; exit 1; }

# A fresh run into a --save holding another run's checkpoints: refused
# before it trains (its saves would mix with them and be pruned first).
if "$bin" "${small[@]}" --batch 8 --steps 8 --save "$work/a" > "$work/bad.txt" 2>&1; then
  echo "a fresh run was let into another run's --save"; exit 1
fi
grep -q -- "--save $work/a already holds checkpoints of an earlier run" "$work/bad.txt" || { cat "$work/bad.txt"; exit 1; }

# A checkpoint of another model: refused, naming the flag.
if "$bin" "${small[@]}" --embd 64 --steps 8 --resume "$work/a/step-00000004" > "$work/bad.txt" 2>&1; then
  echo "a checkpoint of another model was accepted"; exit 1
fi
grep -q "n_embd is 32 there and 64 here (--embd)" "$work/bad.txt" || { cat "$work/bad.txt"; exit 1; }

if [ -n "$mpi" ]; then
  launch=("$mpi" --oversubscribe --allow-run-as-root -np 2)
  # 2 ranks at ZeRO-3 from the one-process checkpoint: the same global batch, the same run.
  "${launch[@]}" "$bin" "${small[@]}" --batch 4 --zero 3 --steps 8 --resume "$work/a/step-00000004" \
    --save "$work/c" --metrics "$work/c.jsonl" > /dev/null
  same "$work/a.jsonl" "$work/c.jsonl" 1e-5 || { echo "1 rank -> 2 ranks at ZeRO-3 diverged"; exit 1; }
  # ... and a 2-rank ZeRO-3 checkpoint back to one process at stage 1.
  "${launch[@]}" "$bin" "${small[@]}" --batch 4 --zero 3 --steps 8 --save "$work/d" --save-every 4 > /dev/null
  "$bin" "${small[@]}" --batch 8 --zero 1 --steps 8 --resume "$work/d/step-00000004" --metrics "$work/e.jsonl" > /dev/null
  same "$work/a.jsonl" "$work/e.jsonl" 1e-5 || { echo "2 ranks at ZeRO-3 -> 1 rank at stage 1 diverged"; exit 1; }
  # One bit of rank 1's file damaged, resumed on 3 ranks: the rank that reads
  # it reports the tensor and takes the job down; the ranks that never read
  # it do not wait for it forever.
  python3 -c 'import sys; p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[-1] ^= 1; open(p, "wb").write(b)' \
    "$work/d/step-00000004/rank-1-of-2.safetensors"
  status=0
  timeout 120 "$mpi" --oversubscribe --allow-run-as-root -np 3 "$bin" "${small[@]}" --batch 4 --zero 3 --steps 8 \
    --resume "$work/d/step-00000004" > "$work/damaged.txt" 2>&1 || status=$?
  [ $status -ne 124 ] || { echo "a damaged checkpoint hung the job"; cat "$work/damaged.txt"; exit 1; }
  [ $status -ne 0 ] || { echo "a damaged checkpoint was resumed"; exit 1; }
  grep -q "rank-1-of-2.safetensors: tensor '.*' is corrupt" "$work/damaged.txt" || { cat "$work/damaged.txt"; exit 1; }
fi

# SIGINT: the step finishes, a checkpoint is saved, the exit status is 130.
"$bin" "${small[@]}" --batch 8 --steps 1000000 --save "$work/s" --metrics "$work/s.jsonl" > "$work/s.txt" 2>&1 &
pid=$!
for _ in $(seq 600); do [ -s "$work/s.jsonl" ] && break; sleep 0.1; done
kill -INT $pid
status=0
wait $pid || status=$?
[ $status -eq 130 ] || { echo "exit status $status after SIGINT, expected 130"; cat "$work/s.txt"; exit 1; }
grep -q "stopped by SIGINT" "$work/s.txt" || { cat "$work/s.txt"; exit 1; }
steps=$(wc -l < "$work/s.jsonl")
[ -f "$work/s/$(printf 'step-%08d' "$steps")/index.json" ] || { echo "no checkpoint at step $steps"; ls -R "$work/s"; exit 1; }
"$bin" "${small[@]}" --batch 8 --steps $((steps + 1)) --resume "$work/s" > /dev/null
echo "checkpoint checks passed"
