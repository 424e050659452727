#!/usr/bin/python3
"""Writes tests/fixtures/gpt_tiny.bin: PyTorch's loss and gradients for a tiny GPT-2.

The model below is GPT-2 as shardgrad builds it (nn/gpt.h): learned position
embeddings, pre-LayerNorm blocks, tanh-GELU, a final LayerNorm and an LM head
tied to the token embedding; nn.Linear weights are (out, in). Its parameters
are drawn with a large spread (so every path matters), a batch of tokens is
run through it in f32, and the file records the weights, the tokens, the loss
and every parameter's gradient. tests/nn/test_gpt_golden.cpp loads the weights
into shardgrad's Gpt and must reproduce the loss and gradients.

Run with Debian's python3-torch (apt-get install python3-torch):
    /usr/bin/python3 tools/make_gpt_fixture.py

File format (little endian), one record per tensor:
    u32 name length, name bytes, u32 ndim, i64 dims[ndim], f32 values[prod(dims)]
preceded by the magic b"SGFX" and u32 version 1.
"""
import math
import struct
import sys

import torch
import torch.nn.functional as F

V, T, L, NH, C, B = 11, 8, 2, 2, 8, 3


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = torch.nn.LayerNorm(C)
        self.attn = torch.nn.Module()
        self.attn.c_attn = torch.nn.Linear(C, 3 * C)
        self.attn.c_proj = torch.nn.Linear(C, C)
        self.ln_2 = torch.nn.LayerNorm(C)
        self.mlp = torch.nn.Module()
        self.mlp.c_fc = torch.nn.Linear(C, 4 * C)
        self.mlp.c_proj = torch.nn.Linear(4 * C, C)

    def attention(self, x):
        b, t, _ = x.shape
        q, k, v = self.attn.c_attn(x).split(C, dim=2)
        heads = lambda z: z.view(b, t, NH, C // NH).transpose(1, 2)  # (B, NH, T, HS)
        q, k, v = heads(q), heads(k), heads(v)
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // NH)
        mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
        scores = scores.masked_fill(~mask, float("-inf"))
        y = F.softmax(scores, dim=-1) @ v
        return self.attn.c_proj(y.transpose(1, 2).contiguous().view(b, t, C))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))


class Gpt(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = torch.nn.Embedding(V, C)
        self.wpe = torch.nn.Embedding(T, C)
        self.h = torch.nn.ModuleList([Block() for _ in range(L)])
        self.ln_f = torch.nn.LayerNorm(C)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # the tied LM head


def main():
    torch.manual_seed(1234)
    model = Gpt()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight")
                                                  or name == "ln_f.weight" else 0.0))
    x = torch.randint(0, V, (B, T))
    y = torch.randint(0, V, (B, T))
    y[1, 3] = -1  # one ignored target
    loss = F.cross_entropy(model(x).view(-1, V), y.view(-1), ignore_index=-1)
    loss.backward()

    records = [("input.x", x.float()), ("input.y", y.float()), ("loss", loss.detach().reshape(1))]
    for name, p in model.named_parameters():
        records.append(("param:" + name, p.detach()))
        records.append(("grad:" + name, p.grad))
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/gpt_tiny.bin"
    with open(out, "wb") as f:
        f.write(b"SGFX" + struct.pack("<I", 1))
        for name, tensor in records:
            data = tensor.contiguous().float().numpy().tobytes()
            f.write(struct.pack("<I", len(name)) + name.encode())
            f.write(struct.pack("<I", tensor.dim()) + struct.pack("<%dq" % tensor.dim(), *tensor.shape))
            f.write(data)
    print("wrote %s: loss %.6f, %d records (torch %s)" % (out, loss.item(), len(records), torch.__version__))


if __name__ == "__main__":
    main()
