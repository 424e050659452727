#!/usr/bin/env bash
# bench/launch_census.sh: every kernel launch, GEMM, copy and fill one GPT
# training step puts on the GPU, counted by name, without a GPU. The CUDA
# emulator (docs/cuda-emulator.md) runs bench_gpt's host code unchanged and
# counts the device work queued between the cudaProfilerStart and
# cudaProfilerStop that bracket its last step (SG_EMU_CENSUS): the same
# launches an H100 gets for GPT-2 at bench_gpt's defaults (12 layers, 12
# heads, micro-batch 8), since the counts do not depend on the model's width
# or context (here 192 channels, a head size of 16 as the tensor-core attention
# needs, and 64 tokens, to run in seconds).
#
#   bench/launch_census.sh [build-emu/bin/bench_gpt] [extra bench_gpt flags, e.g. --dtype f32]
#
# Small kernels cost a launch each, however little they do, so this is the
# list to shorten. Build the emulator first: scripts/test.sh does, or
#   cmake -S . -B build-emu -DSG_CUDA=OFF -DSG_CUDA_EMULATOR=ON && cmake --build build-emu -j2 --target bench_gpt
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build-emu/bin/bench_gpt}
shift || true
[ -x "$bin" ] || { echo "no $bin: build the emulator first (see the top of $0)"; exit 1; }
census=$(mktemp)
trap 'rm -f "$census"' EXIT
# A user's step: without the tests' NaN fill of every new allocation (SG_POISON, scripts/test.sh).
SG_POISON=0 SG_EMU_CENSUS="$census" "$bin" --device cuda --dtype bf16 --layers 12 --heads 12 --embd 192 --vocab 512 --ctx 64 \
  --batch 8 --warmup 1 --steps 1 --profile-last 1 "$@" > /dev/null
[ -s "$census" ] || { echo "no census written: is $bin an emulator build (-DSG_CUDA_EMULATOR=ON)?"; exit 1; }
echo "device work in one training step of bench_gpt (12 layers, 12 heads, batch 8, bf16, ZeRO stage 0," \
  "one GPU${*:+; then $*}):"
cat "$census"
