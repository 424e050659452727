#!/usr/bin/env python3
"""GPT-2 124M training on one GPU: shardgrad beside PyTorch, in one run.

shardgrad's build/bin/bench_gpt (bf16 parameters, f32 masters, AdamW) runs in
a child process; the same model in PyTorch (bf16 autocast, f32 weights,
AdamW) runs here eagerly and under torch.compile, with its fused flash
attention (scaled_dot_product_attention) and fused AdamW, when PyTorch with CUDA is
installed (otherwise shardgrad alone). Same batch, context and steps;
warm-up excluded; median step. Prints tokens/s, MFU (6 N + 6 L C T FLOPs per
token against 989 TFLOP/s, an H100's dense bf16) and the ratios. With
--profile-torch, one more compiled step runs under torch.profiler and its
kernel time is printed by kind (GEMMs, attention, fused elementwise,
optimizer, ...), to set beside bench/kernel_profile.py's of ours: where
PyTorch's step is faster.

    python3 bench/gpt_gpu.py [--bin build/bin/bench_gpt] [--batch 8] [--ctx 1024] [--steps 10] [--profile-torch]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
L, NH, C, V, PEAK = 12, 12, 768, 50304, 989e12


# Kernel names to kinds, first match wins (PyTorch 2.x on an H100: cuBLAS's
# nvjet/sm90 GEMMs, FlashAttention's flash_fwd/bwd, whose template arguments
# name cutlass types, so attention is looked for first, Inductor's triton_*).
KINDS = [("attention", ("flash", "fmha", "attention", "sdpa")),
         ("GEMM", ("nvjet", "gemm", "cutlass", "sm90_xmma", "sm80_xmma")),
         ("optimizer", ("adam", "multi_tensor")),
         ("fused elementwise (Triton)", ("triton",)),
         ("norms, reductions", ("norm", "reduce", "softmax")),
         ("loss", ("cross_entropy", "nll", "log_softmax"))]


def kind_of(name):
    lowered = name.lower()
    for kind, marks in KINDS:
        if any(mark in lowered for mark in marks):
            return kind
    return "other"


def kernel_profile(step_fn):
    """One step under torch.profiler: lines of its GPU kernels' time by kind, then the longest."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step_fn()
        torch.cuda.synchronize()
    kernels = {}
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        kernels.setdefault(event.name, [0, 0.0])
        kernels[event.name][0] += 1
        kernels[event.name][1] += event.time_range.elapsed_us() / 1000.0
    total = sum(ms for _, ms in kernels.values())
    by_kind = {}
    for name, (count, ms) in kernels.items():
        entry = by_kind.setdefault(kind_of(name), [0, 0.0])
        entry[0] += count
        entry[1] += ms
    lines = [f"PyTorch compiled, one step's kernels (torch.profiler): {total:.2f} ms in "
             f"{sum(c for c, _ in kernels.values())} launches", "| kind | launches | ms |", "|---|---|---|"]
    for kind, (count, ms) in sorted(by_kind.items(), key=lambda item: -item[1][1]):
        lines.append(f"| {kind} | {count} | {ms:.2f} |")
    lines.append("| longest kernels | launches | ms |")
    for name, (count, ms) in sorted(kernels.items(), key=lambda item: -item[1][1])[:15]:
        lines.append(f"| {name[:90]} | {count} | {ms:.2f} |")
    return lines


