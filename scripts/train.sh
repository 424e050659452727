#!/usr/bin/env bash
# The README's first command: installs what is missing, builds (Release),
# trains the default character-level GPT on the bundled tiny Shakespeare on
# the CPU (a progress line, the validation loss as it falls), and prints a
# sample. Extra arguments go to train_gpt (see build/bin/train_gpt --help).
#
#   scripts/train.sh
#   scripts/train.sh --steps 500 --sample 1000
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-deps.sh
mkdir -p build runs/gpt
echo "== configure and build (Release)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > build.configure.log 2>&1 || {
  cat build.configure.log
  exit 1
}
cmake --build build -j"${SG_JOBS:-2}" --target train_gpt
echo "== train (metrics: runs/gpt/metrics.jsonl)"
exec build/bin/train_gpt --metrics runs/gpt/metrics.jsonl --out runs/gpt "$@"
