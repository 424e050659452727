#!/usr/bin/env bash
# The GPU check: builds shardgrad with CUDA on a machine with a GPU, runs every
# CUDA test (each CUDA kernel against its CPU twin, transfers, RNG bits), a
# short train_gpt run on the GPU beside the CPU (f32, bf16 and fp16), and the GEMM
# timing, and prints a short table last.
#
# The GPU machines we borrow have nvcc, CMake and g++ but no Debian packages
# and no network, so the two header/static-library dependencies they lack
# travel with the working tree:
#
#   scripts/gpu_check.sh --prepare   # here (Debian): fetch Eigen, GoogleTest and nlohmann-json
#                                    # .debs into .gpu_deps/ (git-ignored)
#   scripts/gpu_check.sh             # there: unpack them to /tmp, build, test, time
#
# With the device tool: run --prepare here, then run the script there with
# carry [".gpu_deps"]. Logs go to $OUT when it is set, else build-gpu/.
set -euo pipefail
cd "$(dirname "$0")/.."

deps=.gpu_deps
# OpenMPI and the libraries it loads, for several ranks sharing the GPU
# (the machines have no MPI); unpacked under /tmp and relocated with
# OPAL_PREFIX (checked on Debian with the system's OpenMPI hidden).
mpi_packages="libopenmpi3 openmpi-bin openmpi-common libopenmpi-dev libhwloc15 libevent-2.1-7 libevent-core-2.1-7
  libevent-pthreads-2.1-7 libpmix2 libfabric1 libucx0 libibverbs1 librdmacm1 libnl-3-200 libnl-route-3-200 libpsm2-2
  libpsm-infinipath1 libnuma1 libmunge2 libxnvctrl0"
if [ "${1:-}" = "--prepare" ]; then
  mkdir -p "$deps/mpi"
  (cd "$deps" && apt-get download libeigen3-dev libgtest-dev nlohmann-json3-dev >/dev/null)
  (cd "$deps/mpi" && apt-get download $mpi_packages >/dev/null)
  du -sh "$deps" "$deps/mpi"
  exit 0
fi

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || {
  echo "gpu_check: no nvidia-smi; this script needs a machine with an NVIDIA GPU" >&2
  exit 1
}

