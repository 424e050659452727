#!/usr/bin/env bash
# End-to-end check of train_gpt: a short run writes one JSON metrics line per
# step with the promised fields, evaluates when asked (and at the last step),
# lowers the loss, and prints a sample; bad flags fail with a clear message.
# With an MPI launcher as second argument, the run uses 2 ranks and ZeRO
# stage 3, and the metrics must carry both ranks' peak bytes.
#   train_gpt_smoke.sh path/to/train_gpt [mpiexec]
set -euo pipefail
bin=$1
launch=()
zero=0
if [ $# -ge 2 ]; then
  launch=("$2" --oversubscribe --allow-run-as-root -np 2)
  zero=3
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"${launch[@]}" "$bin" --steps 30 --warmup 5 --layers 1 --heads 2 --embd 32 --ctx 32 --batch 8 --lr 3e-3 --zero $zero \
  --eval-every 10 --eval-batches 2 --metrics "$work/m.jsonl" --out "$work/run" --sample 40 > "$work/out.txt"

lines=$(wc -l < "$work/m.jsonl")
[ "$lines" -eq 30 ] || { echo "expected 30 metrics lines, got $lines"; exit 1; }
for field in '"step": ' '"loss": ' '"lr": ' '"grad_norm": ' '"tokens_per_s": '; do
  count=$(grep -c "$field" "$work/m.jsonl")
  [ "$count" -eq 30 ] || { echo "field $field on $count of 30 lines"; exit 1; }
done
evaluated=$(grep -c '"val_loss": ' "$work/m.jsonl")
[ "$evaluated" -eq 3 ] || { echo "expected val_loss at steps 10, 20, 30; got $evaluated lines"; exit 1; }
tail -n 1 "$work/m.jsonl" | grep -q '"step": 30,.*"val_loss": ' || { echo "the last step was not evaluated"; exit 1; }

first=$(head -n 1 "$work/m.jsonl" | sed -E 's/.*"loss": ([0-9.e+-]+).*/\1/')
last=$(tail -n 1 "$work/m.jsonl" | sed -E 's/.*"loss": ([0-9.e+-]+).*/\1/')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.5) }' || { echo "loss did not fall: $first -> $last"; exit 1; }
grep -q -- "---- sample" "$work/out.txt" || { echo "no sample printed"; exit 1; }
ranks=$(tail -n 1 "$work/m.jsonl" | grep -o '"optimizer_state": ' | wc -l)
[ "$ranks" -eq $(( ${#launch[@]} > 0 ? 2 : 1 )) ] || { echo "peak bytes for $ranks rank(s) in the metrics"; exit 1; }
[ -s "$work/run/tokenizer.txt" ] || { echo "the tokenizer was not saved with the run"; exit 1; }
# The central invariant, end to end: the 2 ranks' run is one process's run of their global batch (16),
# its training losses and its validation losses alike, to rounding.
if [ ${#launch[@]} -gt 0 ]; then
  "$bin" --steps 30 --warmup 5 --layers 1 --heads 2 --embd 32 --ctx 32 --batch 16 --lr 3e-3 \
    --eval-every 10 --eval-batches 2 --metrics "$work/one.jsonl" --out "$work/run" --sample 0 > /dev/null
  for field in loss val_loss; do
    paste <(grep -o "\"$field\": [0-9.e+-]*" "$work/one.jsonl" | grep -o '[0-9.e+-]*$') \
      <(grep -o "\"$field\": [0-9.e+-]*" "$work/m.jsonl" | grep -o '[0-9.e+-]*$') |
      awk -v f="$field" '{ n++; if ($1 - $2 > 1e-5 * $1 || $2 - $1 > 1e-5 * $1) bad = 1
                                  if (bad) print f " " $2 " on 2 ranks, " $1 " on one" }
                         END { exit bad || n == 0 }' || { echo "the 2 ranks' $field is not one process's"; exit 1; }
  done
fi

# Activation checkpointing: the same run, to the last digit of every loss,
# with a smaller activation peak (3 blocks: each keeps only its inputs).
for ckpt in 0 1; do
  "${launch[@]}" "$bin" --steps 3 --warmup 1 --layers 3 --heads 2 --embd 32 --ctx 32 --batch 8 --zero $zero \
    --eval-every 0 --metrics "$work/ckpt$ckpt.jsonl" --out "$work/run" --sample 0 \
    --checkpoint-activations $ckpt > "$work/ckpt$ckpt.txt"
done
losses() { grep -o '"loss": [0-9.e+-]*' "$1"; }
[ "$(losses "$work/ckpt1.jsonl")" = "$(losses "$work/ckpt0.jsonl")" ] ||
  { echo "checkpointed blocks changed the losses"; diff <(losses "$work/ckpt0.jsonl") <(losses "$work/ckpt1.jsonl")
    exit 1; }
grep -q "blocks checkpointed" "$work/ckpt1.txt" || { echo "the run does not say its blocks are checkpointed"; exit 1; }
activations() { tail -n 1 "$1" | grep -o '"activation": [0-9]*' | head -n 1 | grep -o '[0-9]*$'; }
with=$(activations "$work/ckpt1.jsonl") without=$(activations "$work/ckpt0.jsonl")
[ "$with" -lt "$without" ] || { echo "checkpointing kept $with activation bytes, $without without"; exit 1; }
# The LM head and loss 48 tokens at a time (uneven chunks of the 256): the same losses to rounding.
"${launch[@]}" "$bin" --steps 3 --warmup 1 --layers 3 --heads 2 --embd 32 --ctx 32 --batch 8 --zero $zero \
  --eval-every 0 --metrics "$work/chunk.jsonl" --out "$work/run" --sample 0 --loss-chunk 48 > "$work/chunk.txt"
paste <(losses "$work/ckpt0.jsonl" | grep -o '[0-9.e+-]*$') <(losses "$work/chunk.jsonl" | grep -o '[0-9.e+-]*$') |
  awk '{ if ($1 - $2 > 1e-5 * $1 || $2 - $1 > 1e-5 * $1) { print "chunked loss " $2 " against " $1; bad = 1 } }
       END { exit bad }' || { echo "the loss in chunks changed the losses"; exit 1; }
# ... and each run's activation peak is the one it predicted (tools/activation_memory.h).
for run in ckpt0 ckpt1 chunk; do
  line=$(grep "train_gpt: memory" "$work/$run.txt" | tail -n 1)
  measured=$(echo "$line" | sed -E 's/.*activations ([0-9.]+) MiB.*/\1/')
  predicted=$(echo "$line" | sed -E 's/.*predicted [0-9.]+ and ([0-9.]+)\).*/\1/')
  [ -n "$measured" ] && [ "$measured" = "$predicted" ] ||
    { echo "$run: '$line': the activation peak is not the predicted one"; exit 1; }
done

# Mixed precision: bf16 (f32 masters) ends within 3% of the f32 run above;
# fp16 reports its loss scale, and its last line how many steps it applied.
"${launch[@]}" "$bin" --steps 30 --warmup 5 --layers 1 --heads 2 --embd 32 --ctx 32 --batch 8 --lr 3e-3 --zero $zero \
  --eval-every 0 --metrics "$work/bf16.jsonl" --out "$work/run" --sample 0 --dtype bf16 > /dev/null
mixed=$(tail -n 1 "$work/bf16.jsonl" | sed -E 's/.*"loss": ([0-9.e+-]+).*/\1/')
awk -v a="$last" -v b="$mixed" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.03 * a) }' ||
  { echo "bf16 ended at $mixed, f32 at $last"; exit 1; }
"${launch[@]}" "$bin" --steps 5 --warmup 1 --layers 1 --heads 2 --embd 32 --ctx 32 --batch 8 --zero $zero \
  --eval-every 0 --metrics "$work/fp16.jsonl" --out "$work/run" --sample 0 --dtype fp16 > "$work/fp16.txt"
grep -q '"loss_scale": ' "$work/fp16.jsonl" || { echo "no loss_scale in the fp16 metrics"; exit 1; }
grep -q "fp16 applied 5 of 5 steps, loss scale 65536" "$work/fp16.txt" ||
  { echo "the fp16 run's last line: $(tail -n 1 "$work/fp16.txt")"; exit 1; }
# A scale of 2^28 overflows the first steps: their norm is inf, which the
# metrics write as null (JSON has no inf), and they are not applied.
echo '{"fp16": {"enabled": true, "initial_scale_power": 28, "hysteresis": 1}}' > "$work/fp16.json"
"${launch[@]}" "$bin" --config "$work/fp16.json" --steps 5 --warmup 1 --layers 1 --heads 2 --embd 32 --ctx 32 \
  --batch 8 --zero $zero --eval-every 0 --metrics "$work/overflow.jsonl" --out "$work/run" --sample 0 > /dev/null
head -n 1 "$work/overflow.jsonl" | grep -q '"grad_norm": null,.*"applied_steps": 0' ||
  { echo "the overflowed first step's metrics: $(head -n 1 "$work/overflow.jsonl")"; exit 1; }
if grep -qiE '": -?(inf|nan)' "$work/overflow.jsonl"; then echo "inf or nan in the metrics' JSON"; exit 1; fi
# A DeepSpeed scheduler from the config gives DeepSpeed's learning rates: its iteration starts at -1 and
# advances only with an applied step (fp16's overflowed first steps leave it where it was).
echo '{"fp16": {"enabled": true, "initial_scale_power": 23, "hysteresis": 1}, "scheduler": {"type": "WarmupLR",
  "params": {"warmup_min_lr": 0, "warmup_max_lr": 0.001, "warmup_num_steps": 4, "warmup_type": "linear"}}}' \
  > "$work/schedule.json"
"${launch[@]}" "$bin" --config "$work/schedule.json" --steps 14 --layers 1 --heads 2 --embd 32 --ctx 32 \
  --batch 8 --zero $zero --eval-every 0 --metrics "$work/schedule.jsonl" --out "$work/run" --sample 0 > /dev/null
sed -E 's/.*"lr": ([0-9.e-]+),.*"applied_steps": ([0-9]+).*/\1 \2/' "$work/schedule.jsonl" | awk '
  { i = before - 1; want = i < 0 ? 0 : (i < 4 ? i / 4 : 1) * 0.001
    if ($1 - want > 1e-12 || want - $1 > 1e-12) { printf "step %d: lr %s, DeepSpeed %g\n", NR, $1, want; bad = 1 }
    before = $2 }
  END { if (before < 6 || before == 14) { printf "%d of 14 steps applied: want some of each\n", before; bad = 1 }
        exit bad }' || { echo "the config's WarmupLR gave other learning rates than DeepSpeed"; exit 1; }
# A DeepSpeed key that changes nothing here is said to at the start, not passed over in silence.
echo '{"zero_optimization": {"sub_group_size": 1e9}, "train_micro_batch_size_per_gpu": "auto"}' > "$work/hf.json"
"$bin" --config "$work/hf.json" --steps 1 --warmup 0 --layers 1 --heads 2 --embd 32 --ctx 32 --batch 8 \
  --eval-every 0 --out "$work/run" --sample 0 > "$work/hf.txt"
grep -q "'zero_optimization.sub_group_size' has no effect" "$work/hf.txt" ||
  { echo "no note on sub_group_size: $(head -n 4 "$work/hf.txt")"; exit 1; }

if "$bin" --stpes 3 > "$work/bad.txt" 2>&1; then echo "a misspelled flag was accepted"; exit 1; fi
grep -q "unknown flag --stpes" "$work/bad.txt" || { echo "unclear error: $(cat "$work/bad.txt")"; exit 1; }
if "$bin" --embd 30 --heads 4 > "$work/bad.txt" 2>&1; then echo "embd not divisible by heads was accepted"; exit 1; fi
grep -q "divisible" "$work/bad.txt" || { echo "unclear error: $(cat "$work/bad.txt")"; exit 1; }
echo '{"train_batch_size": 7, "train_micro_batch_size_per_gpu": 2}' > "$work/bad.json"
if "$bin" --config "$work/bad.json" --steps 2 --warmup 0 --out "$work/run" > "$work/bad.txt" 2>&1; then echo "an inconsistent batch size was accepted"; exit 1; fi
grep -q "train_batch_size 7 in the config" "$work/bad.txt" || { echo "unclear error: $(cat "$work/bad.txt")"; exit 1; }
for bad in "--beta2 1.5" "--clip -1" "--lr nan" "--eval-every -1" "--keep 0" "--steps 1e3" "--warmup 5000" \
  "--checkpoint-activations 2"; do
  # shellcheck disable=SC2086  # the flag and its value, two words
  if "$bin" $bad --out "$work/run" > "$work/bad.txt" 2>&1; then echo "$bad was accepted"; exit 1; fi
  grep -q -- "${bad%% *}" "$work/bad.txt" || { echo "the error for $bad does not name the flag: $(cat "$work/bad.txt")"; exit 1; }
done
# A text whose validation split (the last 10%) cannot fill one window says so.
awk 'BEGIN { for (i = 0; i < 100; ++i) printf "abcdefghi\n" }' > "$work/short.txt"  # 1000 characters
if "$bin" --data "$work/short.txt" --ctx 200 --steps 2 --warmup 0 --out "$work/run" > "$work/bad.txt" 2>&1; then
  echo "a validation split shorter than a window was accepted"; exit 1
fi
grep -q "100 to validate on .* --ctx 200 needs 201 tokens" "$work/bad.txt" || { echo "unclear error: $(cat "$work/bad.txt")"; exit 1; }
# Where the run writes is checked before it trains: a file in the way of --save.
if "$bin" --steps 2 --warmup 0 --layers 1 --heads 2 --embd 32 --ctx 32 --batch 8 --sample 0 --out "$work/run" \
  --save "$work/run/tokenizer.txt" > "$work/bad.txt" 2>&1; then echo "an unwritable --save was accepted"; exit 1; fi
grep -q -- "--save .*cannot create that directory" "$work/bad.txt" || { echo "unclear error: $(cat "$work/bad.txt")"; exit 1; }
if grep -q "^step 1" "$work/bad.txt"; then echo "trained before finding --save unwritable"; exit 1; fi
if "$bin" --steps 2 --warmup 0 --layers 1 --heads 2 --embd 32 --ctx 32 --batch 8 --sample 0 --out "$work/run" \
  --export "$work/no/such/dir/model.safetensors" > "$work/bad.txt" 2>&1; then echo "an --export into no directory was accepted"; exit 1; fi
grep -q -- "--export .*: the directory $work/no/such/dir does not exist" "$work/bad.txt" ||
  { echo "unclear error: $(cat "$work/bad.txt")"; exit 1; }
if grep -q "^step 1" "$work/bad.txt"; then echo "trained before finding --export unwritable"; exit 1; fi
# A loss that turns NaN ends the run with an error, keeps the checkpoint before it
# and names it, and writes none of the NaN state.
if "$bin" --steps 6 --warmup 1 --layers 1 --heads 2 --embd 32 --ctx 32 --batch 8 --sample 0 --out "$work/run" \
  --lr 1e30 --save "$work/nan" --save-every 1 > "$work/bad.txt" 2>&1; then echo "a diverged run ended well"; exit 1; fi
grep -q "step 2: the loss is .*nan: the run diverged.*--resume $work/nan/step-00000001" "$work/bad.txt" ||
  { echo "unclear error for a diverged run: $(cat "$work/bad.txt")"; exit 1; }
[ ! -e "$work/nan/step-00000002" ] || { echo "the diverged step was checkpointed"; exit 1; }
"$bin" --help | grep -q -- "--grad-accum"
echo "train_gpt smoke test: 30 steps, ZeRO stage $zero, loss $first -> $last"
