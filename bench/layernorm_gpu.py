#!/usr/bin/env python3
"""LayerNorm on one GPU: shardgrad's kernels beside PyTorch's, at a GPT step's shape.

Runs build/bin/bench_layernorm (the residual add fused with the forward; the
backward with the residual stream's gradient added, three ways) and prints
its table, then adds PyTorch's rows for the same work when PyTorch with CUDA
is installed: eager (x + y, then layer_norm; layer_norm's backward, then
the add of the residual's gradient: ATen's kernels) and under torch.compile
(Inductor's fused kernels). bf16, the same rows and width; each figure the
median over --repeat samples of --calls calls issued back to back and one
synchronization, per call, as bench_layernorm times its own. GB/s counts the
four (rows, C) arrays each way must move, whatever a framework moves besides.

    python3 bench/layernorm_gpu.py [--bin build/bin/bench_layernorm] [--rows 8192] [--embd 768]
"""
import argparse
import statistics
import subprocess
import sys
import time


def per_call_us(fn, calls, repeat):
    import torch
    samples = []
    for i in range(repeat + 1):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        if i > 0:  # the first is a warm-up (and compiles)
            samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def torch_rows(rows, C, calls, repeat):
    """(name, microseconds a call) for PyTorch's forward and backward, eager and compiled."""
    import torch
    aten = torch.ops.aten
    torch.manual_seed(0)
    make = lambda *shape, scale=1.0: (torch.randn(*shape, device="cuda") * scale).to(torch.bfloat16)
    x, y, dy, residual = make(rows, C), make(rows, C), make(rows, C), make(rows, C)
    w, b = make(C, scale=0.1), make(C, scale=0.1)
    s = x + y
    _, mean, rstd = aten.native_layer_norm(s, [C], w, b, 1e-5)

    def forward(x, y, w, b):
        s = x + y
        return s, torch.nn.functional.layer_norm(s, (C,), w, b, 1e-5)

    def backward(dy, s, mean, rstd, w, b, residual):
        dx, dw, db = aten.native_layer_norm_backward(dy, s, [C], mean, rstd, w, b, [True, True, True])
        return dx + residual, dw, db

    out = []
    for compiled in (False, True):
        how = "compiled" if compiled else "eager"
        try:
            f = torch.compile(forward) if compiled else forward
            g = torch.compile(backward) if compiled else backward
            out.append((f"PyTorch {how}: forward with the residual add",
                        per_call_us(lambda: f(x, y, w, b), calls, repeat)))
            out.append((f"PyTorch {how}: backward with the residual's gradient added",
                        per_call_us(lambda: g(dy, s, mean, rstd, w, b, residual), calls, repeat)))
        except Exception as error:  # torch.compile may be unavailable
            out.append((f"PyTorch {how}: failed: {type(error).__name__}: {str(error)[:200]}", None))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default="build/bin/bench_layernorm")
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--embd", type=int, default=768)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    run = subprocess.run([args.bin, "--device", "cuda", "--dtype", "bf16", "--rows", str(args.rows), "--embd",
                          str(args.embd), "--calls", str(args.calls), "--repeat", str(args.repeat)],
                         capture_output=True, text=True)
    if run.returncode == 0:
        print(run.stdout.rstrip())
    else:  # PyTorch still runs, so the check brings back its numbers
        print(f"bench_layernorm failed (exit {run.returncode}): {run.stderr.strip()[-300:]}")
        print("| kernel | us a call | GB/s |\n|---|---|---|")
    try:
        import torch
        assert torch.cuda.is_available()
    except (ImportError, AssertionError):
        print("(PyTorch with CUDA is not installed here: no side-by-side)")
        return run.returncode
    bytes_moved = 4 * args.rows * args.embd * 2
    for name, us in torch_rows(args.rows, args.embd, args.calls, args.repeat):
        print(f"| {name} | {us:.1f} | {bytes_moved / (us * 1e-6) / 1e9:.0f} |" if us else f"| {name} | | |")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
