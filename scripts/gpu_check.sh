#!/usr/bin/env bash
# The GPU check: builds shardgrad with CUDA on a machine with a GPU, runs every
# CUDA test (each CUDA kernel against its CPU twin, one GPT step against the
# CPU, NCCL, the ZeRO equivalence on CUDA tensors at 1, 2 and 4 ranks), a short
# train_gpt run on the GPU beside the CPU (f32, bf16 and fp16), GPT-2 124M
# beside PyTorch, and the kernel timings, and prints a short table last.
#
# The GPU machines we borrow have nvcc, CMake and g++ but no Debian packages
# and no network, so the header/static-library dependencies they lack, and
# OpenMPI, travel with the working tree:
#
#   scripts/gpu_check.sh --prepare   # here (Debian): fetch the .debs into .gpu_deps/ (git-ignored)
#   scripts/gpu_check.sh             # there: unpack them to /tmp, build, test, time
#
# A lease is short, so the steps run most important first, each bounded by a
# timeout and by the whole check's budget (SG_GPU_CHECK_BUDGET seconds, 540 by
# default): a step with no time left is reported as skipped, never silently
# dropped. SG_GPU_CHECK_STEPS (an extended regular expression over the step
# names) runs only the steps it matches, besides configure and build, for a
# lease too short for everything: e.g.
#   SG_GPU_CHECK_STEPS='^(test_cuda|bench_gpt|bench_gpt_variants|bench_gpt_b32|bench_gpt_b32_variants)$'
# Logs go to build-gpu/logs; with $OUT set (the device tool) they are
# packed into $OUT/gpu_check_logs.tgz after every step, so a check cut short
# still brings its logs back, and the table is written to $OUT/gpu_check.md.
set -uo pipefail
cd "$(dirname "$0")/.."

deps=.gpu_deps
# OpenMPI and the libraries it loads, for several ranks sharing the GPU
# (the machines have no MPI); unpacked under /tmp and relocated with
# OPAL_PREFIX (checked on Debian with the system's OpenMPI hidden).
mpi_packages="libopenmpi3 openmpi-bin openmpi-common libopenmpi-dev libhwloc15 libevent-2.1-7 libevent-core-2.1-7
  libevent-pthreads-2.1-7 libpmix2 libfabric1 libucx0 libibverbs1 librdmacm1 libnl-3-200 libnl-route-3-200 libpsm2-2
  libpsm-infinipath1 libnuma1 libmunge2 libxnvctrl0"
if [ "${1:-}" = "--prepare" ]; then
  set -e
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
start=$(date +%s)
deadline=$((start + ${SG_GPU_CHECK_BUDGET:-540}))
logs=build-gpu/logs
rm -rf "$logs" && mkdir -p "$logs"
results=$logs/steps.txt
: > "$results"
status=0

pack() {  # the logs travel back even if the lease ends mid-check
  [ -n "${OUT:-}" ] && tar czf "$OUT/gpu_check_logs.tgz" -C build-gpu logs 2>/dev/null
  return 0
}
# step NAME SECONDS COMMAND...: runs COMMAND with its output in $logs/NAME.log,
# bounded by SECONDS and by what is left of the budget; records the outcome.
step() {
  local name=$1 limit=$2
  shift 2
  if [ -n "${SG_GPU_CHECK_STEPS:-}" ] && [ "$name" != configure ] && [ "$name" != build ] &&
    ! [[ $name =~ $SG_GPU_CHECK_STEPS ]]; then
    echo "$name: not selected (SG_GPU_CHECK_STEPS)" >> "$results"
    return 0
  fi
  local left=$((deadline - $(date +%s) - 5))
  if [ "$left" -lt 10 ]; then
    echo "$name: skipped (the check's time budget is spent)" | tee -a "$results"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0 rc
  t0=$(date +%s)
  timeout "$limit" "$@" > "$logs/$name.log" 2>&1
  rc=$?
  local outcome=ok
  [ $rc -eq 124 ] && outcome="timed out after ${limit} s"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && outcome="failed (exit $rc)"
  [ $rc -ne 0 ] && [ -z "${SG_STEP_OPTIONAL:-}" ] && status=1  # optional: a larger batch may not fit
  echo "$name: $outcome in $(($(date +%s) - t0)) s" | tee -a "$results"
  pack
}