prefix_args=()
if [ -d "$deps" ] && ls "$deps"/*.deb >/dev/null 2>&1; then
  prefix=/tmp/sg-deps
  for deb in "$deps"/*.deb; do dpkg -x "$deb" "$prefix"; done
  prefix_args=(-DCMAKE_PREFIX_PATH="$prefix/usr")
fi

mpi_args=()
mpirun_cmd=$(command -v mpirun || true)
if [ -z "$mpirun_cmd" ] && ls "$deps"/mpi/*.deb >/dev/null 2>&1; then
  mpi_prefix=/tmp/sg-mpi
  for deb in "$deps"/mpi/*.deb; do dpkg -x "$deb" "$mpi_prefix"; done
  export OPAL_PREFIX=$mpi_prefix/usr
  export LD_LIBRARY_PATH=$mpi_prefix/usr/lib/x86_64-linux-gnu:$mpi_prefix/usr/lib/x86_64-linux-gnu/openmpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  mpirun_cmd=$mpi_prefix/usr/bin/mpirun.openmpi
  mpi_args=(-DMPI_CXX_COMPILER="$mpi_prefix/usr/bin/mpicxx.openmpi" -DMPIEXEC_EXECUTABLE="$mpirun_cmd")
fi

logs=${OUT:-build-gpu}
mkdir -p "$logs"
jobs=$(nproc)
start=$(date +%s)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DSG_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=native \
  "${prefix_args[@]}" "${mpi_args[@]}" > "$logs/configure.log" 2>&1 || { tail -30 "$logs/configure.log"; exit 1; }
cmake --build build-gpu -j"$jobs" > "$logs/build.log" 2>&1 || {
  grep -E "error" -A3 "$logs/build.log" | head -60
  exit 1
}
echo "gpu_check: built in $(( $(date +%s) - start )) s"

status=0
export SG_POISON=1  # the tests get NaN-filled memory, new or reused (tensor/allocator.h), as in CI
suites="test_cuda test_cuda_gpt test_kernels test_tensor test_autograd test_nn test_dist test_zero"
[ -x build-gpu/bin/test_nccl ] && suites="test_cuda test_nccl $suites"
for suite in $suites; do  # bounded: a hung kernel must not eat the machine's whole lease
  timeout 240 build-gpu/bin/$suite > "$logs/$suite.log" 2>&1 || { status=1; echo "gpu_check: $suite failed or timed out"; }
done
# Checkpoints of CUDA runs: resumed bit for bit on the GPU, and on the CPU.
timeout 240 build-gpu/bin/test_checkpoint --gtest_filter='*OnCuda*' > "$logs/test_checkpoint.log" 2>&1 ||
  { status=1; echo "gpu_check: test_checkpoint failed or timed out"; }
# NCCL with the compute stream waiting on its events (no host poll).
if [ -x build-gpu/bin/test_nccl ]; then
  SG_NCCL_WAIT=device timeout 120 build-gpu/bin/test_nccl > "$logs/test_nccl_device_wait.log" 2>&1 || status=1
  echo "test_nccl with SG_NCCL_WAIT=device: $(grep -E '^\[  (PASSED|FAILED) ' "$logs/test_nccl_device_wait.log" | tr '\n' ' ')" \
    > "$logs/nccl_device_wait_summary.txt"
fi
# Several ranks sharing the GPU (CUDA tensors through the staged MPI
# backend), where the machine has an MPI launcher.
if [ -n "$mpirun_cmd" ] && grep -q "SG_MPI=ON" "$logs/configure.log"; then
  for ranks in 2 4; do
    timeout 240 "$mpirun_cmd" --oversubscribe --allow-run-as-root -np $ranks build-gpu/bin/test_zero \
      --gtest_filter='*OnCuda*' > "$logs/test_zero_np$ranks.log" 2>&1 || status=1
  done
  timeout 120 "$mpirun_cmd" --oversubscribe --allow-run-as-root -np 2 build-gpu/bin/test_dist \
    --gtest_filter='StagedBackend.*' > "$logs/test_dist_np2.log" 2>&1 || status=1
else
  echo "gpu_check: no mpirun here; the CUDA ZeRO equivalence ran as a world of one only" | tee "$logs/test_zero_np2.log"
fi
unset SG_POISON  # the timings and training runs below run as a user's would
timeout 120 build-gpu/bin/bench_gemm --repeat 10 > "$logs/bench_gemm.log" 2>&1 || status=1
timeout 120 build-gpu/bin/bench_attention --device cuda --dtype bf16 > "$logs/bench_attention.log" 2>&1 || status=1
# train_gpt on the GPU beside the CPU: 20 steps of a small model, the same
# seed and windows; f32 should agree closely, bf16 should follow.
small=(--layers 2 --heads 2 --embd 64 --ctx 64 --batch 8 --steps 20 --warmup 2 --eval-every 0 --sample 0 --out "$logs/run")
for run in "cpu f32" "cuda f32" "cuda bf16" "cuda fp16"; do
  set -- $run
  timeout 120 build-gpu/bin/train_gpt "${small[@]}" --device "$1" --dtype "$2" --metrics "$logs/train_$1_$2.jsonl" \
    > "$logs/train_$1_$2.log" 2>&1 || { status=1; tail -5 "$logs/train_$1_$2.log"; }
done
timeout 60 build-gpu/bin/bench_collectives --device cuda --iters 10 > "$logs/bench_collectives.log" 2>&1 || status=1
# GPT-2 124M, bf16, T 1024 (bench/gpt_gpu.py adds PyTorch beside it where installed).
timeout 300 python3 bench/gpt_gpu.py --bin build-gpu/bin/bench_gpt > "$logs/bench_gpt.log" 2>&1 ||
  { status=1; tail -5 "$logs/bench_gpt.log"; }
# shardgrad alone with the GEMM-form attention instead of the fused tensor-core kernels, to compare,
# and larger micro-batches (the issue asks for the largest that fits; an out-of-memory is reported, not fatal).
SG_ATTENTION=gemm timeout 120 build-gpu/bin/bench_gpt --device cuda --dtype bf16 > "$logs/bench_gpt_gemm.log" 2>&1 ||
  { status=1; tail -5 "$logs/bench_gpt_gemm.log"; }
# and the fused kernels on CUDA cores (SG_FLASH_TENSOR_CORES=0), the third way.
SG_ATTENTION=fused SG_FLASH_TENSOR_CORES=0 timeout 120 build-gpu/bin/bench_gpt --device cuda --dtype bf16 \
  > "$logs/bench_gpt_fused_cuda_cores.log" 2>&1 || { status=1; tail -5 "$logs/bench_gpt_fused_cuda_cores.log"; }
for batch in 16 32; do
  timeout 90 build-gpu/bin/bench_gpt --device cuda --dtype bf16 --batch $batch > "$logs/bench_gpt_b$batch.log" 2>&1 || true
done

echo
echo "## CUDA tests (each CUDA kernel against its CPU twin)"
echo "| test | result |"
echo "|---|---|"
cat "$logs/test_cuda.log" "$logs/test_cuda_gpt.log" "$logs/test_nccl.log" 2>/dev/null | grep -E '^\[ +(OK|FAILED|SKIPPED) +\] [A-Za-z]' |
  sed -E 's/^\[ +([A-Z]+) +\] ([^ ]+).*/| \2 | \1 |/' | sort -u
