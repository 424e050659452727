#!/usr/bin/python3
"""CPU training speed, shardgrad beside PyTorch, in one run.

The same GPT-2 (learned positions, pre-LayerNorm, tanh GELU, tied head), the
same batch, the same threads, fresh random tokens every step, warm-up steps
excluded, the median of several full steps (forward, backward, clipping to
norm 1, AdamW). shardgrad runs as build/bin/bench_train in a child process;
PyTorch (Debian's python3-torch; install libopenblas0-pthread so its BLAS is
OpenBLAS) in this one. Prints tokens/s for each, their ratio, and the share
of the machine's SGEMM peak (the better of OpenBLAS through PyTorch and
shardgrad's own GEMM on 2048^3) that shardgrad's FLOPs reach
(6 N + 6 L C T per token).

    /usr/bin/python3 bench/train_cpu.py [--bin build/bin/bench_train] [--threads 2] [--configs a,b,c]
"""
import argparse
import json
import math
import statistics
import subprocess
import sys
import time

CONFIGS = {  # name: (layers, heads, channels, context, batch, vocab)
    "a": (4, 4, 256, 128, 8, 65),
    "b": (6, 6, 384, 256, 8, 65),
    "c": (12, 12, 768, 64, 4, 50304),
}


def shardgrad(binary, cfg, threads, warmup, steps):
    L, H, C, T, B, V = cfg
    args = [binary, "--layers", L, "--heads", H, "--embd", C, "--ctx", T, "--batch", B, "--vocab", V,
            "--threads", threads, "--warmup", warmup, "--steps", steps]
    out = subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def make_gpt(L, NH, C, T, V, sdpa=False):
    """GPT-2 as shardgrad builds it: learned positions, pre-LayerNorm, tanh GELU, tied head.

    sdpa: attention through F.scaled_dot_product_attention (PyTorch's fused
    flash kernels on a GPU) instead of the explicit masked softmax."""
    import torch
    import torch.nn.functional as F

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = torch.nn.LayerNorm(C), torch.nn.LayerNorm(C)
            self.c_attn, self.attn_proj = torch.nn.Linear(C, 3 * C), torch.nn.Linear(C, C)
            self.c_fc, self.mlp_proj = torch.nn.Linear(C, 4 * C), torch.nn.Linear(4 * C, C)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            heads = lambda z: z.view(b, t, NH, C // NH).transpose(1, 2)
            q, k, v = heads(q), heads(k), heads(v)
            if sdpa:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                s = (q @ k.transpose(-2, -1)) / math.sqrt(C // NH)
                s = s.masked_fill(~torch.tril(torch.ones(t, t, dtype=torch.bool, device=x.device)), float("-inf"))
                y = F.softmax(s, dim=-1) @ v
            y = y.transpose(1, 2).contiguous().view(b, t, C)
            x = x + self.attn_proj(y)
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class Gpt(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = torch.nn.Embedding(V, C), torch.nn.Embedding(T, C)
            self.h = torch.nn.ModuleList([Block() for _ in range(L)])
            self.ln_f = torch.nn.LayerNorm(C)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
            for block in self.h:
                x = block(x)
            logits = self.ln_f(x) @ self.wte.weight.T
            return F.cross_entropy(logits.view(-1, V).float(), targets.view(-1))

    return Gpt()


def adamw_for(model, fused=False):
    import torch

    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "wte" not in n and "wpe" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "wte" not in n and "wpe" not in n)]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}]
    # Only a GPU run asks for the fused kernel: Debian's PyTorch 1.13, the CPU peer, has no `fused` argument.
    extra = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, **extra)


def pytorch(cfg, threads, warmup, steps):
    import torch

    torch.set_num_threads(threads)
    L, NH, C, T, B, V = cfg
    model = make_gpt(L, NH, C, T, V)
    opt = adamw_for(model)
    times = []
    for step in range(warmup + steps):
        x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
        start = time.perf_counter()
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
        if step >= warmup:
            times.append(elapsed)
    ms = statistics.median(times) * 1000
    return {"ms_per_step": ms, "tokens_per_s": B * T / (ms / 1000)}


def torch_sgemm_gflops(threads):
    import torch

    torch.set_num_threads(threads)
    a, b = torch.ones(2048, 2048), torch.ones(2048, 2048)
    best = 1e30
    for _ in range(6):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * 2048 ** 3 / best / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default="build/bin/bench_train")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", default="a,b,c")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        print("train_cpu.py: PyTorch is not installed (apt-get install python3-torch); shardgrad alone:")
        torch = None
    ours = json.loads(subprocess.run([args.bin, "--peak", "1", "--threads", str(args.threads)], check=True,
                                     capture_output=True, text=True).stdout)["sgemm_gflops"]
    theirs = torch_sgemm_gflops(args.threads) if torch else 0.0
    peak = max(ours, theirs)
    print(f"SGEMM 2048^3, {args.threads} threads: shardgrad {ours:.0f} GFLOP/s, PyTorch {theirs:.0f} GFLOP/s; "
          f"peak {peak:.0f}")
    print(f"| config | shardgrad ms/step | tok/s | PyTorch ms/step | tok/s | ratio | shardgrad % of SGEMM peak |")
    print(f"|---|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        cfg = CONFIGS[name]
        ours_run = shardgrad(args.bin, cfg, args.threads, args.warmup, args.steps)
        if torch:
            theirs_run = pytorch(cfg, args.threads, args.warmup, args.steps)
            ratio = ours_run["tokens_per_s"] / theirs_run["tokens_per_s"]
            pt = f"{theirs_run['ms_per_step']:.0f} | {theirs_run['tokens_per_s']:.0f} | {ratio:.2f}x"
        else:
            pt = "- | - | -"
        share = 100 * ours_run["gflops"] / peak
        print(f"| ({name}) L{cfg[0]} C{cfg[2]} T{cfg[3]} B{cfg[4]} V{cfg[5]} | {ours_run['ms_per_step']:.0f} | "
              f"{ours_run['tokens_per_s']:.0f} | {pt} | {share:.0f}% |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