# ---- what the machine has (to read when the build fails) ----------------------
{
  nvcc --version | tail -2; cmake --version | head -1; g++ --version | head -1
  ls /usr/local/cuda/lib64 2>/dev/null | grep -E '^lib(cublas|nccl|cudnn)' | tr '\n' ' '; echo
  python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' 2>&1 | tail -1
} > "$logs/machine.log" 2>&1

unpack_deb() {  # DEB DIR: dpkg -x, or by hand where the machine has no dpkg
  if command -v dpkg >/dev/null; then dpkg -x "$1" "$2"; return; fi
  local member
  member=$(ar t "$1" | grep '^data.tar')
  mkdir -p "$2" && ar p "$1" "$member" > "/tmp/$member" && tar xf "/tmp/$member" -C "$2"
}
prefix_args=()
if ls "$deps"/*.deb >/dev/null 2>&1; then
  prefix=/tmp/sg-deps
  for deb in "$deps"/*.deb; do unpack_deb "$deb" "$prefix"; done
  prefix_args=(-DCMAKE_PREFIX_PATH="$prefix/usr")
fi
# NCCL: the toolkit's, else the one PyTorch's wheels bring (nvidia-nccl-*).
nccl_args=()
if ! ls /usr/local/cuda/lib64/libnccl.so* >/dev/null 2>&1; then
  nccl_root=$(python3 -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null || true)
  nccl_lib=$( [ -n "$nccl_root" ] && find "$nccl_root" -name 'libnccl.so*' | sort | head -1)
  nccl_h=$( [ -n "$nccl_root" ] && find "$nccl_root" -name nccl.h | head -1)
  if [ -n "$nccl_lib" ] && [ -n "$nccl_h" ]; then
    nccl_args=(-DNCCL_LIBRARY="$nccl_lib" -DNCCL_INCLUDE_DIR="$(dirname "$nccl_h")")
    echo "NCCL from $nccl_root" >> "$logs/machine.log"
  fi
fi
mpi_args=()
mpirun_cmd=$(command -v mpirun || true)
if ls "$deps"/mpi/*.deb >/dev/null 2>&1; then  # the carried OpenMPI, whatever else the machine has
  mpi_prefix=/tmp/sg-mpi
  for deb in "$deps"/mpi/*.deb; do unpack_deb "$deb" "$mpi_prefix"; done
  export OPAL_PREFIX=$mpi_prefix/usr
  export LD_LIBRARY_PATH=$mpi_prefix/usr/lib/x86_64-linux-gnu:$mpi_prefix/usr/lib/x86_64-linux-gnu/openmpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  mpirun_cmd=$mpi_prefix/usr/bin/mpirun.openmpi
  mpi_args=(-DMPI_CXX_COMPILER="$mpi_prefix/usr/bin/mpicxx.openmpi" -DMPIEXEC_EXECUTABLE="$mpirun_cmd")
fi
# Shared memory between ranks on one machine, with no single-copy kernel
# mechanism (which VMs and containers may refuse) and no network transports.
export PYTHONUNBUFFERED=1  # a step cut short keeps what it printed
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none

step configure 120 cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DSG_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${SG_CUDA_ARCH:-native}" \
  "${prefix_args[@]}" "${nccl_args[@]}" "${mpi_args[@]}"
step build 300 cmake --build build-gpu -j"$(nproc)"
if ! [ -x build-gpu/bin/test_cuda ]; then
  cat "$logs/machine.log"; tail -20 "$logs/configure.log"; grep -E "error" -A3 "$logs/build.log" | head -60
  exit 1
fi
bin=build-gpu/bin
have_mpi=0
[ -n "$mpirun_cmd" ] && grep -q "SG_MPI=ON" "$logs/configure.log" && have_mpi=1
mpirun_np=("$mpirun_cmd" --oversubscribe --allow-run-as-root -np)

# ---- correctness, most important first ------------------------------------------
export SG_POISON=1  # the tests get NaN-filled memory, new or reused (tensor/allocator.h), as in CI
step test_cuda 150 $bin/test_cuda
step test_cuda_gpt 120 $bin/test_cuda_gpt
unset SG_POISON  # the training runs and timings run as a user's would
# train_gpt on the GPU beside the CPU: 20 steps of a small model, the same
# seed and windows; f32 should agree closely, bf16 and fp16 should follow.
small=(--layers 2 --heads 2 --embd 64 --ctx 64 --batch 8 --steps 20 --warmup 2 --eval-every 0 --sample 0)
for run in "cpu f32" "cuda f32" "cuda bf16" "cuda fp16"; do
  set -- $run
  step "train_$1_$2" 60 $bin/train_gpt "${small[@]}" --out "$logs/run_$1_$2" --device "$1" --dtype "$2" \
    --metrics "$logs/train_$1_$2.jsonl"
done
# The kernel tests under compute-sanitizer (correctness, so before the timings): out-of-bounds and
# misaligned accesses (memcheck) everywhere, and shared-memory races (racecheck) in the tensor-core
# attention, whose tiles every warp reads.
if command -v compute-sanitizer >/dev/null; then
  step sanitizer_memcheck 210 compute-sanitizer --tool memcheck --error-exitcode 9 $bin/test_cuda \
    --gtest_filter='CudaKernels.*:CudaTensor.Planned*'
  step sanitizer_racecheck 120 compute-sanitizer --tool racecheck --error-exitcode 9 $bin/test_cuda \
    --gtest_filter='CudaKernels.TensorCoreAttentionMatchesCpu'
  # The fused dQ's shared dS^T tile and its barrier (SG_FLASH_FUSED_DQ, off by default: optional).
  SG_STEP_OPTIONAL=1 step sanitizer_racecheck_fused_dq 120 compute-sanitizer --tool racecheck --error-exitcode 9 \
    $bin/test_cuda --gtest_filter='CudaKernels.TensorCoreAttentionWithFusedDqMatchesCpu'
fi
# GPT-2 124M, bf16, T 1024, beside PyTorch (bench/gpt_gpu.py).
step bench_gpt 240 python3 bench/gpt_gpu.py --bin $bin/bench_gpt --profile-torch
# Then every switch the kernels read at each call, in one process (bench_gpt --variants,
# bench/switch_variants.h): each variant's loss and gradients against the defaults' from one batch at
# the same weights (one that differs by more than --tolerance is not timed), then the variants take
# turns for three rounds, so they share the GPU's clocks. First the defaults a second time (the noise
# between variants) and the defaults' fast paths switched off one at a time: the loss's gradient in
# its forward, LayerNorm's backward in one kernel, attention's fused kernels (its GEMM form; the kernels
# built for fewer warps an SM; on CUDA cores).
defaults_off="again: two_pass_loss:SG_FUSED_CROSS_ENTROPY=0 two_kernel_layernorm:SG_LAYERNORM_FUSED_BACKWARD=0
  gemm_attention:SG_ATTENTION=gemm forward_fewer_warps:SG_FLASH_FORWARD_MORE_WARPS=0
  backward_fewer_warps:SG_FLASH_BACKWARD_MORE_WARPS=0 fused_cuda_cores:SG_ATTENTION=fused,SG_FLASH_TENSOR_CORES=0"
# Then what is off by default and not yet timed on a GPU (test_cuda checked each above): dQ inside the
# dK/dV kernel, the GEMMs' GELU and bias-gradient epilogues, cuBLASLt's first 8 algorithms timed for
# each shape (not bit-for-bit repeatable), LayerNorm's backward with the next row copied in ahead.
opt_ins="fused_dq:SG_FLASH_FUSED_DQ=1 fused_dq_fewer_warps:SG_FLASH_FUSED_DQ=1,SG_FLASH_BACKWARD_MORE_WARPS=0
  gelu_epilogue:SG_GEMM_GELU_EPILOGUE=1 bias_grad_epilogue:SG_GEMM_BIAS_GRAD_EPILOGUE=1
  both_epilogues:SG_GEMM_GELU_EPILOGUE=1,SG_GEMM_BIAS_GRAD_EPILOGUE=1 gemm_autotune:SG_GEMM_AUTOTUNE=8
  both_epilogues_autotune:SG_GEMM_GELU_EPILOGUE=1,SG_GEMM_BIAS_GRAD_EPILOGUE=1,SG_GEMM_AUTOTUNE=8
  pipelined_layernorm:SG_LAYERNORM_PIPELINED_BACKWARD=1"
# Last, attention on Hopper's wgmma, never run on a GPU before, with its products overlapping the
# exponentials and without, then every opt-in at once: last, because a kernel that faults leaves the
# process's CUDA context unusable, and every variant after it would fail too.
every="SG_FLASH_WGMMA=1,SG_FLASH_FUSED_DQ=1,SG_GEMM_GELU_EPILOGUE=1,SG_GEMM_BIAS_GRAD_EPILOGUE=1"
every="$every,SG_GEMM_AUTOTUNE=8,SG_LAYERNORM_PIPELINED_BACKWARD=1"
wgmma_ins="wgmma:SG_FLASH_WGMMA=1 wgmma_no_overlap:SG_FLASH_WGMMA=1,SG_FLASH_WGMMA_OVERLAP=0 every_opt_in:$every"
step bench_gpt_variants 180 $bin/bench_gpt --device cuda --dtype bf16 --rounds 3 --steps 5 \
  --variants "$defaults_off $opt_ins $wgmma_ins"
command -v ncu >/dev/null &&
  step kernel_profile 150 python3 bench/kernel_profile.py --top 40 --from-marker -- \
    $bin/bench_gpt --warmup 2 --steps 1 --profile-last 1
export SG_POISON=1
[ -x $bin/test_nccl ] && step test_nccl 90 $bin/test_nccl
step test_checkpoint 90 $bin/test_checkpoint --gtest_filter='*OnCuda*'
step test_zero 120 $bin/test_zero --gtest_filter='*Cuda*'
if [ $have_mpi = 1 ]; then
  for ranks in 2 4; do step "test_zero_np$ranks" 150 "${mpirun_np[@]}" $ranks $bin/test_zero --gtest_filter='*Cuda*'; done
  step test_dist_np2 60 "${mpirun_np[@]}" 2 $bin/test_dist --gtest_filter='StagedBackend.*:*Cuda*'
else
  echo "test_zero_np2: skipped (no mpirun here; the CUDA ZeRO equivalence ran as a world of one only)" | tee -a "$results"
fi
unset SG_POISON
step bench_attention 90 $bin/bench_attention --device cuda --dtype bf16
SG_FLASH_FUSED_DQ=1 step bench_attention_fused_dq 60 $bin/bench_attention --device cuda --dtype bf16
# LayerNorm's kernels alone against the bytes they move, at micro-batch 8 and 32: the forward, the three
# backwards (two kernels, fused, pipelined) and PyTorch's eager and compiled LayerNorm (bench/layernorm_gpu.py;
# torch.compile takes tens of seconds on the first call).
SG_STEP_OPTIONAL=1 step bench_layernorm 90 python3 bench/layernorm_gpu.py --bin $bin/bench_layernorm
SG_STEP_OPTIONAL=1 step bench_layernorm_b32 90 python3 bench/layernorm_gpu.py --bin $bin/bench_layernorm --rows 32768 \
  --calls 20
# The tensor-core attention kernels up close, in their default shapes (bench_attention --repeat 1
# launches the forward 3 times, then dK/dV and dQ twice): throughput against the card's peaks,
# occupancy, where the warps wait (warp state, scheduler), the instruction mix and the source lines
# that stall most (the build keeps -lineinfo).
command -v ncu >/dev/null &&
  SG_STEP_OPTIONAL=1 step attention_profile 120 ncu --kernel-name regex:'flash_.*_tc_kernel' \
    --launch-skip 2 --launch-count 3 --section SpeedOfLight --section Occupancy --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section LaunchStats \
    --section InstructionStats --section SourceCounters $bin/bench_attention --device cuda --dtype bf16 --repeat 1
# The same for the wgmma kernels (SG_FLASH_WGMMA=1).
command -v ncu >/dev/null &&
  SG_FLASH_WGMMA=1 SG_STEP_OPTIONAL=1 step attention_profile_wgmma 120 ncu --kernel-name regex:'flash_.*_wgmma_.*kernel' \
    --launch-skip 2 --launch-count 3 --section SpeedOfLight --section Occupancy --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section LaunchStats \
    --section InstructionStats --section SourceCounters $bin/bench_attention --device cuda --dtype bf16 --repeat 1
step bench_gemm 90 $bin/bench_gemm --repeat 10 --candidates 8
step bench_collectives 60 $bin/bench_collectives --device cuda --iters 10
for batch in 16 64; do SG_STEP_OPTIONAL=1 step "bench_gpt_b$batch" 60 $bin/bench_gpt --device cuda --dtype bf16 --batch $batch; done
# The issue's micro-batch "as large as fits": 32 for both, side by side (PyTorch's compile takes a minute).
SG_STEP_OPTIONAL=1 step bench_gpt_b32 180 python3 bench/gpt_gpu.py --bin $bin/bench_gpt --batch 32 --profile-torch
# The LM head and loss an eighth of the micro-batch at a time (Gpt::loss_chunk_rows): its step time and
# peaks beside bench_gpt_b32's (not yet run on a GPU).
SG_STEP_OPTIONAL=1 step bench_gpt_b32_loss_chunk 60 $bin/bench_gpt --device cuda --dtype bf16 --batch 32 \
  --loss-chunk 4096
# The opt-ins at micro-batch 32 too, where PyTorch compiled was still ahead in runs 9-11.
SG_STEP_OPTIONAL=1 step bench_gpt_b32_variants 180 $bin/bench_gpt --device cuda --dtype bf16 --batch 32 --rounds 3 \
  --steps 3 --variants "again: $opt_ins $wgmma_ins"
# Where a step's time goes at micro-batch 32, where PyTorch compiled was still ahead in runs 9-11.
command -v ncu >/dev/null &&
  SG_STEP_OPTIONAL=1 step kernel_profile_b32 120 python3 bench/kernel_profile.py --top 30 --from-marker -- \
    $bin/bench_gpt --warmup 2 --steps 1 --profile-last 1 --batch 32
[ -x $bin/test_nccl ] && SG_NCCL_WAIT=device step test_nccl_device_wait 60 $bin/test_nccl
# The whole suites last: mostly CPU tests, here built by this machine's compiler.
export SG_POISON=1
for suite in test_kernels test_tensor test_autograd test_nn test_dist test_zero; do
  step "${suite}_all" 120 $bin/$suite
done

# ---- the table ---------------------------------------------------------------------
summary() {
  echo "## Machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  cat "$logs/machine.log"
  echo "checked in $(($(date +%s) - start)) s"
  echo
  echo "## Steps"
  sed 's/^/- /' "$results"
  echo
  echo "## CUDA tests (each CUDA kernel against its CPU twin; OnCuda: world of one unless ranks are named)"
  echo "| test | result |"
  echo "|---|---|"
  for log in "$logs"/test_cuda.log "$logs"/test_cuda_gpt.log "$logs"/test_nccl.log "$logs"/test_checkpoint.log \
    "$logs"/test_zero.log "$logs"/test_zero_np*.log "$logs"/test_dist_np2.log; do
    [ -f "$log" ] || continue
    local where=""
    case $log in *_np*) where=" ($(basename "$log" .log | sed 's/.*_np//') ranks on one GPU)" ;; esac
    sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^\[ +(FAILED|SKIPPED) +\] [A-Za-z]' |
      sed -E "s/^\[ +([A-Z]+) +\] ([^ ]+).*/| \2$where | \1 |/" | sort -u
    echo "| $(basename "$log" .log): all | $(sed 's/\x1b\[[0-9;]*m//g' "$log" |
      grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ tests?' | tr '\n' ' ') |"
  done
  echo
  echo "## train_gpt, 20 steps of a small model: loss at steps 1, 5, 10, 20"
  echo "| run | 1 | 5 | 10 | 20 |"
  echo "|---|---|---|---|---|"
  for run in cpu_f32 cuda_f32 cuda_bf16 cuda_fp16; do
    [ -s "$logs/train_$run.jsonl" ] || { echo "| $run | failed | | | |"; continue; }
    echo "| $run | $(sed -n '1p;5p;10p;20p' "$logs/train_$run.jsonl" | sed -E 's/.*"loss": ([0-9.e+-]+).*/\1/' |
      tr '\n' '|' | sed 's/|$//; s/|/ | /g') |"
  done
  echo
  echo "## GPT-2 124M training, bf16, T 1024, batch 8 (bench/gpt_gpu.py)"
  cat "$logs/bench_gpt.log" 2>/dev/null
  [ -f "$logs/bench_gpt_b32.log" ] && echo "micro-batch 32:" && grep -E '^\||^PyTorch compiled' "$logs/bench_gpt_b32.log"
  for log in bench_gpt_variants bench_gpt_b32_variants; do
    [ -f "$logs/$log.log" ] || continue
    echo "$log (bench_gpt --variants; ms/step the median over its rounds):"
    grep -E '^\|' "$logs/$log.log" || tail -3 "$logs/$log.log"
  done
  for log in bench_gpt_b16 bench_gpt_b64; do
    [ -f "$logs/$log.log" ] && echo "$log: $(tail -1 "$logs/$log.log")"
  done
  for profile in attention_profile attention_profile_wgmma; do
    [ -f "$logs/$profile.log" ] || continue
    echo "$profile (the whole report is in the logs):"
    grep -E -e "flash_.*_(tc|wgmma|wgmma_overlapped)_kernel|Duration|Compute \(SM\) Throughput|Achieved Occupancy" \
      -e "Registers Per" \
      -e "Warp Cycles Per Issued" "$logs/$profile.log" | grep -v "==PROF==" | sed 's/^ */  /; s/(T1 \*.*TcDims) //'
  done
  for log in sanitizer_memcheck sanitizer_racecheck sanitizer_racecheck_fused_dq; do
    [ -f "$logs/$log.log" ] && echo "$log: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$logs/$log.log" | tail -1)"
  done
  for log in kernel_profile kernel_profile_b32 bench_attention bench_attention_fused_dq bench_layernorm \
    bench_layernorm_b32 bench_gemm bench_collectives; do
    [ -f "$logs/$log.log" ] || continue
    echo
    echo "## $log"
    cat "$logs/$log.log"
  done
}
summary > "$logs/gpu_check.md" 2>&1
[ -n "${OUT:-}" ] && cp "$logs/gpu_check.md" "$OUT/gpu_check.md"
pack
cat "$logs/gpu_check.md"
exit $status
