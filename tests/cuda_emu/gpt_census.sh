#!/usr/bin/env bash
# The launch census of one GPT step (bench/launch_census.sh, micro-batch 2 to
# run quickly) is held to tests/fixtures/gpt_step_census.txt: every kernel,
# GEMM and fill a bf16 step puts on the GPU, by name and count. A change that
# adds or removes device work changes this list, and must say so by updating
# the file (the command is printed below on a mismatch). Both a bf16 and an
# f32 step must also make no dtype casts (every parameter gradient is
# computed into its f32 buffer; AdamW writes the 16-bit parameters in its own
# pass) and no copies.
#   gpt_census.sh path/to/bench_gpt
set -euo pipefail
# The defaults' kernels, whatever the caller's environment chose.
unset SG_ATTENTION SG_CUBLASLT SG_FLASH_TENSOR_CORES SG_GEMM_POINTER_ARRAYS
bin=$1
here=$(cd "$(dirname "$0")/../.." && pwd)
expected="$here/tests/fixtures/gpt_step_census.txt"
for dtype in bf16 f32; do
  census=$("$here/bench/launch_census.sh" "$bin" --batch 2 --dtype "$dtype")
  for unwanted in cast_kernel strided_copy_kernel cudaMemcpyAsync; do
    if grep -q " $unwanted" <<< "$census"; then
      echo "$dtype step launches $unwanted:"
      echo "$census"
      exit 1
    fi
  done
  echo "$dtype: $(tail -n 1 <<< "$census" | awk '{print $1}') pieces of device work, no casts or copies"
  if [ "$dtype" = bf16 ] && ! diff <(tail -n +2 <<< "$census") "$expected"; then
    echo "the bf16 step's device work (above: < now, > $expected) changed; if that is intended, update it with"
    echo "  bench/launch_census.sh $bin --batch 2 | tail -n +2 > tests/fixtures/gpt_step_census.txt"
    exit 1
  fi
done
