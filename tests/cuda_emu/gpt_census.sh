#!/usr/bin/env bash
# The launch census of one GPT step (bench/launch_census.sh) holds what the
# step must not do on a GPU: no dtype casts (every parameter gradient is
# computed into its f32 buffer, the 16-bit parameters are written by AdamW's
# own pass) and no copies, in bf16 and in f32.
#   gpt_census.sh path/to/bench_gpt
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")/../.." && pwd)
for dtype in bf16 f32; do
  census=$("$here/bench/launch_census.sh" "$bin" --dtype "$dtype" --batch 2)  # a quicker step, the same kinds
  for unwanted in cast_kernel strided_copy_kernel cudaMemcpyAsync; do
    if grep -q " $unwanted" <<< "$census"; then
      echo "$dtype step launches $unwanted:"
      echo "$census"
      exit 1
    fi
  done
  echo "$dtype: $(tail -n 1 <<< "$census" | awk '{print $1}') pieces of device work, no casts or copies"
done
