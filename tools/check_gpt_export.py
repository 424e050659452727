#!/usr/bin/python3
"""Scores a train_gpt --export file on a text the way GPT-2 tools would read it.

An independent check of the export's layout and of gpt_eval: the file is
parsed here with struct and json (no shardgrad code), the model is GPT-2 as
Hugging Face's GPT2Model computes it (Conv1D: y = x @ W + b with W stored
(in, out); the LM head tied to wte), the text is cut into gpt_eval's windows
(window k holds tokens kT..kT+T), and the mean cross-entropy is printed in
gpt_eval's format: "loss=<nats per token> tokens=<count>".

    /usr/bin/python3 tools/check_gpt_export.py MODEL.safetensors TEXT T
"""
import json
import math
import struct
import sys

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    body = data[8 + n:]
    tensors = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        raw = bytearray(body[begin:end])
        tensors[name] = torch.frombuffer(raw, dtype=DTYPES[e["dtype"]]).reshape(e["shape"]).float()
    return tensors, metadata


def main():
    path, text_path, T = sys.argv[1], sys.argv[2], int(sys.argv[3])
    w, meta = read_safetensors(path)
    L, NH, C = int(meta["n_layer"]), int(meta["n_head"]), int(meta["n_embd"])
    assert meta["tokenizer"] == "char", "this check reads character-level models"
    vocab = meta["vocab"]
    ids = {c: i for i, c in enumerate(vocab)}
    with open(text_path, "rb") as f:
        text = f.read().decode("latin-1")
    tokens = torch.tensor([ids[c] for c in text])
    windows = (len(tokens) - 1) // T
    x = torch.stack([tokens[k * T:k * T + T] for k in range(windows)])
    y = torch.stack([tokens[k * T + 1:k * T + T + 1] for k in range(windows)])

    def conv1d(h, prefix):  # GPT-2's Conv1D: weight (in, out)
        return h @ w[prefix + ".weight"] + w[prefix + ".bias"]

    def layernorm(h, prefix):
        return F.layer_norm(h, (C,), w[prefix + ".weight"], w[prefix + ".bias"], 1e-5)

    with torch.no_grad():
        h = w["wte.weight"][x] + w["wpe.weight"][:T]
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        for l in range(L):
            p = "h.%d." % l
            q, k, v = conv1d(layernorm(h, p + "ln_1"), p + "attn.c_attn").split(C, dim=2)
            heads = lambda z: z.view(windows, T, NH, C // NH).transpose(1, 2)
            s = heads(q) @ heads(k).transpose(-2, -1) / math.sqrt(C // NH)
            a = F.softmax(s.masked_fill(~mask, float("-inf")), dim=-1) @ heads(v)
            h = h + conv1d(a.transpose(1, 2).reshape(windows, T, C), p + "attn.c_proj")
            m = F.gelu(conv1d(layernorm(h, p + "ln_2"), p + "mlp.c_fc"), approximate="tanh")
            h = h + conv1d(m, p + "mlp.c_proj")
        logits = layernorm(h, "ln_f") @ w["wte.weight"].T
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    print("loss=%.6f tokens=%d" % (loss.item(), windows * T))


if __name__ == "__main__":
    main()
