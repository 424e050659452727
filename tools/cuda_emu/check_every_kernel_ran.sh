#!/usr/bin/env bash
# Every __global__ kernel in kernels/cuda must have run in some test of the
# emulator build. scripts/test.sh runs that build's tests with
# SG_EMU_LAUNCH_LOG=file (each process appends the kernels it launched), then
# this script compares the file with the kernels the sources declare.
#
#   tools/cuda_emu/check_every_kernel_ran.sh build-emu/kernel-launches.txt
set -euo pipefail
log=$(realpath "$1")
cd "$(dirname "$0")/../.."

# "__global__ void [__launch_bounds__(...)] name(" across line breaks.
declared=$(for file in kernels/cuda/*.cu kernels/cuda/*.cuh; do
  tr '\n' ' ' < "$file" |
    grep -oP '__global__\s+void\s+(__launch_bounds__\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)\s+)?\K\w+' || true
done | sort -u)
if [ ! -s "$log" ]; then
  echo "cuda_emu: $1 is empty or missing: did the emulator build's tests run with SG_EMU_LAUNCH_LOG?" >&2
  exit 1
fi
missing=$(comm -23 <(echo "$declared") <(sort -u "$log"))
if [ -n "$missing" ]; then
  echo "cuda_emu: these kernels never ran in a test; add a test in tests/cuda that calls them:" >&2
  echo "$missing" | sed 's/^/  /' >&2
  exit 1
fi
echo "cuda_emu: all $(echo "$declared" | wc -l) kernels in kernels/cuda ran in the emulator's tests"
