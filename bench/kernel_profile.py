#!/usr/bin/env python3
"""Where a GPU training step's time goes, kernel by kernel.

Runs a program under Nsight Compute (ncu), reading only each kernel's
duration (gpu__time_duration.sum, one replay pass, clocks and caches as the
card has them), and prints the kernels grouped by name: count, total
milliseconds and share of the step, largest first. scripts/gpu_check.sh runs
it on the last of three steps of bench_gpt (GPT-2 124M, bf16, batch 8, T
1024), which brackets that step with cudaProfilerStart/Stop:

    python3 bench/kernel_profile.py --from-marker -- build-gpu/bin/bench_gpt --warmup 2 --steps 1 --profile-last 1

The durations are the kernels' own: launch gaps and host work between them
are not counted, so the total is a floor of the step's time.
"""
import argparse
import collections
import csv
import io
import shutil
import subprocess
import sys


def short(name):
    """A kernel's name as ncu's --print-kernel-base function gives it, cut to fit a table."""
    return name.replace("void ", "").strip()[:90]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--from-marker", action="store_true",
                        help="record only between the program's cudaProfilerStart and cudaProfilerStop")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = [c for c in args.command if c != "--"]
    ncu = shutil.which("ncu")
    if not ncu or not command:
        print("kernel_profile: needs ncu on the PATH and a command after --", file=sys.stderr)
        return 2
    run = subprocess.run([ncu, "--csv", "--metrics", "gpu__time_duration.sum", "--clock-control", "none",
                          "--cache-control", "none", "--print-kernel-base", "function",
                          *(["--profile-from-start", "off"] if args.from_marker else []), *command],
                         capture_output=True, text=True)
    rows = [line for line in run.stdout.splitlines() if line.startswith('"')]
    if run.returncode != 0 or not rows:
        print(run.stdout[-2000:], run.stderr[-2000:], file=sys.stderr)
        return 1
    total = collections.Counter()
    count = collections.Counter()
    for row in csv.DictReader(io.StringIO("\n".join(rows))):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(row["Metric Value"].replace(",", ""))
        scale = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "ns": 1e-6, "us": 1e-3, "ms": 1.0}
        ms = value * scale.get(row.get("Metric Unit", "nsecond"), 1e-6)
        name = short(row["Kernel Name"])
        total[name] += ms
        count[name] += 1
    step = sum(total.values())
    print(f"{sum(count.values())} kernels, {step:.2f} ms of kernel time")
    print("| kernel | launches | ms | share |")
    print("|---|---|---|---|")
    for name, ms in total.most_common(args.top):
        print(f"| `{name}` | {count[name]} | {ms:.3f} | {100 * ms / step:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
