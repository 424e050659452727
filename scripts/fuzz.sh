#!/usr/bin/env bash
# Fuzzes the safetensors and checkpoint-index parsers for a fixed time with
# libFuzzer (Debian's clang and libclang-rt-dev; scripts/setup-deps.sh
# installs them), under AddressSanitizer and UndefinedBehaviorSanitizer.
# Exits non-zero if the fuzzer finds anything; the input that triggered it
# is left in build-fuzz/.
#
#   scripts/fuzz.sh [seconds, default 30]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
out=build-fuzz
mkdir -p "$out/corpus"
cxx=$(command -v clang++ || true)
[ -n "$cxx" ] || { echo "fuzz: clang++ not found; run scripts/setup-deps.sh" >&2; exit 1; }
"$cxx" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. \
  tools/fuzz/fuzz_parsers.cpp tensor/safetensors_format.cpp optim/checkpoint_index.cpp \
  -o "$out/fuzz_parsers"
# The committed seeds start the corpus; what the fuzzer adds stays in build-fuzz/corpus.
cp -n tools/fuzz/corpus/* "$out/corpus/" 2>/dev/null || true
echo "fuzz: parsers for ${seconds}s"
(cd "$out" && ./fuzz_parsers -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 corpus \
  > fuzz.log 2>&1) || { tail -n 40 "$out/fuzz.log"; echo "fuzz: the fuzzer found a failure (input in $out/)"; exit 1; }
grep -E "stat::number_of_executed_units|Done" "$out/fuzz.log" | tail -n 2
echo "fuzz: nothing found"