def torch_run(batch, ctx, warmup, steps, compiled, profile_kernels=False):
    import torch
    from train_cpu import adamw_for, make_gpt

    # PyTorch at its fastest: flash attention (SDPA) and the fused AdamW.
    model = make_gpt(L, NH, C, ctx, V, sdpa=True).cuda()
    opt = adamw_for(model, fused=True)
    step_fn = torch.compile(model) if compiled else model

    def batch_of_tokens():
        return torch.randint(0, V, (batch, ctx), device="cuda"), torch.randint(0, V, (batch, ctx), device="cuda")

    def one_step(x, y):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = []
    for step in range(warmup + steps):
        if step == warmup:
            torch.cuda.reset_peak_memory_stats()  # the timed steps' peak, as bench_gpt's peak_gib
        x, y = batch_of_tokens()
        torch.cuda.synchronize()
        start = time.perf_counter()
        one_step(x, y)
        torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    profile_lines = []
    if profile_kernels:
        x, y = batch_of_tokens()
        try:
            profile_lines = kernel_profile(lambda: one_step(x, y))
        except Exception as error:  # the timings above stand without it
            profile_lines = [f"(torch.profiler failed: {type(error).__name__}: {str(error)[:200]})"]
    n = sum(p.numel() for p in model.parameters())
    seconds = statistics.median(times)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30
    return {"profile": profile_lines, "peak_gib": peak_gib, "ms_per_step": 1000 * seconds, "tokens_per_s": batch * ctx / seconds, "mfu": (6 * n + 6 * L * C * ctx) * batch * ctx / seconds / PEAK}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default="build/bin/bench_gpt")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--ctx", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--profile-torch", action="store_true",
                        help="profile one more PyTorch compiled step and print its kernel time by kind")
    args = parser.parse_args()
    run = subprocess.run(
        [args.bin, "--device", "cuda", "--dtype", "bf16", "--batch", str(args.batch), "--ctx", str(args.ctx),
         "--warmup", str(args.warmup), "--steps", str(args.steps)],
        capture_output=True, text=True)
    # peak GiB: every byte the tensors held at once over the timed steps (model,
    # gradients, optimizer states, activations), not the allocators' free blocks.
    print(f"| framework | tokens/s | MFU | ms per step | peak GiB |")
    print(f"|---|---|---|---|---|")
    ours = None
    if run.returncode == 0:
        ours = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"| shardgrad (bf16) | {ours['tokens_per_s']:.0f} | {100 * ours['mfu']:.1f}% | {ours['ms_per_step']:.1f} "
              f"| {ours.get('peak_gib', float('nan')):.2f} |")
    else:  # PyTorch still runs, so the check brings back its numbers
        print(f"| shardgrad (bf16) | failed (exit {run.returncode}): {run.stderr.strip()[-300:]} | | | |")
    try:
        import torch
        assert torch.cuda.is_available()
    except (ImportError, AssertionError):
        print("(PyTorch with CUDA is not installed here: no side-by-side)")
        return 0 if ours else 1
    profile_lines = []
    for compiled in (False, True):
        name = "PyTorch compiled (bf16 autocast)" if compiled else "PyTorch eager (bf16 autocast)"
        try:
            theirs = torch_run(args.batch, args.ctx, args.warmup, args.steps, compiled,
                               profile_kernels=compiled and args.profile_torch)
        except Exception as error:  # torch.compile may be unavailable
            print(f"| {name} | failed: {type(error).__name__}: {str(error)[:200]} | | | |")
            continue
        ratio = f" shardgrad / this: {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x" if ours else ""
        print(f"| {name} | {theirs['tokens_per_s']:.0f} | {100 * theirs['mfu']:.1f}% | {theirs['ms_per_step']:.1f} "
              f"| {theirs['peak_gib']:.2f} |{ratio}")
        profile_lines += theirs["profile"]
    if ours and ours.get("activation_estimate_bytes") is not None:
        # tools/activation_memory.h's prediction, held to the byte on the CPU and in the CUDA emulator.
        measured, estimated = ours["activation_peak_bytes"], ours["activation_estimate_bytes"]
        print(f"\nshardgrad's activation peak: {measured / 2**30:.3f} GiB measured, {estimated / 2**30:.3f} GiB "
              f"estimated (tools/activation_memory.h, and bench_gpt's three other batches): "
              f"{measured - estimated:+d} bytes apart")
    if profile_lines:
        print()
        print("\n".join(profile_lines))
    return 0 if ours else 1


if __name__ == "__main__":
    sys.exit(main())
