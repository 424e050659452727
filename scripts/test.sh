#!/usr/bin/env bash
# The test command (README): installs missing dependencies, lints, builds and
# runs every test. Exits non-zero on any failure.
#
#   scripts/test.sh
#
# Three configurations are built:
#   build/      the full build: CUDA kernels too where nvcc exists
#               (their tests skip, saying so, on a machine without a GPU);
#   build-emu/  where the CUDA toolkit exists: the same CUDA code run on the
#               CPU by the SIMT emulator (tools/cuda_emu), with only the tests
#               that run CUDA code, twice (threads in each order, guard
#               pages after and before buffers, stream work in issue order
#               and then as late as allowed); then a check that every kernel
#               in kernels/cuda ran in one of them;
#   build-cpu/  SG_CUDA=OFF, proving the CPU-only build a machine without the
#               CUDA toolkit gets.
# Set SG_TEST_EMULATOR=0 or SG_TEST_CPU_ONLY=0 to skip the second or third
# (both are skipped when the first one is already CPU-only). Last, the
# safetensors and checkpoint-index parsers are fuzzed for SG_FUZZ_SECONDS
# (30) seconds (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-deps.sh
scripts/lint.sh

jobs=${SG_JOBS:-2}
# Host memory comes as NaN (tensor/allocator.h): a test that reads what its
# code never wrote fails, instead of reading the zeros of a fresh page. (The
# CUDA emulator does the same for device memory.)
export SG_POISON=${SG_POISON:-1}

build_and_test() {
  local dir=$1
  shift
  echo "== configure $dir ($*)"
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" > "$dir.configure.log" 2>&1 || {
    cat "$dir.configure.log"
    return 1
  }
  grep "shardgrad:" "$dir.configure.log" || true
  echo "== build $dir"
  cmake --build "$dir" -j"$jobs"
  echo "== test $dir"
  ctest --test-dir "$dir" --output-on-failure -j"$jobs"
}

mkdir -p build
build_and_test build

if [ "${SG_TEST_EMULATOR:-1}" = "1" ] && grep -q "SG_CUDA=ON" build.configure.log; then
  mkdir -p build-emu
  rm -f build-emu/kernel-launches.txt
  SG_EMU_LAUNCH_LOG="$PWD/build-emu/kernel-launches.txt" \
    build_and_test build-emu -DSG_CUDA=OFF -DSG_CUDA_EMULATOR=ON
  tools/cuda_emu/check_every_kernel_ran.sh build-emu/kernel-launches.txt
  echo "== test build-emu again: threads run highest first, guard pages before the buffers, stream work as late as" \
       "allowed, cp.async landing at its issue (docs/cuda-emulator.md)"
  SG_EMU_ORDER=reverse SG_EMU_GUARD=front SG_EMU_STREAMS=lazy SG_EMU_ASYNC_COPY=early \
    ctest --test-dir build-emu --output-on-failure -j"$jobs"
fi

if [ "${SG_TEST_CPU_ONLY:-1}" = "1" ] && grep -q "SG_CUDA=ON" build.configure.log; then
  mkdir -p build-cpu
  build_and_test build-cpu -DSG_CUDA=OFF
fi
echo "== fuzz the file parsers"
scripts/fuzz.sh "${SG_FUZZ_SECONDS:-30}"
echo "== all tests passed"
