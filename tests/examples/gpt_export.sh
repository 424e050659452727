#!/usr/bin/env bash
# train_gpt --export writes a GPT-2-style file that gpt_eval scores and
# gpt_sample samples from, and that train_gpt --init-from starts from (on 2
# ranks at ZeRO-3 when a launcher is given); a broken file is a clear error.
# With SG_TORCH_PYTHON set (a python3 with torch), the file is also read and
# scored by tools/check_gpt_export.py, GPT-2 as PyTorch tools compute it, and
# must give gpt_eval's loss.
#   gpt_export.sh path/to/bin [mpiexec]
set -euo pipefail
bin=$1
mpi=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
data=$(dirname "$0")/../../data/tinyshakespeare.txt
head -c 30000 "$data" > "$work/text.txt"
small=(--layers 1 --heads 2 --embd 32 --ctx 32 --batch 8 --warmup 2 --eval-every 0 --sample 0 --out "$work/run")

"$bin/train_gpt" "${small[@]}" --steps 30 --lr 3e-3 --export "$work/m.safetensors" > "$work/train.txt"
grep -q "exported $work/m.safetensors" "$work/train.txt" || { cat "$work/train.txt"; exit 1; }

"$bin/gpt_eval" --model "$work/m.safetensors" --text "$work/text.txt" --ctx 32 > "$work/eval.txt"
last=$(tail -n 1 "$work/eval.txt")
[[ "$last" =~ ^loss=([0-9.]+)\ tokens=([0-9]+)$ ]] || { echo "last line: $last"; exit 1; }
loss=${BASH_REMATCH[1]}
tokens=${BASH_REMATCH[2]}
n=$(wc -c < "$work/text.txt")
[ "$tokens" -eq $(( (n - 1) / 32 * 32 )) ] || { echo "tokens=$tokens for $n characters in windows of 32"; exit 1; }
awk -v l="$loss" 'BEGIN { exit !(l > 0 && l < 3.9) }' || { echo "loss $loss: not below the uniform 4.17"; exit 1; }
if [ -n "${SG_TORCH_PYTHON:-}" ]; then
  theirs=$("$SG_TORCH_PYTHON" "$(dirname "$0")/../../tools/check_gpt_export.py" "$work/m.safetensors" "$work/text.txt" 32)
  [[ "$theirs" =~ ^loss=([0-9.]+)\ tokens=$tokens$ ]] || { echo "PyTorch read: $theirs"; exit 1; }
  awk -v a="$loss" -v b="${BASH_REMATCH[1]}" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 1e-4 * a) }' ||
    { echo "gpt_eval says $loss, GPT-2 in PyTorch says ${BASH_REMATCH[1]}"; exit 1; }
  echo "PyTorch reads the export and agrees: $theirs"
fi

"$bin/gpt_sample" --model "$work/m.safetensors" --prompt "ROMEO:" --tokens 40 > "$work/sample.txt"
head -c 6 "$work/sample.txt" | grep -q "ROMEO:" || { cat "$work/sample.txt"; exit 1; }
[ "$(wc -c < "$work/sample.txt")" -ge 46 ] || { echo "sample too short"; cat "$work/sample.txt"; exit 1; }
# A number it cannot read whole is refused by name before the model loads, not read as 1.
if "$bin/gpt_sample" --model "$work/m.safetensors" --tokens 1e3 > "$work/bad.txt" 2>&1; then
  echo "gpt_sample read --tokens 1e3"; cat "$work/bad.txt"; exit 1
fi
grep -q "gpt_sample: --tokens expects an integer, got '1e3'" "$work/bad.txt" || { cat "$work/bad.txt"; exit 1; }

# Starting from the file: the first loss is the trained model's, not a fresh one's (about 4.2).
launch=()
zero=0
if [ -n "$mpi" ]; then launch=("$mpi" --oversubscribe --allow-run-as-root -np 2); zero=3; fi
"${launch[@]}" "$bin/train_gpt" --batch 4 --ctx 32 --warmup 1 --eval-every 0 --sample 0 --out "$work/run" \
  --steps 2 --zero $zero --init-from "$work/m.safetensors" --metrics "$work/init.jsonl" > /dev/null
first=$(head -n 1 "$work/init.jsonl" | sed -E 's/.*"loss": ([0-9.e+-]+).*/\1/')
awk -v l="$first" 'BEGIN { exit !(l < 3.9) }' || { echo "first loss after --init-from: $first"; exit 1; }

# A broken file.
head -c 100 "$work/m.safetensors" > "$work/cut.safetensors"
if "$bin/gpt_eval" --model "$work/cut.safetensors" --text "$work/text.txt" > "$work/bad.txt" 2>&1; then
  echo "a truncated model file was accepted"; exit 1
fi
grep -q "gpt_eval: .*cut.safetensors" "$work/bad.txt" || { cat "$work/bad.txt"; exit 1; }
# A file from another writer (no CRCs) with a NaN weight: train_gpt stops at
# its first step and blames the weights it started from, not the learning rate.
python3 - "$work/m.safetensors" "$work/nan.safetensors" << 'PYTHON'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header, data = json.loads(raw[8:8 + n]), bytearray(raw[8 + n:])
del header["__metadata__"]["shardgrad.crc32c"]
at = header["wpe.weight"]["data_offsets"][0]
data[at:at + 4] = struct.pack("<f", float("nan"))
text = json.dumps(header).encode()
text += b" " * ((8 - len(text) % 8) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(text)) + text + bytes(data))
PYTHON
if "$bin/train_gpt" --batch 4 --ctx 32 --warmup 1 --eval-every 0 --sample 0 --out "$work/run" --steps 2 \
  --init-from "$work/nan.safetensors" > "$work/bad.txt" 2>&1; then echo "NaN weights trained"; exit 1; fi
grep -q "step 1: the loss is .*nan: the weights this run started from are not numbers" "$work/bad.txt" ||
  { cat "$work/bad.txt"; exit 1; }
echo "export checks passed"
