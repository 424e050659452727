#!/usr/bin/env bash
# Installs what shardgrad needs to build and test, from Debian's packages.
# Idempotent: packages already present are left alone, and apt-get runs only
# when something is missing. The CUDA toolkit is not installed here: CUDA
# code is built only where nvcc already exists (/usr/local/cuda on our
# machines); everything else works without it.
set -euo pipefail

packages=(
  cmake make g++ ccache          # build
  libeigen3-dev                  # CPU GEMM and kernels
  libgtest-dev googletest        # tests
  libbenchmark-dev               # micro-benchmarks
  libopenmpi-dev openmpi-bin     # multi-process ranks (dist/)
  nlohmann-json3-dev             # configs and checkpoint indexes
  clang libclang-rt-dev          # libFuzzer for the file parsers (scripts/fuzz.sh)
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup-deps: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then
    sudo_cmd=(sudo)
  else
    echo "setup-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