for log in "$logs"/test_zero_np*.log "$logs"/test_dist_np2.log; do
  [ -f "$log" ] || continue
  ranks=$(basename "$log" .log | sed 's/.*_np//')
  sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^\[ +(OK|FAILED|SKIPPED) +\] [A-Za-z]' |
    sed -E "s/^\[ +([A-Z]+) +\] ([^ ]+).*/| \2 ($ranks ranks on one GPU) | \1 |/" | sort -u
done
cat "$logs/test_dist.log" "$logs/test_zero.log" "$logs/test_checkpoint.log" 2>/dev/null | grep -E '^\[ +(OK|FAILED|SKIPPED) +\] [A-Za-z/]*Cuda' |
  sed -E 's/^\[ +([A-Z]+) +\] ([^ ]+).*/| \2 (world of one) | \1 |/' | sort -u
for suite in $suites; do
  echo "$suite: $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$logs/$suite.log" | tr '\n' ' ')"
done
grep -h "gpu_check: no mpirun" "$logs/test_zero_np2.log" 2>/dev/null || true
cat "$logs/nccl_device_wait_summary.txt" 2>/dev/null || true
echo
echo "## train_gpt, 20 steps of a small model: loss at steps 1, 5, 10, 20"
echo "| run | 1 | 5 | 10 | 20 |"
echo "|---|---|---|---|---|"
for run in cpu_f32 cuda_f32 cuda_bf16 cuda_fp16; do
  [ -s "$logs/train_$run.jsonl" ] || { echo "| $run | failed | | | |"; continue; }
  echo "| $run | $(sed -n '1p;5p;10p;20p' "$logs/train_$run.jsonl" | sed -E 's/.*"loss": ([0-9.e+-]+).*/\1/' | tr '\n' '|' | sed 's/|$//; s/|/ | /g') |"
done
echo
echo "## GPT-2 124M training, bf16, T 1024, batch 8 (bench/gpt_gpu.py)"
cat "$logs/bench_gpt.log"
echo "shardgrad with SG_ATTENTION=gemm: $(tail -1 "$logs/bench_gpt_gemm.log")"
echo "shardgrad with the fused kernels on CUDA cores: $(tail -1 "$logs/bench_gpt_fused_cuda_cores.log")"
for batch in 16 32; do echo "shardgrad, batch $batch: $(tail -1 "$logs/bench_gpt_b$batch.log")"; done
echo
echo "## Attention, GPT-2 124M's shape (build/bin/bench_attention)"
cat "$logs/bench_attention.log"
echo
echo "## GEMM (build/bin/bench_gemm)"
cat "$logs/bench_gemm.log"
echo
echo "## NCCL, one rank (build/bin/bench_collectives --device cuda)"
cat "$logs/bench_collectives.log"
exit $status
