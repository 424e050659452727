#!/usr/bin/env bash
# CPU training speed beside PyTorch (bench/train_cpu.py): installs Debian's
# python3-torch and OpenBLAS (so PyTorch's BLAS is OpenBLAS, not the
# reference BLAS) when missing, builds bench_train, and prints the table.
#
#   bench/train_cpu.sh [--threads 2] [--configs a,b,c] [--steps 5]
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for package in python3-torch libopenblas0-pthread; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "train_cpu: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q "${missing[@]}" > /dev/null ||
    echo "train_cpu: could not install ${missing[*]}; PyTorch's column may be missing or slow"
fi
mkdir -p build
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > build.configure.log 2>&1 || { cat build.configure.log; exit 1; }
cmake --build build -j"${SG_JOBS:-2}" --target bench_train > /dev/null
exec /usr/bin/python3 bench/train_cpu.py --bin build/bin/bench_train "$@"
